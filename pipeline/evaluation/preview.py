"""A PNG grid of generated digits, a row per class, read through the manifest."""
from __future__ import annotations

import numpy as np

from pipeline.dataset.readers import load_parquet, read_manifest, tfrecord_dataset
from vae_model import plots


def _first_per_class(images, labels, per_class):
    rows, names = [], []
    for c in sorted(set(labels.tolist())):
        picked = images[labels == c][:per_class]
        pad = np.zeros((per_class - len(picked),) + images.shape[1:], np.uint8)
        rows.append(np.concatenate([picked, pad]))
        names.append(c)
    return rows, names


def write_preview(out_dir: str, png: str, per_class: int = 12, fmt: str = "parquet") -> int:
    read_manifest(out_dir)
    if fmt == "parquet":
        images, labels = load_parquet(out_dir)
    else:
        pairs = list(tfrecord_dataset(out_dir).take(200_000).as_numpy_iterator())
        images = np.stack([p[0][..., 0] for p in pairs])
        labels = np.array([p[1] for p in pairs])
    rows, names = _first_per_class(images, labels, per_class)
    mosaic = plots.tile(np.concatenate(rows), len(rows), per_class)
    title = "rows: class " + ", ".join("unlabeled" if c < 0 else str(c) for c in names)
    plots.save_image(mosaic, png, title)
    return len(rows)
