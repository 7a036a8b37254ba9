"""The order-independent dataset digest: a sha256 per record, summed mod 2**256 (a multiset hash)."""
from __future__ import annotations

import hashlib

import numpy as np

from pipeline.dataset.batch import RecordBatch

_DIGEST_MOD = 1 << 256


def record_hashes(batch: RecordBatch) -> np.ndarray:
    """(n, 32) uint8 sha256 per record over id, label (int64 LE), image bytes, latent (float32 LE)."""
    n = len(batch)
    image = batch.images.reshape(n, -1)
    latent = batch.latents.astype("<f4", copy=False).reshape(n, -1).view(np.uint8)
    rows = np.empty((n, 16 + image.shape[1] + latent.shape[1]), np.uint8)
    rows[:, 0:8] = batch.ids.astype("<i8", copy=False).view(np.uint8).reshape(n, 8)
    rows[:, 8:16] = batch.labels.astype("<i8", copy=False).view(np.uint8).reshape(n, 8)
    rows[:, 16 : 16 + image.shape[1]] = image
    rows[:, 16 + image.shape[1] :] = latent
    view, width = memoryview(rows.reshape(-1)), rows.shape[1]
    sha = hashlib.sha256
    digests = b"".join([sha(view[i : i + width]).digest() for i in range(0, n * width, width)])
    return np.frombuffer(digests, np.uint8).reshape(n, 32)


def sum_hashes(hashes: np.ndarray) -> int:
    """Sum of (n, 32) big-endian 256-bit hashes mod 2**256."""
    if len(hashes) == 0:
        return 0
    # Sum 32-bit limbs column-wise in uint64 (exact for < 2**32 rows), then carry in Python.
    limbs = np.ascontiguousarray(hashes, np.uint8).view(">u4").astype(np.uint64).sum(axis=0)
    return sum(int(v) << (32 * (7 - k)) for k, v in enumerate(limbs.tolist())) % _DIGEST_MOD


def batch_digest(batch: RecordBatch) -> int:
    """Multiset hash of a batch: order-independent, sensitive to duplicated or missing records."""
    return sum_hashes(record_hashes(batch))


def combine_digests(a: int, b: int) -> int:
    return (a + b) % _DIGEST_MOD


def digest_hex(digest: int) -> str:
    return f"{digest % _DIGEST_MOD:064x}"
