"""`RecordBatch`, the unit every codec encodes and decodes, and the run splitting the decoders share.

Everything works on a whole batch at once with numpy; the only per-record Python work in the codecs is one C
call per record where no batch API exists (slicing, crc32c, sha256).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


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
    # Classifier filter bookkeeping (not record content, not written), per class {label: n}: candidates decoded to
    # make this batch and how many of them passed. None = unfiltered.
    drawn: dict[int, int] | None = field(default=None, compare=False)
    passed: dict[int, int] | None = field(default=None, compare=False)

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


def empty_batch(height: int, width: int, latent_dim: int = 0) -> RecordBatch:
    return RecordBatch(
        ids=np.zeros(0, np.int64),
        labels=np.zeros(0, np.int64),
        images=np.zeros((0, height, width), np.uint8),
        latents=np.zeros((0, latent_dim), np.float32),
        sampler="",
        model_id="",
        seed=0,
    )


def uniform_rows(offsets: np.ndarray, size: int | None, what: str) -> int:
    """The common row size of a list column given its offsets (`size`, or the first row's when None)."""
    sizes = np.diff(offsets)
    if size is None:
        size = int(sizes[0]) if len(sizes) else 0
    if len(sizes) and not (sizes == size).all():
        bad = int(np.flatnonzero(sizes != size)[0])
        raise ValueError(f"row {bad}: {what} has {sizes[bad]} elements, expected {size}")
    return size


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Start indices of the maximal runs of rows where all key columns are constant."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64)
    changed = np.zeros(n - 1, bool)
    for key in keys:
        changed |= np.asarray(key[1:] != key[:-1], bool)
    return np.concatenate([[0], np.flatnonzero(changed) + 1])


def split_runs(ids, labels, images, latents, seeds, run_keys: tuple,
               names: Callable[[int], tuple[str, str]]) -> list[RecordBatch]:
    """Decoded columns -> one RecordBatch per maximal run of rows with constant seed and `run_keys` (the
    sampler/model_id columns in some comparable form); `names(row)` gives that row's (sampler, model_id)."""
    bounds = np.append(_run_starts(seeds, *run_keys), len(ids))
    batches = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        sampler, model_id = names(a)
        batches.append(RecordBatch(ids=ids[a:b], labels=labels[a:b], images=images[a:b], latents=latents[a:b],
                                   sampler=sampler, model_id=model_id, seed=int(seeds[a])))
    return batches


def single_run(batches: list[RecordBatch], height: int, width: int, what: str, splitter: str) -> RecordBatch:
    """The one batch a decoder found, or an error naming the decoder that splits mixed runs."""
    if not batches:
        return empty_batch(height, width)
    if len(batches) > 1:
        raise ValueError(f"{what} mix {len(batches)} (sampler, model_id, seed) runs; use {splitter}() to split")
    return batches[0]
