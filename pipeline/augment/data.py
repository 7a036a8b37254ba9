"""The source, read once into train-only working files; its test split read only for the final scoring.

Every step before scoring reads DIR/input/train.npz or DIR/splits/*.npz, which hold training rows only (no
x_test / y_test), so no test image can reach the VAE, the classifiers, the pseudo-labels or the shards.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from vae_model.data import Dataset, load_source
from vae_model.errors import DataError, UsageError

TRAIN = "input/train.npz"          # every training row: images, labels (-1 = unlabeled), source row index
POOL = "splits/pool.npz"           # labeled rows for A (kept) + unlabeled rows; validation rows removed
LABELED = "splits/labeled.npz"     # the labeled rows A and B train on
VAL = "splits/val.npz"             # the validation rows: every choice is made on them


def source_inputs(source: str) -> dict:
    """What identifies a source's bytes without reading it: the files its path names (size, mtime)."""
    from vae_model.data.source import parse_source

    kind, path, options = parse_source(source)
    found = {}
    for p in filter(None, [path, options.get("test")]):
        for part in p.split(","):
            if os.path.isfile(part):
                st = os.stat(part)
                found[os.path.abspath(part)] = [st.st_size, st.st_mtime_ns]
            elif os.path.isdir(part):
                for folder, _, names in os.walk(part):
                    for n in sorted(names):
                        st = os.stat(os.path.join(folder, n))
                        found[os.path.join(os.path.abspath(folder), n)] = [st.st_size, st.st_mtime_ns]
    return {"kind": kind, "options": options, "files": found}


def read_training_rows(source: str, seed: int) -> tuple[Dataset, dict]:
    """The source's training rows and a description (no test images are kept; only whether there is a test
    split is noted). DataError for a source unfit for augment."""
    splits = load_source(source, seed=seed)
    train = splits.train
    h, w = train.image_shape
    labels = train.labels[train.labels >= 0]
    if not len(labels):
        raise DataError(f"{source} has no labeled training rows; augment needs a few labels (e.g. "
                        "'mnist?labeled_per_class=100' or a CSV with some label cells filled)")
    if len(labels) == len(train):
        raise DataError(f"{source} has no unlabeled training rows; augment learns from unlabeled images (use "
                        "?labeled_per_class=K, leave label cells empty, or pass ?unlabeled_value=V)")
    classes = sorted(int(c) for c in np.unique(labels))
    if len(classes) < 2:
        raise DataError(f"{source} has labels of one class only ({classes[0]}); a classifier needs two or more")
    counts = {c: int((labels == c).sum()) for c in classes}
    few = [c for c, n in counts.items() if n < 2]
    if few:
        raise DataError(f"{source}: class {few[0]} has {counts[few[0]]} labeled row; augment holds out validation "
                        "rows per class and needs at least 2 labels per class (label more rows of it)")
    if h != w or h % 4:
        raise DataError(f"{source} has {h}x{w} images; augment's conv VAE needs square images whose side is a "
                        "multiple of 4 (pad or resize them)")
    info = {"rows": len(train), "labeled": int(len(labels)), "unlabeled": int(len(train) - len(labels)),
            "classes": classes, "image_shape": [h, w], "has_test": splits.test is not None,
            "origin": splits.origin}
    return train, info


def write_npz(path: str, images: np.ndarray, labels: np.ndarray, **extra) -> None:
    np.savez(path, x_train=images, y_train=labels.astype(np.int64), **extra)


def read_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def content_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row indices (into the training rows) of the validation split: a seeded `fraction` of each class's
    labeled rows, at least one, and never all of a class (each keeps at least one row to train on)."""
    rng = np.random.default_rng([seed, 16])
    picked = []
    for c in np.unique(labels[labels >= 0]):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) < 2:
            raise DataError(f"class {c} has {len(rows)} labeled row; augment holds out validation rows per class "
                            "and needs at least 2 labels per class")
        k = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
        picked.append(rows[:k])
    return np.sort(np.concatenate(picked))


def test_split(source: str, seed: int) -> Dataset | None:
    """The labeled test rows, for the final scoring only."""
    test = load_source(source, seed=seed).test
    if test is None:
        return None
    test = test.labeled
    return test if len(test) else None


def truth_source(source: str) -> str | None:
    """`source` without its `labeled_per_class` option (the labels it hides), or None when it has none."""
    from vae_model.data.source import parse_source

    body, _, query = source.partition("?")
    if "labeled_per_class" not in parse_source(source)[2]:
        return None
    rest = "&".join(p for p in query.split("&") if p and not p.startswith("labeled_per_class="))
    return body + (f"?{rest}" if rest else "")


def hidden_truth(source: str, seed: int, rows: np.ndarray) -> np.ndarray | None:
    """The true labels of training `rows` whose labels the source hides with `labeled_per_class` (read only for
    the final pseudo-label precision; never by a step that makes a choice). None when the truth is unknown."""
    full = truth_source(source)
    return None if full is None else load_source(full, seed=seed).train.labels[rows]


def check_source_text(source: str) -> None:
    from vae_model.data.source import parse_source

    if not isinstance(source, str) or not source.strip():
        raise UsageError("--data is empty; pass a source such as 'mnist?labeled_per_class=100'")
    parse_source(source)
