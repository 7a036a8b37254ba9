"""Readers for generated datasets. The shard list always comes from manifest.json, through layout.shard_files,
so temporary, partial or outside files are never read. Paths may be local or gs://.

Every read checks cheaply, always: each shard's size before a byte of it is read, and each Parquet shard's row
count as it is read. `verify=True` adds the full check (every sha256 and the dataset digest) first."""
from __future__ import annotations

import numpy as np

from pipeline.dataset import layout
from pipeline.dataset.arrow import images_from_column, read_parquet_table
from pipeline.dataset.layout import FileSystems, ShardFile, read_manifest
from vae_model.artifacts import read_bytes
from vae_model.errors import DataError

__all__ = ["checked_manifest", "load_dataframe", "load_parquet", "load_table", "read_manifest", "read_parquet_shard",
           "shard_paths", "synthetic_training_stream", "tfrecord_dataset"]

CHEAP_CHECK = "sizes"  # what every read checks, as provenance records it ("full" = sha256 and digest too)


def checked_manifest(out_dir: str) -> dict:
    """read_manifest, and every shard of every format checked as readers check them (layout.shard_files): for a
    command that does other work before it reads the records, so a bad output fails first."""
    manifest = read_manifest(out_dir)
    for fmt in manifest["formats"]:
        layout.shard_files(out_dir, manifest, fmt)
    return manifest


def shard_paths(out_dir: str, fmt: str, manifest: dict | None = None) -> list[str]:
    """The checked paths of the manifest's `fmt` shards (see layout.shard_files)."""
    manifest = manifest or read_manifest(out_dir)
    return [shard.path for shard in layout.shard_files(out_dir, manifest, fmt)]


def read_parquet_shard(shard: ShardFile, columns=None):
    """One checked Parquet shard as a pyarrow Table; DataError when it is unreadable or its row count is not the
    manifest's."""
    import pyarrow as pa

    try:
        table = read_parquet_table(read_bytes(shard.path), columns)
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        raise DataError(f"{shard.path}: cannot read parquet shard ({layout.first_line(e)}); run `vae-augment verify` on "
                        "the output and regenerate it") from None
    if table.num_rows != shard.entry["rows"]:
        raise DataError(f"{shard.path}: has {table.num_rows} rows but the manifest says {shard.entry['rows']}; "
                        "run `vae-augment verify` on the output and regenerate it")
    return table


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

    _verify_first(out_dir, verify)
    manifest = read_manifest(out_dir)
    return pa.concat_tables([read_parquet_shard(shard, columns)
                             for shard in layout.shard_files(out_dir, manifest, "parquet")])


def load_dataframe(out_dir: str, columns=None, verify: bool = False):
    return load_table(out_dir, columns, verify).to_pandas()


def load_parquet(out_dir: str, verify: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W, labels int64 N), in shard order."""
    manifest = read_manifest(out_dir)
    table = load_table(out_dir, columns=["image", "label"], verify=verify)
    try:
        images = images_from_column(table.column("image"), manifest["height"], manifest["width"])
    except ValueError as e:
        raise DataError(f"{out_dir}: {e}; run `vae-augment verify` on it and regenerate it") from None
    return np.require(images, requirements=["W", "O"]), table.column("label").to_numpy().astype(np.int64)


def tfrecord_dataset(out_dir: str, batch_size: int | None = None, parallel: int | None = None,
                     with_ids: bool = False, verify: bool = False):
    """tf.data.Dataset of (image uint8 [H, W, 1], label int64) read from the manifest's TFRecord shards."""
    _verify_first(out_dir, verify)
    manifest = read_manifest(out_dir)
    h, w = manifest["height"], manifest["width"]
    paths = shard_paths(out_dir, "tfrecord", manifest)
    import tensorflow as tf  # after the checks: a bad output fails without TensorFlow's start-up

    autotune = parallel or tf.data.AUTOTUNE
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
            "id": tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        ex = tf.io.parse_example(serialized, spec)
        img = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, h, w, 1])
        return (img, ex["label"], ex["id"]) if with_ids else (img, ex["label"])

    ds = tf.data.Dataset.from_tensor_slices(paths).interleave(
        _shard_records if any("://" in p for p in paths) else tf.data.TFRecordDataset,
        cycle_length=min(len(paths), 8), num_parallel_calls=autotune, deterministic=True)
    ds = ds.batch(1024).map(parse, num_parallel_calls=autotune).unbatch()
    if batch_size:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shard_records(path):
    """tf.data.Dataset of one remote shard's records read through Beam's FileSystems (the GCS client, credentials and
    emulator every other reader uses), not TensorFlow's own GCS filesystem; the same records, in the same order,
    as tf.data.TFRecordDataset of a local copy."""
    import tensorflow as tf

    from pipeline.dataset.tfrecord import iter_tfrecord_file

    def records(p):
        with FileSystems.open(p.decode("utf-8")) as f:
            yield from iter_tfrecord_file(f)

    return tf.data.Dataset.from_generator(records, args=(path,), output_signature=tf.TensorSpec([], tf.string))


def synthetic_training_stream(out_dir: str, num_classes: int):
    """(tf.data.Dataset of (image, label) from the TFRecord shards, info for classifier.json) of a generate output
    used as extra classifier training data; DataError when its labels cannot train a `num_classes` classifier."""
    m = read_manifest(out_dir)
    labels = [int(c) for c in m.get("per_class", {}) if int(c) >= 0]
    if not labels:
        raise DataError(f"{out_dir} has no labeled records (prior samples without a filter), so it cannot train a "
                        "classifier; generate with a class sampler or --filter-classifier")
    if max(labels) >= num_classes:
        raise DataError(f"{out_dir} has label {max(labels)} but the classifier has {num_classes} classes; "
                        "raise model.num_classes")
    info = {"dir": out_dir, "dataset_digest": m.get("dataset_digest"), "records": m.get("total"),
            "image_shape": [m["height"], m["width"]], "verified": CHEAP_CHECK}
    return tfrecord_dataset(out_dir), info
