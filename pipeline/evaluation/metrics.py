"""The report sections measured without training: counts, label fidelity, novelty and diversity.

Each section is a JSON-ready dict; fidelity and novelty also return the arrays their pictures are drawn from.
Distances in the sections are divided by 255, i.e. L2 over pixels scaled to [0, 1].
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.evaluation.distances import mean_pairwise_distance, nearest_neighbours
from vae_model.errors import DataError

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
UNLABELED = "the records are unlabeled (label -1, prior sampler)"


@dataclasses.dataclass
class SyntheticSample:
    """What was read from the shards: counts and duplicate counts over every record, plus a seeded subsample of
    the rows (images, labels, latents) kept in memory for everything else."""

    images: np.ndarray
    labels: np.ndarray
    latents: np.ndarray
    counts: dict[int, int]
    total_read: int
    exact_dups_of_real: int
    repeated: int
    fmt: str


@dataclasses.dataclass
class RealSplits:
    """The real data compared against; `holdout_note` is set when `test` was held out of the training split."""

    source: str
    data: object  # the loaded vae_model.data Source, for its description
    train: object  # vae_model.data.Dataset
    test: object
    holdout_note: str | None = None


def counts_section(manifest: dict, syn: SyntheticSample) -> dict:
    shards = {str(c): n for c, n in sorted(syn.counts.items())}
    listed = {str(k): int(v) for k, v in manifest.get("per_class", {}).items()}
    problems = []
    for c in sorted(set(shards) | set(listed), key=int):
        if shards.get(c, 0) != listed.get(c, 0):
            problems.append(f"class {c}: {shards.get(c, 0)} records in the shards, manifest says {listed.get(c, 0)}")
    if syn.total_read != manifest["total"]:
        problems.append(f"{syn.total_read} records in the shards, manifest says {manifest['total']}")
    return {"per_class": shards, "manifest_per_class": listed, "total": syn.total_read,
            "manifest_total": int(manifest["total"]), "read_from": syn.fmt, "match": not problems,
            "problems": problems}


def fidelity_section(clf, syn: SyntheticSample, test) -> tuple[dict, dict]:
    """(section, extras for the pictures). `clf` is a vae_model.classifier Classifier (probabilities, accuracy,
    num_classes)."""
    probs = clf.probabilities(syn.images)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    lab = syn.labels >= 0
    out = {"classifier_accuracy_on_real_test": clf.accuracy(test.images, test.labels),
           "real_test_images": len(test)}
    extras = {"probs": probs, "pred": pred}
    if not lab.any():
        shares = np.bincount(pred, minlength=clf.num_classes) / len(pred)
        out.update(applicable=False, reason=f"{UNLABELED}: there is no intended label to check",
                   images=int(len(pred)), mean_confidence=float(conf.mean()),
                   predicted_class_share={str(c): float(s) for c, s in enumerate(shares)})
        return out, extras
    y = syn.labels[lab]
    if y.max() >= clf.num_classes:
        raise DataError(f"records have label {y.max()} but the classifier knows {clf.num_classes} classes; "
                        "pass a classifier trained on these classes with --classifier")
    p_label = probs[np.flatnonzero(lab), y]
    hit = pred[lab] == y
    per_class = {}
    for c in np.unique(y):
        m = y == c
        per_class[str(int(c))] = {"images": int(m.sum()), "fidelity": float(hit[m].mean()),
                                  "mean_prob_label": float(p_label[m].mean()),
                                  "mean_confidence": float(conf[lab][m].mean())}
    confusion = np.zeros((clf.num_classes, clf.num_classes), np.int64)
    np.add.at(confusion, (y, pred[lab]), 1)
    out.update(applicable=True, images=int(lab.sum()), fidelity=float(hit.mean()),
               mean_prob_label=float(p_label.mean()), mean_confidence=float(conf[lab].mean()),
               per_class=per_class, confusion={"rows_intended_cols_predicted": confusion.tolist()})
    extras["p_label"] = np.where(lab, probs[np.arange(len(pred)), np.maximum(syn.labels, 0)], np.nan)
    return out, extras


def quantiles(d: np.ndarray) -> dict:
    return {f"q{int(round(q * 100)):02d}": float(np.quantile(d, q)) for q in QUANTILES} | {"mean": float(d.mean())}


def novelty_section(syn: SyntheticSample, real_train, test, queries: int, baseline: int,
                    threshold: float | None, quantile: float, seed: int, log) -> tuple[dict, dict]:
    """Nearest real training image of `queries` synthetic and `baseline` real test images (seeded subsamples).
    `threshold` None: the near-duplicate distance is the baseline's `quantile`. Returns (section, extras)."""
    rng = np.random.default_rng([seed, 11])
    qi = np.sort(rng.choice(len(syn.images), min(queries, len(syn.images)), replace=False))
    bi = np.sort(rng.choice(len(test), min(baseline, len(test)), replace=False))
    log(f"novelty: exact nearest neighbours of {len(qi):,} synthetic and {len(bi):,} real test images among "
        f"{len(real_train):,} real training images ...")
    syn_d, syn_j = nearest_neighbours(syn.images[qi], real_train.images)
    base_d, _ = nearest_neighbours(test.images[bi], real_train.images)
    syn_d, base_d = syn_d / 255.0, base_d / 255.0
    if threshold is None:
        threshold = float(np.quantile(base_d, quantile))
        how = (f"the {quantile:.0%} quantile of the baseline: {quantile:.0%} of real test images "
               "are this close to a training image")
    else:
        threshold, how = float(threshold), "given"
    out = {
        "units": "L2 distance over pixels scaled to [0, 1]",
        "reference": f"{len(real_train):,} real training images",
        "synthetic_queries": int(len(qi)), "baseline_queries": int(len(bi)),
        "exact_duplicates": int(syn.exact_dups_of_real),
        "exact_duplicates_scope": f"all {syn.total_read:,} records, by image hash",
        "exact_duplicate_rate": syn.exact_dups_of_real / syn.total_read,
        "exact_duplicates_in_queries": int((syn_d == 0).sum()),
        "repeated_synthetic_images": int(syn.repeated),
        "near_duplicate_threshold": threshold, "near_duplicate_threshold_rule": how,
        "near_duplicate_rate": float((syn_d < threshold).mean()),
        "baseline_near_duplicate_rate": float((base_d < threshold).mean()),
        "synthetic": quantiles(syn_d), "baseline": quantiles(base_d),
    }
    syn_y, base_y = syn.labels[qi], test.labels[bi]
    per_class = {}
    for c in sorted(int(c) for c in np.unique(syn_y) if c >= 0):
        s, b = syn_d[syn_y == c], base_d[base_y == c]
        per_class[str(c)] = {"synthetic_median": float(np.median(s)), "baseline_median": float(np.median(b))
                             if len(b) else None, "near_duplicate_rate": float((s < threshold).mean()),
                             "baseline_near_duplicate_rate": float((b < threshold).mean()) if len(b) else None,
                             "synthetic_queries": int(len(s)), "baseline_queries": int(len(b))}
    if per_class:
        out["per_class"] = per_class
    order = np.argsort(syn_d, kind="stable")[:10]
    extras = {"syn_d": syn_d, "base_d": base_d, "threshold": threshold,
              "closest": (syn.images[qi][order], real_train.images[syn_j[order]], syn_d[order],
                          syn.labels[qi][order])}
    return out, extras


