"""Pseudo-labels for the unlabeled rows of a data source.

A classifier trained on the few labeled rows calls each unlabeled image; its class probabilities are then
averaged over the image's nearest neighbours in the VAE's latent space. The VAE was trained on every image,
labeled or not, so its latent neighbourhoods follow the classes of the unlabeled data too, and the average is
right more often than the classifier alone. The default threshold is low because for augmentation the coverage
of hard digits is worth more than the last errors (measured in benchmarks/low_data.py; README "Low-data
augmentation experiment").

With very few labels the classifier itself is weak, and its neighbours share its mistakes. Label spreading
over the same neighbour graph (`spread`) then carries the real labels along the unlabeled images' own latent
structure instead. Which labeler to trust is measured, not assumed: given labeled validation images, they join
the graph unlabeled and the labeler that gets most of them right is used.

The labeled rows keep their own labels and count as one-hot votes for their neighbours. Rows whose averaged
confidence stays below the threshold stay unlabeled (-1). Everything is batched: one encoder pass, one
classifier pass, one exact k-NN search in chunks, and sparse matrix products for the spreading.
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
LABELERS = ("neighbours", "classifier", "spread")  # see labeler_distributions; the order breaks full ties
# label spreading: measured on the 10-per-class augment run's round-1 pool (seed 0, conv VAE): alpha 0.9 / 0.99 /
# 0.999 labelled 94.8 / 96.5 / 95.8% of the unlabeled rows right (argmax), 50 or 100 iterations the same; the power
# 10 is the one value tried
SPREAD_ALPHA, SPREAD_ITERATIONS, SPREAD_SHARPEN = 0.99, 50, 10.0


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    labels: np.ndarray       # int64 (N,): the real label, a pseudo-label, or -1 (not confident enough)
    confidence: np.ndarray   # float32 (N,): averaged probability of `labels` (1.0 for real labels)
    pseudo: np.ndarray       # bool (N,): the label came from the classifier
    labeler: str = "neighbours"                 # which of LABELERS made them
    validation: dict[str, dict] | None = None  # each labeler's validation accuracy and log loss, when chosen

    def summary(self, num_classes: int) -> dict:
        real = (self.labels >= 0) & ~self.pseudo
        return {"rows": int(len(self.labels)), "real_labels": int(real.sum()), "labeler": self.labeler,
                "labeler_validation": self.validation,
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


def neighbour_index(z: np.ndarray, neighbours: int) -> np.ndarray:
    """(N, min(neighbours + 1, N)) indices of each row's nearest rows in `z` (exact L2), the row itself included."""
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours + 1, len(z))  # the row itself is its own nearest neighbour
    z = np.asarray(z, np.float64)
    index = NearestNeighbors(n_neighbors=k).fit(z)
    return np.concatenate([index.kneighbors(z[a:a + _QUERY_CHUNK])[1] for a in range(0, len(z), _QUERY_CHUNK)])


def _votes(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, np.float64)
    lab = np.flatnonzero(np.asarray(labels) >= 0)
    votes = probs.copy()
    votes[lab] = np.eye(probs.shape[1])[np.asarray(labels, np.int64)[lab]]
    return votes, lab


def smooth(probs: np.ndarray, z: np.ndarray, labels: np.ndarray, neighbours: int,
           index: np.ndarray | None = None) -> np.ndarray:
    """Each row's class distribution averaged with its `neighbours` nearest rows in `z` (exact L2; or `index`,
    from `neighbour_index`). Labeled rows (label >= 0) vote one-hot and keep their own one-hot distribution."""
    votes, lab = _votes(probs, labels)
    if neighbours == 0 or len(z) < 2:
        return votes
    idx = neighbour_index(z, neighbours) if index is None else index
    out = np.empty_like(votes)
    for a in range(0, len(idx), _QUERY_CHUNK):
        out[a:a + _QUERY_CHUNK] = votes[idx[a:a + _QUERY_CHUNK]].mean(axis=1)
    out[lab] = votes[lab]
    return out


