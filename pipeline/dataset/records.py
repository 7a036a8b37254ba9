"""Batched record encodings: Arrow tables, tf.train.Example bytes, TFRecord framing, digests.

Everything here works on a whole `RecordBatch` at once with numpy/pyarrow; the only per-record
Python work is one C call per record where no batch API exists (slicing, crc32c, sha256).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import pyarrow as pa

_LOG = logging.getLogger(__name__)

SCHEMA_VERSION = b"1"
_U64 = (1 << 64) - 1
_DIGEST_MOD = 1 << 256
_INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class RecordBatch:
    """A batch of records sharing sampler/model_id/seed; one Beam element."""

    ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int64 (n,), -1 = unlabeled
    images: np.ndarray  # uint8 (n, H, W), C-contiguous
    latents: np.ndarray  # float32 (n, d)
    sampler: str
    model_id: str
    seed: int
    # Classifier filter bookkeeping (not record content, not written): candidates decoded to make this batch and
    # how many of them passed. None = unfiltered.
    drawn: int | None = field(default=None, compare=False)
    passed: int | None = field(default=None, compare=False)

    def __post_init__(self):
        # Normalise dtypes/layout once here so every encoder can rely on them; these are
        # no-ops (no copy) when the producer already hands over the right arrays.
        fix = functools.partial(object.__setattr__, self)
        fix("ids", np.ascontiguousarray(self.ids, dtype=np.int64))
        fix("labels", np.ascontiguousarray(self.labels, dtype=np.int64))
        fix("images", np.ascontiguousarray(self.images, dtype=np.uint8))
        fix("latents", np.ascontiguousarray(self.latents, dtype=np.float32))
        fix("sampler", str(self.sampler))
        fix("model_id", str(self.model_id))
        fix("seed", int(self.seed))
        n = self.ids.shape[0]
        if self.ids.ndim != 1 or self.labels.shape != (n,):
            raise ValueError(f"ids/labels must both have shape ({n},), got {self.ids.shape}/{self.labels.shape}")
        if self.images.ndim != 3 or self.images.shape[0] != n:
            raise ValueError(f"images must have shape ({n}, H, W), got {self.images.shape}")
        if self.latents.ndim != 2 or self.latents.shape[0] != n:
            raise ValueError(f"latents must have shape ({n}, d), got {self.latents.shape}")
        if not -(1 << 63) <= self.seed < (1 << 63):
            raise ValueError(f"seed {self.seed} does not fit in int64")

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[1]


def _empty_batch(height: int, width: int, latent_dim: int = 0) -> RecordBatch:
    return RecordBatch(
        ids=np.zeros(0, np.int64),
        labels=np.zeros(0, np.int64),
        images=np.zeros((0, height, width), np.uint8),
        latents=np.zeros((0, latent_dim), np.float32),
        sampler="",
        model_id="",
        seed=0,
    )


# --------------------------------------------------------------------------------------------
# Arrow / Parquet
# --------------------------------------------------------------------------------------------

_LATENT_TYPE = pa.list_(pa.field("element", pa.float32(), nullable=False))


def arrow_schema(height: int, width: int) -> pa.Schema:
    """The Arrow schema of one record, with image size and schema version as metadata."""
    # The list child is named "element" so the Parquet-compliant nested encoding
    # (use_compliant_nested_type=True) round-trips to the identical Arrow type.
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("image", pa.binary(), nullable=False),
            pa.field("latent", _LATENT_TYPE, nullable=False),
            pa.field("sampler", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
        ],
        metadata={
            b"height": str(int(height)).encode(),
            b"width": str(int(width)).encode(),
            b"vae_augment_schema": SCHEMA_VERSION,
        },
    )


ARROW_SCHEMA = arrow_schema  # name used in the design doc


def _uniform_offsets(n: int, item_size: int) -> pa.Buffer:
    if n * item_size > _INT32_MAX:
        raise ValueError(f"{n} x {item_size} items overflow an Arrow column's int32 offsets; use smaller batches")
    return pa.py_buffer((np.arange(n + 1, dtype=np.int64) * item_size).astype(np.int32))


def _fixed_width_binary(buffer: np.ndarray, n: int, item_size: int, arrow_type: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(arrow_type, n, [None, _uniform_offsets(n, item_size), pa.py_buffer(buffer)])


def _repeated_string(value: str, n: int) -> pa.Array:
    encoded = value.encode("utf-8")
    return _fixed_width_binary(np.frombuffer(encoded * n, np.uint8), n, len(encoded), pa.string())


def to_arrow(batch: RecordBatch) -> pa.Table:
    """Zero-copy (except the per-batch constant columns) Arrow table in `arrow_schema` layout."""
    n = len(batch)
    latent = pa.Array.from_buffers(
        _LATENT_TYPE,
        n,
        [None, _uniform_offsets(n, batch.latent_dim)],
        children=[pa.array(batch.latents.reshape(-1))],
    )
    columns = [
        pa.array(batch.ids),
        pa.array(batch.labels),
        _fixed_width_binary(batch.images, n, batch.height * batch.width, pa.binary()),
        latent,
        _repeated_string(batch.sampler, n),
        _repeated_string(batch.model_id, n),
        pa.array(np.full(n, batch.seed, np.int64)),
    ]
    return pa.Table.from_arrays(columns, schema=arrow_schema(batch.height, batch.width))


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Start indices of the maximal runs of rows where all key columns are constant."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64)
    changed = np.zeros(n - 1, bool)
    for key in keys:
        changed |= np.asarray(key[1:] != key[:-1], bool)
    return np.concatenate([[0], np.flatnonzero(changed) + 1])


def _uniform_rows(offsets: np.ndarray, size: int | None, what: str) -> int:
    sizes = np.diff(offsets)
    if size is None:
        size = int(sizes[0]) if len(sizes) else 0
    if len(sizes) and not (sizes == size).all():
        bad = int(np.flatnonzero(sizes != size)[0])
        raise ValueError(f"row {bad}: {what} has {sizes[bad]} elements, expected {size}")
    return size


def _check_metadata(schema: pa.Schema, height: int, width: int) -> None:
    meta = schema.metadata or {}
    for key, expected in ((b"height", height), (b"width", width)):
        if key in meta and int(meta[key]) != expected:
            raise ValueError(f"table metadata says {key.decode()}={meta[key].decode()}, caller expects {expected}")


def arrow_batches(table: pa.Table, height: int, width: int) -> list[RecordBatch]:
    """Split a table (e.g. a whole Parquet shard) into RecordBatches, one per run of (sampler, model_id, seed)."""
    _check_metadata(table.schema, height, width)
    n = table.num_rows
    if n == 0:
        return []
    ids = table.column("id").to_numpy()
    labels = table.column("label").to_numpy()
    seeds = table.column("seed").to_numpy()

    image = table.column("image").combine_chunks()
    image_offsets = np.frombuffer(image.buffers()[1], np.int32)[image.offset : image.offset + n + 1]
    _uniform_rows(image_offsets, height * width, "image")
    image_data = np.frombuffer(image.buffers()[2], np.uint8)
    images = image_data[image_offsets[0] : image_offsets[-1]].reshape(n, height, width)

    latent = table.column("latent").combine_chunks()
    d = _uniform_rows(latent.offsets.to_numpy(), None, "latent")
    latents = latent.flatten().to_numpy().reshape(n, d)

    # Dictionary-encode the per-batch strings so run detection compares small ints, not strings.
    sampler = table.column("sampler").combine_chunks().dictionary_encode()
    model_id = table.column("model_id").combine_chunks().dictionary_encode()
    starts = _run_starts(seeds, sampler.indices.to_numpy(), model_id.indices.to_numpy())
    bounds = np.append(starts, n)
    return [
        RecordBatch(
            ids=ids[a:b],
            labels=labels[a:b],
            images=images[a:b],
            latents=latents[a:b],
            sampler=sampler[int(a)].as_py(),
            model_id=model_id[int(a)].as_py(),
            seed=int(seeds[a]),
        )
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())
    ]


def _single_run(batches: list[RecordBatch], height: int, width: int, what: str, splitter: str) -> RecordBatch:
    if not batches:
        return _empty_batch(height, width)
    if len(batches) > 1:
        raise ValueError(f"{what} mix {len(batches)} (sampler, model_id, seed) runs; use {splitter}() to split")
    return batches[0]


def from_arrow(table: pa.Table, height: int, width: int) -> RecordBatch:
    """Inverse of `to_arrow`; the table must hold a single (sampler, model_id, seed) run."""
    return _single_run(arrow_batches(table, height, width), height, width, "table rows", "arrow_batches")


# --------------------------------------------------------------------------------------------
# tf.train.Example wire encoding
# --------------------------------------------------------------------------------------------
#
# SerializeToString() with the upb backend emits map entries in hash-table order, which is seeded
# per process (ASLR) and also depends on insertion order, so the default output is not a stable
# byte target. We match SerializeToString(deterministic=True), which sorts the map keys:
# id, image, label, latent, model_id, sampler, seed. Parsers accept either order.


def _varint(value: int) -> bytes:
    value &= _U64  # negative int64 -> 10-byte two's-complement varint, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    u = values.view(np.uint64)
    return 1 + (u[:, None] >= _VARINT_THRESHOLDS).sum(axis=1)


def _varint_columns(values: np.ndarray, length: int) -> np.ndarray:
    """(n, length) uint8 varint encodings of int64 values that all encode to `length` bytes."""
    u = values.view(np.uint64)
    out = np.empty((len(u), length), np.uint8)
    for k in range(length):
        out[:, k] = (u >> np.uint64(7 * k)) & np.uint64(0x7F)
    out[:, : length - 1] |= 0x80
    return out


def _size(parts: list) -> int:
    return sum(len(p) if isinstance(p, bytes) else p[1] for p in parts)


def _msg(tag: int, parts: list) -> list:
    """A length-delimited field; parts are bytes or (placeholder_name, length)."""
    return [bytes([tag]) + _varint(_size(parts)), *parts]


def _int64_feature(part) -> list:
    return _msg(0x1A, _msg(0x0A, [part]))  # Feature.int64_list(3) > Int64List.value(1, packed)


def _bytes_feature(part) -> list:
    return _msg(0x0A, _msg(0x0A, [part]))  # Feature.bytes_list(1) > BytesList.value(1)


def _float_feature(part, count: int) -> list:
    return _msg(0x12, _msg(0x0A, [part]) if count else [])  # Feature.float_list(2) > FloatList.value(1, packed)


def _map_entry(key: bytes, feature: list) -> list:
    return _msg(0x0A, _msg(0x0A, [key]) + _msg(0x12, feature))  # Features.feature(1) entry: key(1), value(2)


@functools.lru_cache(maxsize=256)
def _example_layout(id_len, label_len, image_len, latent_dim, sampler, model_id, seed):
    """Byte layout shared by every record with the given varint lengths.

    Returns (total_length, constant segments [(offset, bytes)], placeholder offsets {name: offset}).
    """
    features = (
        _map_entry(b"id", _int64_feature(("id", id_len)))
        + _map_entry(b"image", _bytes_feature(("image", image_len)))
        + _map_entry(b"label", _int64_feature(("label", label_len)))
        + _map_entry(b"latent", _float_feature(("latent", 4 * latent_dim), latent_dim))
        + _map_entry(b"model_id", _bytes_feature(model_id))
        + _map_entry(b"sampler", _bytes_feature(sampler))
        + _map_entry(b"seed", _int64_feature(_varint(seed)))
    )
    constants, slots, offset = [], {}, 0
    for part in _msg(0x0A, features):  # Example.features(1)
        if isinstance(part, bytes):
            if constants and constants[-1][0] + len(constants[-1][1]) == offset:
                constants[-1] = (constants[-1][0], constants[-1][1] + part)
            else:
                constants.append((offset, part))
            offset += len(part)
        else:
            slots[part[0]] = offset
            offset += part[1]
    return offset, tuple(constants), slots


def _example_groups(batch: RecordBatch):
    """Split the batch into classes of identical byte layout.

    Records differ in layout only through the id/label varint lengths (1..10 bytes each).
    Returns ([(rows, id_len, label_len)], position) where concatenating the groups' records and
    taking `position` restores batch order; position is None when there is a single group.
    """
    keys = _varint_lengths(batch.ids) * 16 + _varint_lengths(batch.labels)
    if keys.min() == keys.max():
        return [(slice(None), int(keys[0]) // 16, int(keys[0]) % 16)], None
    classes, inverse = np.unique(keys, return_inverse=True)
    groups = [(np.flatnonzero(inverse == g), key // 16, key % 16) for g, key in enumerate(classes.tolist())]
    position = np.empty(len(batch), np.int64)
    position[np.argsort(inverse, kind="stable")] = np.arange(len(batch))
    return groups, position.tolist()


def _group_layout(batch: RecordBatch, id_len: int, label_len: int):
    return _example_layout(
        id_len,
        label_len,
        batch.height * batch.width,
        batch.latent_dim,
        batch.sampler.encode("utf-8"),
        batch.model_id.encode("utf-8"),
        batch.seed,
    )


def _fill_examples(batch: RecordBatch, rows, id_len: int, label_len: int, out: np.ndarray) -> None:
    """Write the serialized Examples of `rows` (sharing one layout) into the (m, length) view `out`."""
    _, constants, slots = _group_layout(batch, id_len, label_len)
    for offset, const in constants:
        out[:, offset : offset + len(const)] = np.frombuffer(const, np.uint8)
    image_len, latent_len = batch.height * batch.width, 4 * batch.latent_dim
    out[:, slots["id"] : slots["id"] + id_len] = _varint_columns(batch.ids[rows], id_len)
    out[:, slots["label"] : slots["label"] + label_len] = _varint_columns(batch.labels[rows], label_len)
    out[:, slots["image"] : slots["image"] + image_len] = batch.images.reshape(len(batch), -1)[rows]
    latents = batch.latents.astype("<f4", copy=False).view(np.uint8)
    out[:, slots["latent"] : slots["latent"] + latent_len] = latents[rows]


def _group_size(batch: RecordBatch, rows) -> int:
    return len(batch) if isinstance(rows, slice) else len(rows)


def encode_examples(batch: RecordBatch) -> list[bytes]:
    """Serialized tf.train.Example per record, equal to SerializeToString(deterministic=True)."""
    if len(batch) == 0:
        return []
    groups, position = _example_groups(batch)
    encoded: list[bytes] = []
    for rows, id_len, label_len in groups:
        length = _group_layout(batch, id_len, label_len)[0]
        mat = np.empty((_group_size(batch, rows), length), np.uint8)
        _fill_examples(batch, rows, id_len, label_len, mat)
        buf = mat.tobytes()
        encoded += [buf[i : i + length] for i in range(0, len(buf), length)]
    return encoded if position is None else [encoded[i] for i in position]


def encode_tfrecords(batch: RecordBatch) -> bytes:
    """TFRecord-framed Examples of the batch; equals frame_tfrecords(encode_examples(batch)).

    Fused so the Examples are written straight into the framed rows: no per-record bytes objects,
    leaving one crc32c call per record as the only per-record Python work.
    """
    if len(batch) == 0:
        return b""
    groups, position = _example_groups(batch)
    framed_groups = []
    for rows, id_len, label_len in groups:
        length = _group_layout(batch, id_len, label_len)[0]
        framed = np.empty((_group_size(batch, rows), length + 16), np.uint8)
        header = struct.pack("<QI", length, masked_crc32c(struct.pack("<Q", length)))
        framed[:, :12] = np.frombuffer(header, np.uint8)
        payload = framed[:, 12:-4]
        _fill_examples(batch, rows, id_len, label_len, payload)
        crcs = _crc_rows(payload)
        framed[:, -4:] = _mask(crcs).astype("<u4").view(np.uint8).reshape(-1, 4)
        framed_groups.append(framed)
    if position is None:
        return framed_groups[0].tobytes()
    views = []
    for framed in framed_groups:
        flat, width = memoryview(framed).cast("B"), framed.shape[1]
        views += [flat[i : i + width] for i in range(0, len(flat), width)]
    return b"".join([views[i] for i in position])


def parse_example_batches(serialized: Sequence[bytes], height: int, width: int) -> list[RecordBatch]:
    """Decode serialized Examples with tf.io.parse_example, one batch per (sampler, model_id, seed) run."""
    if len(serialized) == 0:
        return []
    import tensorflow as tf  # heavy; only readers/verification need it

    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "image": tf.io.FixedLenFeature([], tf.string),
        "latent": tf.io.RaggedFeature(tf.float32),
        "sampler": tf.io.FixedLenFeature([], tf.string),
        "model_id": tf.io.FixedLenFeature([], tf.string),
        "seed": tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_example(tf.constant(list(serialized), dtype=tf.string), spec)
    n = len(serialized)
    ids, labels, seeds = (parsed[k].numpy() for k in ("id", "label", "seed"))

    image_bytes = parsed["image"].numpy()
    _uniform_rows(np.cumsum([0, *map(len, image_bytes)]), height * width, "image")
    images = np.frombuffer(b"".join(image_bytes), np.uint8).reshape(n, height, width)

    d = _uniform_rows(parsed["latent"].row_splits.numpy(), None, "latent")
    latents = parsed["latent"].flat_values.numpy().reshape(n, d)

    samplers, model_ids = parsed["sampler"].numpy(), parsed["model_id"].numpy()
    bounds = np.append(_run_starts(seeds, samplers, model_ids), n)
    return [
        RecordBatch(
            ids=ids[a:b],
            labels=labels[a:b],
            images=images[a:b],
            latents=latents[a:b],
            sampler=samplers[a].decode("utf-8"),
            model_id=model_ids[a].decode("utf-8"),
            seed=int(seeds[a]),
        )
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())
    ]


def parse_examples(serialized: Sequence[bytes], height: int, width: int) -> RecordBatch:
    """Inverse of `encode_examples`; all records must share sampler/model_id/seed."""
    return _single_run(parse_example_batches(serialized, height, width), height, width, "records",
                       "parse_example_batches")


# --------------------------------------------------------------------------------------------
# TFRecord framing
# --------------------------------------------------------------------------------------------


def _load_crc32c():
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value
    except ImportError:
        google_crc32c = None
    try:
        import crcmod.crcmod
        import crcmod.predefined

        if getattr(crcmod.crcmod, "_usingExtension", False):
            return crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    except ImportError:
        pass
    if google_crc32c is None:
        raise ImportError("TFRecord writing needs google-crc32c (pip install google-crc32c)")
    _LOG.warning("google_crc32c has no C extension here; TFRecord framing will be much slower")
    return google_crc32c.value


crc32c = _load_crc32c()


def _crc_takes_arrays() -> bool:
    try:
        return crc32c(np.frombuffer(b"abc", np.uint8)) == crc32c(b"abc")
    except TypeError:
        return False


# google_crc32c's C extension reads numpy rows through the buffer protocol; others need bytes.
_CRC_TAKES_ARRAYS = _crc_takes_arrays()


def _crc_rows(rows: np.ndarray) -> np.ndarray:
    """crc32c of each row of a uint8 matrix, without copying rows when the crc function allows."""
    chunks = rows if _CRC_TAKES_ARRAYS else map(bytes, rows)
    return np.fromiter(map(crc32c, chunks), np.uint32, len(rows))


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _mask(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint32)
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(0xA282EAD8)


# Footer of record i-1 followed by header of record i: the 16 bytes between two payloads.
_GAP = np.dtype([("data_crc", "<u4"), ("length", "<u8"), ("length_crc", "<u4")])


def frame_tfrecords(records: Sequence[bytes]) -> bytes:
    """Concatenated TFRecord framing of `records`, identical to tf.io.TFRecordWriter output."""
    n = len(records)
    if n == 0:
        return b""
    lengths = np.fromiter(map(len, records), np.uint64, n)
    gaps = np.zeros(n + 1, _GAP)
    gaps["data_crc"][1:] = _mask(np.fromiter(map(crc32c, records), np.uint32, n))
    gaps["length"][:n] = lengths
    # Few distinct lengths per batch: crc each once.
    distinct, inverse = np.unique(lengths, return_inverse=True)
    length_crcs = np.array([masked_crc32c(struct.pack("<Q", v)) for v in distinct.tolist()], np.uint32)
    gaps["length_crc"][:n] = length_crcs[inverse]
    buf = gaps.tobytes()
    pieces: list = [None] * (2 * n + 1)
    pieces[1::2] = records
    pieces[0::2] = [buf[4:16], *(buf[i : i + 16] for i in range(16, 16 * n, 16)), buf[16 * n : 16 * n + 4]]
    return b"".join(pieces)


def _read_exact(fileobj: BinaryIO, size: int) -> bytes:
    chunk = fileobj.read(size)
    if len(chunk) == size or not chunk:
        return chunk
    parts = [chunk]
    got = len(chunk)
    while got < size:  # some remote file objects return short reads before EOF
        more = fileobj.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def iter_tfrecord_file(fileobj: BinaryIO, verify_crc: bool = True) -> Iterator[bytes]:
    """Yield record payloads of a TFRecord stream; ValueError with the byte offset on corruption."""
    offset = 0
    while True:
        header = _read_exact(fileobj, 12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError(f"truncated TFRecord header at byte offset {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if verify_crc and masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
            raise ValueError(f"TFRecord length CRC mismatch at byte offset {offset}")
        data = _read_exact(fileobj, length)
        footer = _read_exact(fileobj, 4)
        if len(data) < length or len(footer) < 4:
            raise ValueError(f"truncated TFRecord record at byte offset {offset} (length {length})")
        if verify_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"TFRecord data CRC mismatch in record at byte offset {offset}")
        yield data
        offset += 16 + length


# --------------------------------------------------------------------------------------------
# Order-independent dataset digest
# --------------------------------------------------------------------------------------------


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