def diversity_section(syn: SyntheticSample, real_train, per_class: int, seed: int) -> dict:
    """Mean pairwise distance of at most `per_class` synthetic and real images per class (pooled: twice as many,
    labels ignored); ratio = synthetic / real."""
    rng = np.random.default_rng([seed, 13])

    def compare(syn_images, real_images, n):
        # the synthetic subsample is drawn before the real one, always: the rng order fixes the numbers
        pick = [x if len(x) <= n else x[np.sort(rng.choice(len(x), n, replace=False))]
                for x in (syn_images, real_images)]
        s, r = (mean_pairwise_distance(x) for x in pick)
        return {"synthetic": s / 255 if s is not None else None, "real": r / 255 if r is not None else None,
                "ratio": s / r if s and r else None, "images": int(min(n, len(syn_images)))}

    out = {"units": "mean pairwise L2 distance over pixels scaled to [0, 1]", "per_class_limit": per_class}
    out["pooled"] = compare(syn.images, real_train.images, 2 * per_class)
    classes = sorted(int(c) for c in np.unique(syn.labels) if c >= 0)
    if not classes:
        out.update(applicable=False, reason="the records are unlabeled: only the pooled diversity is measured")
        return out
    rows = {str(c): compare(syn.images[syn.labels == c], real_train.images[real_train.labels == c], per_class)
            for c in classes}
    ratios = [v["ratio"] for v in rows.values() if v["ratio"] is not None]
    syn_means = [v["synthetic"] for v in rows.values() if v["synthetic"] is not None]
    real_means = [v["real"] for v in rows.values() if v["real"] is not None]
    out.update(applicable=True, per_class=rows,
               synthetic_mean=float(np.mean(syn_means)) if syn_means else None,
               real_mean=float(np.mean(real_means)) if real_means else None,
               mean_ratio=float(np.mean(ratios)) if ratios else None)
    return out
