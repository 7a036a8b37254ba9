"""tf.train.Example wire encoding of a RecordBatch (plain, and TFRecord-framed in one pass) and its parser.

SerializeToString() with the upb backend emits map entries in hash-table order, which is seeded per process
(ASLR) and also depends on insertion order, so the default output is not a stable byte target. We match
SerializeToString(deterministic=True), which sorts the map keys: id, image, label, latent, model_id, sampler,
seed. Parsers accept either order.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from pipeline.dataset.batch import RecordBatch, empty_batch, single_run, split_runs, uniform_rows
from pipeline.dataset.tfrecord import frame_rows

_U64 = (1 << 64) - 1


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
    framed = encode_tfrecords_buffer(batch)
    return framed if isinstance(framed, bytes) else framed.tobytes()


def encode_tfrecords_buffer(batch: RecordBatch):
    """`encode_tfrecords` as any buffer (a (n, frame) uint8 array when all records share one layout, the usual
    case), so a writer can write it without the copy into bytes."""
    if len(batch) == 0:
        return b""
    groups, position = _example_groups(batch)
    framed_groups = []
    for rows, id_len, label_len in groups:
        length = _group_layout(batch, id_len, label_len)[0]
        framed_groups.append(frame_rows(_group_size(batch, rows), length,
                                        functools.partial(_fill_examples, batch, rows, id_len, label_len)))
    if position is None:
        return framed_groups[0]
    views = []
    for framed in framed_groups:
        flat, width = memoryview(framed).cast("B"), framed.shape[1]
        views += [flat[i : i + width] for i in range(0, len(flat), width)]
    return b"".join([views[i] for i in position])


def _tensorflow():
    """TensorFlow (heavy; only readers and verification of foreign or damaged records need it), imported with its
    C++ start-up lines muted when the CLI is quiet (logs.quiet_libraries set TF_CPP_MIN_LOG_LEVEL=3)."""
    import os
    import sys

    if "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3":
        from vae_model.quiet import import_tensorflow

        return import_tensorflow()
    import tensorflow as tf

    return tf


def parse_example_batches(serialized: Sequence[bytes], height: int, width: int) -> list[RecordBatch]:
    """Decode serialized Examples with tf.io.parse_example, one batch per (sampler, model_id, seed) run."""
    if len(serialized) == 0:
        return []
    tf = _tensorflow()

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
    image_bytes = parsed["image"].numpy()
    uniform_rows(np.cumsum([0, *map(len, image_bytes)]), height * width, "image")
    images = np.frombuffer(b"".join(image_bytes), np.uint8).reshape(n, height, width)
    d = uniform_rows(parsed["latent"].row_splits.numpy(), None, "latent")
    latents = parsed["latent"].flat_values.numpy().reshape(n, d)
    samplers, model_ids = parsed["sampler"].numpy(), parsed["model_id"].numpy()
    return split_runs(parsed["id"].numpy(), parsed["label"].numpy(), images, latents, parsed["seed"].numpy(),
                      (samplers, model_ids), lambda row: (samplers[row].decode("utf-8"),
                                                          model_ids[row].decode("utf-8")))


def parse_examples(serialized: Sequence[bytes], height: int, width: int) -> RecordBatch:
    """Inverse of `encode_examples`; all records must share sampler/model_id/seed."""
    return single_run(parse_example_batches(serialized, height, width), height, width, "records",
                      "parse_example_batches")


def parse_templated(serialized: Sequence[bytes], height: int, width: int, latent_dim: int, sampler: str,
                    model_id: str, seed: int) -> RecordBatch | None:
    """`parse_examples` without TensorFlow, for Examples in exactly the layout `encode_examples` writes for this
    (sampler, model_id, seed): every constant byte is compared and every varint checked, with numpy over all the
    records of one length at once. None when any record is laid out otherwise (another writer, or damage):
    parse those with `parse_example_batches`, which accepts every valid encoding."""
    n = len(serialized)
    if n == 0:
        return empty_batch(height, width, latent_dim)
    lengths = np.fromiter(map(len, serialized), np.int64, n)
    ids, labels = np.empty(n, np.int64), np.empty(n, np.int64)
    images, latents = np.empty((n, height, width), np.uint8), np.empty((n, latent_dim), np.float32)
    key = (height * width, latent_dim, sampler.encode("utf-8"), model_id.encode("utf-8"), int(seed))
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        mat = np.frombuffer(b"".join([serialized[i] for i in rows.tolist()]), np.uint8).reshape(len(rows), length)
        todo = np.ones(len(rows), bool)
        for id_len in range(1, 11):
            for label_len in range(1, 11):
                total, constants, slots = _example_layout(id_len, label_len, *key)
                if total != length or not todo.any():
                    continue
                ok = todo.copy()
                for offset, const in constants:
                    ok &= (mat[:, offset:offset + len(const)] == np.frombuffer(const, np.uint8)).all(axis=1)
                id_v, id_ok = _varint_values(mat[:, slots["id"]:slots["id"] + id_len])
                label_v, label_ok = _varint_values(mat[:, slots["label"]:slots["label"] + label_len])
                ok &= id_ok & label_ok
                if not ok.any():
                    continue
                at = rows[ok]
                ids[at], labels[at] = id_v[ok], label_v[ok]
                s = slots["image"]
                images[at] = mat[ok, s:s + height * width].reshape(-1, height, width)
                s = slots["latent"]
                latents[at] = mat[ok, s:s + 4 * latent_dim].copy().view("<f4")
                todo &= ~ok
        if todo.any():
            return None
    return RecordBatch(ids, labels, images, latents, sampler, model_id, seed)


def _varint_values(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values (int64) of (m, k) varint bytes and whether each row is one varint of exactly k bytes."""
    k = cols.shape[1]
    ok = (cols[:, k - 1] & 0x80) == 0
    if k > 1:
        ok &= ((cols[:, : k - 1] & 0x80) != 0).all(axis=1)
    u = np.zeros(len(cols), np.uint64)
    for j in range(k):
        u |= (cols[:, j].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * j)
    return u.view(np.int64), ok
