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
from pipeline.dataset.readers import CHEAP_CHECK, read_parquet_shard
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
    """(every record of the manifest's parquet shards, in shard order; no test split). Each shard's size is
    checked before it is read and its row count as it is read (readers.CHEAP_CHECK)."""
    folder, _ = layout.locate_manifest(path)
    manifest = layout.read_manifest(folder)
    images, labels = [], []
    for shard in layout.shard_files(folder, manifest, "parquet"):
        x, y = _read_shard(shard, manifest)
        images.append(x)
        labels.append(y)
    # concatenate copies: the Dataset owns writable arrays, not views of Arrow buffers
    return checked_split(folder, np.concatenate(images), np.concatenate(labels), unlabeled_value), None


def origin(path: str) -> dict:
    """The generate output's identity, so whatever is trained on it names the exact records, and how they were
    checked when read."""
    folder, manifest_path = layout.locate_manifest(path)
    m = layout.read_manifest(folder)
    return {"manifest": manifest_path if "://" in manifest_path else os.path.abspath(manifest_path),
            "dataset_digest": m.get("dataset_digest"), "records": m.get("total"), "verified": CHEAP_CHECK}


def _read_shard(shard: layout.ShardFile, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_parquet_shard(shard, columns=["image", "label"])
    try:
        images = images_from_column(table.column("image"), manifest["height"], manifest["width"])
    except ValueError as e:
        raise DataError(f"{shard.path}: {e}; regenerate it") from None
    label = table.column("label")
    if not pa.types.is_integer(label.type):
        raise DataError(f"{shard.path}: column 'label' is {label.type}, expected int64")
    return images, pc.fill_null(label, -1).to_numpy().astype(np.int64)
