"""`vae-augment preview`: a PNG grid of generated digits, a row per class, read through the manifest."""
from __future__ import annotations

import numpy as np

from pipeline.dataset.readers import load_parquet, read_manifest, tfrecord_dataset
from vae_model import plots

_MAX_TFRECORDS = 200_000  # the TFRecord path reads records in file order; this bounds memory on huge outputs


def write_preview(out_dir: str, png: str, per_class: int = 12, fmt: str = "parquet") -> int:
    """Draw the first `per_class` records of each class from the `fmt` shards into `png`; returns the rows drawn."""
    read_manifest(out_dir)  # a missing or partial output fails here, with the manifest's message
    if fmt == "parquet":
        images, labels = load_parquet(out_dir)
    else:
        pairs = list(tfrecord_dataset(out_dir).take(_MAX_TFRECORDS).as_numpy_iterator())
        images = np.stack([p[0][..., 0] for p in pairs])
        labels = np.array([p[1] for p in pairs])
    return len(plots.class_grid(images, labels, per_class, png, "rows: class "))
