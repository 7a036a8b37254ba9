"""Readers for generated datasets. The shard list always comes from manifest.json, so temporary or partial
files are never read. Paths may be local or gs://."""
from __future__ import annotations

import json
import struct

import numpy as np
from apache_beam.io.filesystems import FileSystems

from vae_model.errors import DataError

MANIFEST = "manifest.json"


def read_manifest(out_dir: str) -> dict:
    path = FileSystems.join(out_dir, MANIFEST)
    if not FileSystems.exists(path):
        raise DataError(f"{out_dir} has no {MANIFEST}: it is not a finished `vae-augment generate` output "
                        "(the job failed or is still running); re-run generate or pass the right directory")
    try:
        with FileSystems.open(path) as f:
            manifest = json.loads(f.read())
        manifest["shards"], manifest["height"], manifest["width"]
    except (ValueError, KeyError) as e:
        raise DataError(f"{path} is not a valid manifest ({type(e).__name__}: {e}); re-run generate") from None
    return manifest


def shard_paths(out_dir: str, fmt: str, manifest: dict | None = None) -> list[str]:
    manifest = manifest or read_manifest(out_dir)
    paths = [FileSystems.join(out_dir, s["path"]) for s in manifest["shards"] if s["format"] == fmt]
    if not paths:
        raise DataError(f"{out_dir} has no {fmt} shards (formats written: {', '.join(manifest.get('formats', []))});"
                        f" re-run generate with --formats {fmt}")
    return paths


def _verify_first(out_dir: str, verify: bool):
    if verify:
        from pipeline.dataset.verify import verify_output
        problems = verify_output(out_dir)
        if problems:
            raise DataError(f"{out_dir} failed verification: {problems[0]} (+{len(problems) - 1} more); "
                            "run `vae-augment verify` for the list")


def load_table(out_dir: str, columns=None, verify: bool = False):
    """All Parquet shards as one pyarrow Table (use `.to_pandas()` for pandas)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _verify_first(out_dir, verify)
    manifest = read_manifest(out_dir)
    tables = []
    for path in shard_paths(out_dir, "parquet", manifest):
        with FileSystems.open(path) as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)


def load_dataframe(out_dir: str, columns=None, verify: bool = False):
    return load_table(out_dir, columns, verify).to_pandas()


def load_parquet(out_dir: str, verify: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W, labels int64 N), in shard order."""
    manifest = read_manifest(out_dir)
    table = load_table(out_dir, columns=["image", "label"], verify=verify)
    h, w = int(manifest["height"]), int(manifest["width"])
    col = table.column("image").combine_chunks()
    offsets = np.frombuffer(col.buffers()[1], np.int32, len(col) + 1, col.offset * 4)
    data = np.frombuffer(col.buffers()[2], np.uint8)
    images = data[offsets[0]:offsets[-1]].reshape(len(col), h, w)
    return images.copy(), table.column("label").to_numpy().astype(np.int64)


def tfrecord_dataset(out_dir: str, batch_size: int | None = None, parallel: int | None = None,
                     with_ids: bool = False, verify: bool = False):
    """tf.data.Dataset of (image uint8 [H, W, 1], label int64) read from the manifest's TFRecord shards."""
    import tensorflow as tf

    _verify_first(out_dir, verify)
    manifest = read_manifest(out_dir)
    h, w = int(manifest["height"]), int(manifest["width"])
    paths = shard_paths(out_dir, "tfrecord", manifest)
    autotune = parallel or tf.data.AUTOTUNE
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
            "id": tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        img = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, h, w, 1])
        return (img, ex["label"], ex["id"]) if with_ids else (img, ex["label"])

    ds = tf.data.Dataset.from_tensor_slices(paths).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(paths), 8), num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(1024).map(parse, num_parallel_calls=autotune).unbatch()
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def count_tfrecords(fileobj) -> int:
    """Count records by walking the length headers (no CRC or payload read)."""
    n = 0
    while True:
        head = fileobj.read(12)
        if not head:
            return n
        if len(head) < 12:
            raise DataError("truncated TFRecord header")
        (length,) = struct.unpack("<Q", head[:8])
        fileobj.seek(length + 4, 1)
        n += 1
