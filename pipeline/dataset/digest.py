"""The order-independent dataset digest (definition v2): a keyed 64-bit hash per record computed with numpy over a
whole batch, widened to 256 bits and summed mod 2**256 (a multiset hash).

Definition, so that anyone can recompute it (`record_hashes` is the reference):

1. A record's bytes are id (int64 LE) | label (int64 LE) | image (H*W uint8, row-major) | latent (float32 LE),
   zero-padded to a multiple of 8 bytes and read as little-endian uint64 words w_0 .. w_{m-1}.
2. Keys: k_i = uint64 LE of the first 8 bytes of sha256(b"vae-augment dataset_digest v2 key" + i as uint32 LE),
   each with its lowest bit set.
3. Per word x_i = (w_i + k_i) * M mod 2**64, then x_i ^= x_i >> 32 (M = 0x9E3779B97F4A7C15); h = sum_i x_i mod 2**64.
   Each step is a bijection of one word, so changing any one word (any flipped byte) always changes h.
4. h = fmix64(h + m) (MurmurHash3's finalizer), then the record's 256-bit value is the big-endian number whose
   64-bit limbs, most significant first, are fmix64(h ^ C_j) for j = 0..3, C_j = j * 0xD6E8FEB86659FD93.
5. dataset_digest = sum of the records' 256-bit values mod 2**256, as 64 lowercase hex digits.

It is not cryptographic: it finds damage (a flipped byte, a lost, duplicated or swapped record), not a forger.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np

from pipeline.dataset.batch import RecordBatch

_DIGEST_MOD = 1 << 256
_KEY_TAG = b"vae-augment dataset_digest v2 key"
_M = np.uint64(0x9E3779B97F4A7C15)
_LANES = np.arange(4, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)
_ROWS_PER_BLOCK = 256  # a block's words (~225 KB) stay in cache through the per-word passes


@functools.lru_cache(maxsize=8)
def _keys(words: int) -> np.ndarray:
    raw = b"".join(hashlib.sha256(_KEY_TAG + i.to_bytes(4, "little")).digest()[:8] for i in range(words))
    return np.frombuffer(raw, "<u8").astype(np.uint64) | np.uint64(1)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _record_rows(batch: RecordBatch, start: int, stop: int, out: np.ndarray) -> np.ndarray:
    """Records start..stop as zero-padded byte rows (step 1), written into `out` ((>= stop - start, 8m) uint8)."""
    n = stop - start
    image = batch.images[start:stop].reshape(n, -1)
    latent = batch.latents[start:stop].astype("<f4", copy=False).reshape(n, -1).view(np.uint8)
    rows = out[:n]
    rows[:, 0:8] = batch.ids[start:stop].astype("<i8", copy=False).view(np.uint8).reshape(n, 8)
    rows[:, 8:16] = batch.labels[start:stop].astype("<i8", copy=False).view(np.uint8).reshape(n, 8)
    a = 16 + image.shape[1]
    rows[:, 16:a] = image
    rows[:, a : a + latent.shape[1]] = latent
    return rows


def record_hashes(batch: RecordBatch) -> np.ndarray:
    """(n,) uint64: steps 1-4's h of every record, over the whole batch at once."""
    n = len(batch)
    width = 16 + batch.height * batch.width + 4 * batch.latent_dim
    m = -(-width // 8)
    keys = _keys(m)[:, None]
    buf = np.zeros((min(n, _ROWS_PER_BLOCK), 8 * m), np.uint8)  # the padding stays zero
    out = np.empty(n, np.uint64)
    for start in range(0, n, _ROWS_PER_BLOCK):
        stop = min(start + _ROWS_PER_BLOCK, n)
        # Word-major (m, rows) so each pass and the sum run over contiguous rows of records.
        words = _record_rows(batch, start, stop, buf).view("<u8").T
        x = words + keys
        x *= _M
        x ^= x >> np.uint64(32)
        out[start:stop] = x.sum(axis=0, dtype=np.uint64)
    return _fmix64(out + np.uint64(m))


def widen(h: np.ndarray) -> np.ndarray:
    """(n, 4) uint64 limbs (most significant first) of each record's 256-bit value."""
    return _fmix64(h[:, None] ^ _LANES[None, :])


def sum_limbs(limbs: np.ndarray) -> int:
    """Sum of (n, 4) 64-bit limbs, most significant first, as 256-bit numbers mod 2**256."""
    if len(limbs) == 0:
        return 0
    # 32-bit halves (little-endian: low half first) summed column-wise in uint64, exact for < 2**32 rows.
    sums = np.ascontiguousarray(limbs, "<u8").view("<u4").sum(axis=0, dtype=np.uint64).tolist()
    total = sum((int(sums[2 * j]) + (int(sums[2 * j + 1]) << 32)) << (64 * (3 - j)) for j in range(4))
    return total % _DIGEST_MOD


def batch_digest(batch: RecordBatch) -> int:
    """Multiset hash of a batch: order-independent, sensitive to duplicated or missing records."""
    if len(batch) == 0:
        return 0
    return sum_limbs(widen(record_hashes(batch)))


def combine_digests(a: int, b: int) -> int:
    return (a + b) % _DIGEST_MOD


def digest_hex(digest: int) -> str:
    return f"{digest % _DIGEST_MOD:064x}"


# ----------------------------------------------------------------------------------------- shard checksums

def crc32c_hex(crc: int) -> str:
    """A shard's crc32c as the manifest writes it: 8 lowercase hex digits of the big-endian value (GCS's
    `crc32c` object metadata is the base64 of the same 4 bytes)."""
    return f"{crc & 0xFFFFFFFF:08x}"


class Checksums:
    """Running shard checksums over bytes fed in order: crc32c and/or sha256, those in `names`."""

    def __init__(self, names=("crc32c",)):
        import google_crc32c

        self._extend = google_crc32c.extend
        self._crc = 0 if "crc32c" in names else None
        self._sha = hashlib.sha256() if "sha256" in names else None

    def update(self, data):
        """Feed `data` (bytes or any buffer); returns it as bytes or a uint8 numpy view of it (no copy), the form
        google_crc32c takes (it refuses memoryviews and pyarrow buffers), for the caller to write on."""
        view = data if isinstance(data, bytes) else np.frombuffer(data, np.uint8)
        if self._crc is not None:
            self._crc = self._extend(self._crc, view)
        if self._sha is not None:
            self._sha.update(view)
        return view

    def hexdigests(self) -> dict[str, str]:
        out = {} if self._crc is None else {"crc32c": crc32c_hex(self._crc)}
        if self._sha is not None:
            out["sha256"] = self._sha.hexdigest()
        return out


def stream_checksums(fileobj, names=("crc32c",), chunk: int = 8 << 20) -> dict[str, str]:
    """{"crc32c": ..., "sha256": ...} (those in `names`) of everything left in a binary file object."""
    sums = Checksums(names)
    while data := fileobj.read(chunk):
        sums.update(data)
    return sums.hexdigests()


def bytes_checksums(data: bytes, names=("crc32c",)) -> dict[str, str]:
    sums = Checksums(names)
    sums.update(data)
    return sums.hexdigests()