def spread(index: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = SPREAD_ALPHA,
           iterations: int = SPREAD_ITERATIONS, sharpen: float = SPREAD_SHARPEN) -> np.ndarray:
    """Label spreading (Zhou et al. 2004) of the labeled rows over the symmetric k-NN graph `index`:
    F <- alpha S F + (1 - alpha) Y with S = D^-1/2 W D^-1/2, `iterations` times. The scores are balanced per
    class (each class's column sums to 1, so a class with more labeled rows does not flood the graph), normalized
    per row and raised to the power `sharpen` (spreading's scores are flat; the power makes them usable with the
    same confidence threshold). Rows the graph never reaches get the uniform distribution."""
    import scipy.sparse as sp

    n = len(index)
    labels = np.asarray(labels, np.int64)
    rows = np.repeat(np.arange(n), index.shape[1])
    w = sp.csr_matrix((np.ones(rows.size), (rows, index.ravel())), shape=(n, n))
    w = w + w.T
    w.setdiag(0)
    w.eliminate_zeros()
    w.data[:] = 1.0
    deg = np.asarray(w.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    s = (sp.diags(inv) @ w @ sp.diags(inv)).tocsr()
    y = np.zeros((n, num_classes))
    lab = np.flatnonzero(labels >= 0)
    y[lab, labels[lab]] = 1.0
    f = y.copy()
    for _ in range(iterations):
        f = alpha * (s @ f) + (1.0 - alpha) * y
    mass = f.sum(axis=0, keepdims=True)
    f = np.divide(f, mass, out=np.zeros_like(f), where=mass > 0)
    log = sharpen * np.log(np.maximum(f, 1e-300))
    p = np.exp(log - log.max(axis=1, keepdims=True))
    p[f.sum(axis=1) == 0] = 1.0  # unreached: uniform
    return p / p.sum(axis=1, keepdims=True)


def labeler_distributions(probs: np.ndarray, z: np.ndarray, labels: np.ndarray, neighbours: int,
                          labelers=LABELERS) -> dict[str, np.ndarray]:
    """Each named labeler's class distribution per row (labeled rows keep their one-hot label):

    - `classifier`: the classifier's probabilities alone;
    - `neighbours`: those averaged over the `neighbours` nearest latent rows (`smooth`);
    - `spread`: the mean of `neighbours` and of label spreading over the same k-NN graph (`spread`), which
      carries the few real labels along the unlabeled images' own latent structure.
    """
    unknown = [n for n in labelers if n not in LABELERS]
    if unknown or not labelers:
        raise UsageError(f"Expected labelers from {list(LABELERS)}. Received: labelers={list(labelers)}")
    votes, lab = _votes(probs, labels)
    out = {}
    if "classifier" in labelers:
        out["classifier"] = votes
    if "neighbours" in labelers or "spread" in labelers:
        index = neighbour_index(z, max(1, neighbours)) if len(z) >= 2 else None
        smoothed = smooth(probs, z, labels, neighbours, index)
        if "neighbours" in labelers:
            out["neighbours"] = smoothed
        if "spread" in labelers:
            fused = votes if index is None else (smoothed + spread(index, labels, probs.shape[1])) / 2
            fused[lab] = votes[lab]
            out["spread"] = fused
    return {n: out[n] for n in labelers}


def choose_labeler(distributions: dict[str, np.ndarray], val_rows: np.ndarray, val_labels: np.ndarray):
    """The labeler whose argmax is right on the most validation rows (rows of the graph whose labels were
    hidden from every labeler). A few validation images make accuracy coarse and ties common, so ties go to the
    lower log loss (mean -ln p of the true class, a proper score), then to the one listed first.
    Returns (name, {name: {"accuracy", "log_loss"}})."""
    val_labels = np.asarray(val_labels, np.int64)
    scores = {}
    for n, d in distributions.items():
        p = d[val_rows]
        true = np.maximum(p[np.arange(len(val_rows)), val_labels], 1e-12)
        scores[n] = {"accuracy": float((p.argmax(axis=1) == val_labels).mean()),
                     "log_loss": float(-np.log(true).mean())}
    order = {n: i for i, n in enumerate(distributions)}
    best = min(scores, key=lambda n: (-scores[n]["accuracy"], scores[n]["log_loss"], order[n]))
    return best, scores


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
                 min_confidence: float = DEFAULT_PSEUDO_LABEL_CONFIDENCE, labelers=("neighbours",),
                 validation: Dataset | None = None) -> PseudoLabels:
    """`encode(images) -> (mu, logvar)` and `classify(images) -> probabilities`, both batched.

    With several `labelers` and a labeled `validation` set, the validation images join the rows as unlabeled
    ones and the labeler that gets most of them right is used (`choose_labeler`); without, the first.
    """
    check_params(neighbours, min_confidence)
    if not (train.labels < 0).any():
        raise DataError("the data has no unlabeled rows, so there is nothing to pseudo-label; pass a source with "
                        "unlabeled rows (e.g. 'mnist?labeled_per_class=100')")
    n = len(train)
    val = validation.labeled if validation is not None and len(labelers) > 1 else None
    images, labels = train.images, train.labels
    if val is not None and len(val):
        images = np.concatenate([images, val.images])
        labels = np.concatenate([labels, np.full(len(val), -1, np.int64)])
    mu, _ = encode(images)
    probs = classify(images)
    dists = labeler_distributions(probs, mu, labels, neighbours, labelers)
    if val is not None and len(val):
        name, acc = choose_labeler(dists, np.arange(n, len(labels)), val.labels)
    else:
        name, acc = next(iter(dists)), None
    r = assign(dists[name][:n], train.labels, min_confidence)
    return PseudoLabels(r.labels, r.confidence, r.pseudo, name, acc)


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
                               argv=None, labelers=("neighbours",), validation: str | None = None) -> dict:
    """Pseudo-label `source` with a classifier directory and a VAE directory (None or "bundled" = the shipped
    ones); write `out` (npz). With several `labelers`, the one chosen on the labeled training rows of the source
    `validation` (see `pseudo_label`). Returns meta."""
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
    val = None
    if validation is not None:
        val = load_source(validation, seed=seed).train.labeled
        if val.image_shape != shape or not len(val):
            raise DataError(f"validation {validation} must hold labeled {shape[0]}x{shape[1]} images like {source}")
    result = pseudo_label(splits.train, encoder, clf.probabilities, neighbours, min_confidence, labelers, val)
    meta = {"kind": "pseudo_labels", "source": source, "model": md.path, "model_id": md.model_id,
            "classifier": clf.path, "classifier_id": clf.meta.get("classifier_id"),
            "classifier_sha256": clf.meta.get("sha256"), "neighbours": neighbours,
            "min_confidence": min_confidence, "seed": seed, "labelers": list(labelers),
            "validation": validation, **result.summary(clf.num_classes),
            "seconds": round(time.time() - t0, 1), "command": artifacts.command_line(argv),
            "versions": artifacts.versions(), "created": artifacts.utc_now()}
    write_source(out, splits, result, meta)
    return meta
