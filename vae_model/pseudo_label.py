"""Pseudo-labels for the unlabeled rows of a data source.

A classifier trained on the few labeled rows calls each unlabeled image; its class probabilities are then
averaged over the image's nearest neighbours in the VAE's latent space. The VAE was trained on every image,
labeled or not, so its latent neighbourhoods follow the classes of the unlabeled data too, and the average is
right more often than the classifier alone. The default threshold is low because for augmentation the coverage
of hard digits is worth more than the last errors (measured in benchmarks/low_data.py; README "Low-data
augmentation experiment").

The labeled rows keep their own labels and count as one-hot votes for their neighbours. Rows whose averaged
confidence stays below the threshold stay unlabeled (-1). Everything is batched: one encoder pass, one
classifier pass, and an exact k-NN search in chunks.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np

from vae_model.data import Dataset, DataSplits
from vae_model.artifacts import atomic_file
from vae_model.errors import DataError, UsageError

DEFAULT_NEIGHBOURS = 10
DEFAULT_PSEUDO_LABEL_CONFIDENCE = 0.5  # chosen on validation in benchmarks/low_data.py
_QUERY_CHUNK = 8192  # k-NN queries per chunk: keeps the index arrays small whatever the data size


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    labels: np.ndarray       # int64 (N,): the real label, a pseudo-label, or -1 (not confident enough)
    confidence: np.ndarray   # float32 (N,): averaged probability of `labels` (1.0 for real labels)
    pseudo: np.ndarray       # bool (N,): the label came from the classifier

    def summary(self, num_classes: int) -> dict:
        real = (self.labels >= 0) & ~self.pseudo
        return {"rows": int(len(self.labels)), "real_labels": int(real.sum()),
                "pseudo_labels": int(self.pseudo.sum()),
                "left_unlabeled": int((self.labels < 0).sum()),
                "pseudo_per_class": {str(c): int(n) for c, n in
                                     enumerate(np.bincount(self.labels[self.pseudo], minlength=num_classes))}}


def check_params(neighbours: int, min_confidence: float) -> None:
    if not isinstance(neighbours, int) or neighbours < 0:
        raise UsageError(f"--neighbours must be an integer >= 0 (0 = the classifier alone), got {neighbours!r}")
    if not (isinstance(min_confidence, (int, float)) and math.isfinite(min_confidence)
            and 0.0 < min_confidence <= 1.0):
        raise UsageError(f"--min-confidence must be in (0, 1], got {min_confidence!r}")


def smooth(probs: np.ndarray, z: np.ndarray, labels: np.ndarray, neighbours: int) -> np.ndarray:
    """Each row's class distribution averaged with its `neighbours` nearest rows in `z` (exact L2).

    Labeled rows (label >= 0) vote one-hot and keep their own one-hot distribution.
    """
    from sklearn.neighbors import NearestNeighbors

    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    lab = np.flatnonzero(labels >= 0)
    votes = probs.copy()
    votes[lab] = np.eye(probs.shape[1])[labels[lab]]
    if neighbours == 0 or len(z) < 2:
        return votes
    k = min(neighbours + 1, len(z))  # the row itself is its own nearest neighbour
    index = NearestNeighbors(n_neighbors=k).fit(np.asarray(z, np.float64))
    out = np.empty_like(votes)
    for a in range(0, len(z), _QUERY_CHUNK):
        _, idx = index.kneighbors(np.asarray(z[a:a + _QUERY_CHUNK], np.float64))
        out[a:a + len(idx)] = votes[idx].mean(axis=1)
    out[lab] = votes[lab]
    return out


def assign(smoothed: np.ndarray, labels: np.ndarray, min_confidence: float) -> PseudoLabels:
    labels = np.asarray(labels, np.int64)
    best = smoothed.argmax(axis=1)
    conf = smoothed[np.arange(len(best)), best]
    unlabeled = labels < 0
    keep = unlabeled & (conf >= min_confidence)
    out = labels.copy()
    out[keep] = best[keep]
    confidence = np.where(unlabeled, conf, 1.0).astype(np.float32)
    return PseudoLabels(out, confidence, keep)


def pseudo_label(train: Dataset, encode, classify, neighbours: int = DEFAULT_NEIGHBOURS,
                 min_confidence: float = DEFAULT_PSEUDO_LABEL_CONFIDENCE) -> PseudoLabels:
    """`encode(images) -> (mu, logvar)` and `classify(images) -> probabilities`, both batched."""
    check_params(neighbours, min_confidence)
    if not (train.labels < 0).any():
        raise DataError("the data has no unlabeled rows, so there is nothing to pseudo-label; pass a source with "
                        "unlabeled rows (e.g. 'mnist?labeled_per_class=100')")
    mu, _ = encode(train.images)
    probs = classify(train.images)
    return assign(smooth(probs, mu, train.labels, neighbours), train.labels, min_confidence)


def check_out(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory; pass a file name ending in .npz")
    if not path.endswith(".npz"):
        raise UsageError(f"--out {path} must end in .npz (numpy would add the suffix itself)")
    return path


def write_source(path: str, splits: DataSplits, result: PseudoLabels, meta: dict) -> None:
    """Write a data source (`npz:PATH`) atomically: x_train/y_train with the pseudo-labels, the source's
    test split unchanged, per-row `pseudo` and `confidence`, and `meta` (JSON) describing how it was made."""
    arrays = {"x_train": splits.train.images, "y_train": result.labels, "pseudo": result.pseudo,
              "confidence": result.confidence, "meta": np.array(json.dumps(meta, sort_keys=True))}
    if splits.test is not None:
        arrays["x_test"], arrays["y_test"] = splits.test.images, splits.test.labels
    with atomic_file(check_out(path)) as f:
        np.savez_compressed(f, **arrays)


def read_meta(path: str) -> dict | None:
    """The `meta` record of a pseudo-labeled npz, or None for any other npz."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"])) if "meta" in z.files else None


