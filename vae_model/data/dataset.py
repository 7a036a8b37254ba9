"""In-memory splits of a data source and the checks and transforms every format shares."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vae_model.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (N, H, W) uint8 and labels (N,) int64 where -1 means unlabeled."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        object.__setattr__(self, "labels", np.asarray(self.labels).astype(np.int64, copy=False))
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])

    @property
    def labeled(self) -> "Dataset":
        """Only the rows with a label (>= 0)."""
        mask = self.labels >= 0
        return self if mask.all() else self.take(np.flatnonzero(mask))

    def take(self, index) -> "Dataset":
        return Dataset(self.images[index], self.labels[index])


@dataclass(frozen=True, eq=False)
class DataSplits:
    source: str
    train: Dataset
    test: Dataset | None = None
    val: Dataset | None = None
    origin: dict | None = None  # what made the data, e.g. a generate output's dataset_digest

    def describe(self) -> dict:
        """JSON-able summary: source, image shape, and rows / labeled rows / per-class counts per split."""
        splits = {}
        for name in ("train", "val", "test"):
            ds = getattr(self, name)
            if ds is None:
                continue
            classes, counts = np.unique(ds.labels[ds.labels >= 0], return_counts=True)
            splits[name] = {"rows": len(ds), "labeled": int(counts.sum()),
                            "label_counts": {str(c): int(n) for c, n in zip(classes, counts)}}
        out = {"source": self.source, "image_shape": list(self.train.image_shape), "splits": splits}
        if self.origin:
            out["origin"] = self.origin
        return out


def checked_split(where, images: np.ndarray, labels: np.ndarray | None, unlabeled_value: int | None) -> Dataset:
    """One split read from `where`, checked the same way for every format: non-empty, labels >= 0 or -1
    (unlabeled; None = all unlabeled), `unlabeled_value` mapped to -1."""
    if len(images) == 0:
        raise DataError(f"{where}: contains no images; pass a file with data rows")
    if labels is None:
        labels = np.full(len(images), -1, np.int64)
    labels = labels.astype(np.int64)
    if unlabeled_value is not None:
        labels[labels == unlabeled_value] = -1
    bad = np.flatnonzero(labels < -1)
    if bad.size:
        raise DataError(f"{where}: row {bad[0] + 1} has negative label {labels[bad[0]]}; use -1 or an empty "
                        f"label for unlabeled rows, or pass ?unlabeled_value={labels[bad[0]]}")
    return Dataset(images, labels)


def unlabel(ds: Dataset) -> Dataset:
    return Dataset(ds.images, np.full(len(ds), -1, np.int64))


def carve_validation(train: Dataset, fraction: float, seed: int, source: str) -> tuple[Dataset, Dataset]:
    """(train, val): a seeded `fraction` of the rows held out, both in their original order."""
    n = len(train)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"{source}: {n} training rows are too few for validation_split={fraction}; "
                        f"lower the split or use more data")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return train.take(np.sort(order[:n - n_val])), train.take(np.sort(order[n - n_val:]))


def keep_labels_per_class(train: Dataset, k: int, seed: int) -> Dataset:
    """The labels of a seeded `k` rows per class kept, the rest unlabeled."""
    order = np.random.default_rng([seed, 2]).permutation(len(train))
    keep = np.zeros(len(train), bool)
    ordered = train.labels[order]
    for c in np.unique(ordered[ordered >= 0]):
        keep[order[ordered == c][:k]] = True
    return Dataset(train.images, np.where(keep, train.labels, -1))


def shape_text(ds: Dataset) -> str:
    return "x".join(map(str, ds.image_shape))


def square_side(pixels: int) -> int | None:
    """The side of a square image of `pixels` pixels, or None when there is none."""
    side = math.isqrt(pixels) if pixels > 0 else 0
    return side if side > 0 and side * side == pixels else None
