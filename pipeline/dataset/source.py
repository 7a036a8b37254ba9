"""The `parquet:DIR` data source of vae_model.data: the Parquet shards of a `vae-augment generate` output, found
through its manifest, local or gs:// (so `train-classifier --data gs://bucket/out` works).

A plugin module (entry point `parquet` of the group `vae_augment.sources`, see vae_model.data.source), so
vae_model reads generate outputs without importing pipeline.
"""
from __future__ import annotations

import os

import numpy as np
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import layout
from pipeline.dataset.arrow import images_from_column
from vae_model.data.dataset import Dataset, checked_split
from vae_model.errors import DataError

KIND = "parquet"


def claims(path: str) -> bool:
    """A folder holding manifest.json, or a path to a manifest.json."""
    try:
        folder, manifest = layout.locate_manifest(path)
        return folder != path or FileSystems.exists(manifest)  # folder != path: the path names the manifest
    except (BeamIOError, ValueError, OSError):  # e.g. a URL scheme no installed Beam filesystem serves
        return False


def read(path: str, unlabeled_value, as_test: bool = False) -> tuple[Dataset, Dataset | None]:
    """(every record of the manifest's parquet shards, in shard order; no test split)."""
    folder, manifest_path = layout.locate_manifest(path)
    manifest = layout.read_manifest(folder)
    shards = [s for s in manifest["shards"] if s["format"] == "parquet"]
    if not shards:
        raise DataError(f"{manifest_path}: lists no parquet shards; generate with parquet output")
    images, labels = [], []
    for shard in shards:
        x, y = _read_shard(layout.join(folder, shard["path"]), manifest, shard["rows"], manifest_path)
        images.append(x)
        labels.append(y)
    # concatenate copies: the Dataset owns writable arrays, not views of Arrow buffers
    return checked_split(folder, np.concatenate(images), np.concatenate(labels), unlabeled_value), None


def origin(path: str) -> dict:
    """The generate output's identity, so whatever is trained on it names the exact records."""
    folder, manifest_path = layout.locate_manifest(path)
    m = layout.read_manifest(folder)
    return {"manifest": manifest_path if "://" in manifest_path else os.path.abspath(manifest_path),
            "dataset_digest": m.get("dataset_digest"), "records": m.get("total")}


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _read_shard(path: str, manifest: dict, rows: int, manifest_path: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not FileSystems.exists(path):
        raise DataError(f"{path}: listed in {manifest_path} but missing; regenerate the output directory")
    try:
        with FileSystems.open(path) as f:
            table = pq.read_table(f, columns=["image", "label"])
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: cannot read parquet shard ({_one_line(e)}); regenerate it") from None
    if table.num_rows != rows:
        raise DataError(f"{path}: has {table.num_rows} rows but the manifest says {rows}; regenerate it")
    try:
        images = images_from_column(table.column("image"), manifest["height"], manifest["width"])
    except ValueError as e:
        raise DataError(f"{path}: {e}; regenerate it") from None
    label = table.column("label")
    if not pa.types.is_integer(label.type):
        raise DataError(f"{path}: column 'label' is {label.type}, expected int64")
    return images, pc.fill_null(label, -1).to_numpy().astype(np.int64)