def make_pseudo_labeled_source(source: str, classifier_dir: str | None, out: str, model_path: str | None = None,
                               neighbours: int = DEFAULT_NEIGHBOURS,
                               min_confidence: float = DEFAULT_PSEUDO_LABEL_CONFIDENCE, seed: int = 0,
                               argv=None) -> dict:
    """Pseudo-label `source` with a classifier directory and a VAE directory (None or "bundled" = the shipped
    ones); write `out` (npz). Returns meta."""
    import time

    from vae_model import artifacts
    from vae_model.classifier import load_classifier
    from vae_model.data import load_source
    from vae_model.inference import BatchEncoder
    from vae_model.model_dir import ModelDir

    t0 = time.time()
    check_params(neighbours, min_confidence)
    check_out(out)  # before the work, not after it
    md = ModelDir.open(model_path)
    clf = load_classifier(classifier_dir)
    splits = load_source(source, seed=seed)
    shape = splits.train.image_shape
    for what, got in (("the VAE " + md.path, md.image_shape), ("the classifier " + clf.path, clf.image_shape)):
        if tuple(got) != shape:
            raise DataError(f"{source} has {shape[0]}x{shape[1]} images but {what} expects {got[0]}x{got[1]}; "
                            "use a model trained on images of this size")
    if md.conditional:
        raise UsageError(f"--model {md.path} is a conditional VAE, whose encoder needs the label it is asked to "
                         "find; pass an unconditional VAE trained on the unlabeled images")
    encoder = BatchEncoder(md.encoder, 2048)
    result = pseudo_label(splits.train, encoder, clf.probabilities, neighbours, min_confidence)
    meta = {"kind": "pseudo_labels", "source": source, "model": md.path, "model_id": md.model_id,
            "classifier": clf.path, "classifier_id": clf.meta.get("classifier_id"),
            "classifier_sha256": clf.meta.get("sha256"), "neighbours": neighbours,
            "min_confidence": min_confidence, "seed": seed, **result.summary(clf.num_classes),
            "seconds": round(time.time() - t0, 1), "command": artifacts.command_line(argv),
            "versions": artifacts.versions(), "created": artifacts.utc_now()}
    write_source(out, splits, result, meta)
    return meta
