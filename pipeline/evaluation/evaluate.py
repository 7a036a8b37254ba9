"""`vae-augment evaluate`: how good is a generated dataset, measured against real data.

Metrics (all written to report.json, and with pictures to a self-contained report.html by pipeline/report.py):

- counts: per-class record counts read from the shards, checked against the manifest.
- label fidelity: share of synthetic images the reference classifier assigns to their intended label, overall
  and per class, with the mean probability of the intended label and the mean top-class confidence.
- CAS, Classification Accuracy Score (Ravuri & Vinyals, 2019): a fresh classifier of the reference architecture
  and training config trained only on the synthetic records (streamed from the TFRecord shards), scored on the
  real test set; beside it the ceiling, the same training on the real training set. The ceiling recorded in
  classifier.json is reused when it was measured on the same source with the same config; otherwise it is trained.
- novelty: each synthetic image's exact nearest-neighbour L2 distance to the real training set (distance to
  closest record), against the baseline of real test images to the real training set. Exact duplicates of real
  training images are counted over the whole dataset by hashing; a near-duplicate is closer than a threshold,
  by default the 1st percentile of the baseline (so about 1% of genuinely new real digits fall below it).
- diversity: mean within-class pairwise L2 distance, synthetic vs real training images.

Distances are L2 over pixels scaled to [0, 1] (a 28x28 digit pair is typically 5..10 apart). They are computed
from uint8 pixels in float64 as ||a||^2 + ||b||^2 - 2ab: every term is an integer below 2^53, so the squared
distances are exact (a copy has distance exactly 0), in chunks of at most `_CHUNK_Q` x `_CHUNK_R` so memory stays
bounded whatever the dataset size.

Cost knobs (defaults sized for 2 CPU cores, about 2 minutes for 20,000 records): `max_images` synthetic records
read for fidelity, diversity and pictures (a seeded uniform subsample); `novelty_images` / `baseline_images`
queries against the full real training set; `diversity_per_class` images per class; `cas_epochs` /
`cas_max_steps` bound the CAS training (0 epochs skips CAS).
"""
from __future__ import annotations

import hashlib
import math
import os
import time

import numpy as np

from vae_model.errors import DataError, ModelError, UsageError

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_CHUNK_Q, _CHUNK_R = 1024, 8192
_MAX_BASELINE_HOLDOUT = 10_000


# ---------------------------------------------------------------------------------------------- distances

def _flat64(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1).astype(np.float64)


def _sq_norms(flat: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", flat, flat)


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray, chunk_q: int = _CHUNK_Q,
                       chunk_r: int = _CHUNK_R) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 nearest neighbour of each query among `reference` (uint8 images, any shape (N, ...)).

    Returns (distance float64 (q,), index int64 (q,)) in the images' own units (0..255 pixels). Squared distances
    are ||a||^2 + ||b||^2 - 2ab in float64, exact for integer pixels; ties go to the lowest reference index.
    """
    q, r = len(queries), len(reference)
    if r == 0:
        raise DataError("the real training set is empty; nearest-neighbour distances need real images")
    best = np.full(q, np.inf)
    arg = np.zeros(q, np.int64)
    queries = np.asarray(queries).reshape(q, -1)
    reference = np.asarray(reference).reshape(r, -1)
    for rs in range(0, r, chunk_r):
        ref = _flat64(reference[rs:rs + chunk_r])
        ref_sq = _sq_norms(ref)
        for qs in range(0, q, chunk_q):
            qry = _flat64(queries[qs:qs + chunk_q])
            d2 = _sq_norms(qry)[:, None] + ref_sq[None, :] - 2.0 * (qry @ ref.T)
            j = d2.argmin(axis=1)
            m = d2[np.arange(len(j)), j]
            better = m < best[qs:qs + len(j)]
            best[qs:qs + len(j)][better] = m[better]
            arg[qs:qs + len(j)][better] = j[better] + rs
    return np.sqrt(np.maximum(best, 0.0)), arg


def mean_pairwise_distance(images: np.ndarray) -> float | None:
    """Mean L2 distance over all unordered pairs (exact float64, pixel units); None for fewer than 2 images."""
    n = len(images)
    if n < 2:
        return None
    flat = _flat64(images)
    sq = _sq_norms(flat)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (flat @ flat.T)
    iu = np.triu_indices(n, 1)
    return float(np.sqrt(np.maximum(d2[iu], 0.0)).mean())


def _digests(images: np.ndarray) -> list[bytes]:
    flat = np.ascontiguousarray(np.asarray(images).reshape(len(images), -1))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


# ---------------------------------------------------------------------------------------------- reading

class _Synthetic:
    """Counts over every record, duplicate counts by hashing, and a seeded subsample of rows kept in memory."""

    def __init__(self, images, labels, latents, counts, total_read, exact_dups_of_real, repeated, fmt):
        self.images, self.labels, self.latents = images, labels, latents
        self.counts, self.total_read, self.fmt = counts, total_read, fmt
        self.exact_dups_of_real, self.repeated = exact_dups_of_real, repeated


def _parquet_batches(path: str, h: int, w: int):
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            table = pq.read_table(f, columns=["label", "image", "latent"])
    except Exception as e:  # noqa: BLE001 - any unreadable shard is a data problem
        raise DataError(f"{path}: cannot read parquet shard ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                        "run `vae-augment verify` on the output directory") from None
    n = table.num_rows
    labels = table.column("label").to_numpy().astype(np.int64)
    col = table.column("image").combine_chunks()
    offsets = np.frombuffer(col.buffers()[1], np.int32, n + 1, col.offset * 4)
    if n and (offsets[-1] - offsets[0]) != n * h * w:
        raise DataError(f"{path}: images are not all {h}x{w} bytes; run `vae-augment verify` on the output directory")
    images = np.frombuffer(col.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].reshape(n, h, w)
    lat = table.column("latent").combine_chunks()
    values = lat.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    latents = values.reshape(n, -1) if n and values.size % n == 0 else np.zeros((n, 0), np.float32)
    yield images, labels, latents


def _tfrecord_batches(path: str, h: int, w: int):
    from pipeline.dataset.verify import read_shard

    try:
        for b in read_shard(path, "tfrecord", h, w):
            yield b.images, b.labels, b.latents
    except ValueError as e:
        raise DataError(f"{path}: unreadable TFRecord shard ({str(e).splitlines()[0][:160]}); run `vae-augment "
                        "verify` on the output directory") from None


def read_synthetic(out_dir: str, manifest: dict, max_images: int, seed: int, real_digests: set[bytes]) -> _Synthetic:
    from pipeline.dataset.readers import shard_paths

    fmt = "parquet" if "parquet" in manifest.get("formats", []) else "tfrecord"
    h, w = int(manifest["height"]), int(manifest["width"])
    total = int(manifest["total"])
    keep = np.arange(total) if total <= max_images else np.sort(
        np.random.default_rng([seed, 7]).choice(total, max_images, replace=False))
    reader = _parquet_batches if fmt == "parquet" else _tfrecord_batches
    counts: dict[int, int] = {}
    imgs, labs, lats = [], [], []
    seen: set[bytes] = set()
    pos = dups = repeated = 0
    for path in shard_paths(out_dir, fmt, manifest):
        for images, labels, latents in reader(path, h, w):
            n = len(labels)
            for c, k in zip(*np.unique(labels, return_counts=True)):
                counts[int(c)] = counts.get(int(c), 0) + int(k)
            for d in _digests(images):
                if d in real_digests:
                    dups += 1
                if d in seen:
                    repeated += 1
                seen.add(d)
            lo, hi = np.searchsorted(keep, [pos, pos + n])
            sel = keep[lo:hi] - pos
            imgs.append(images[sel].copy())
            labs.append(labels[sel])
            lats.append(latents[sel])
            pos += n
    if not pos:
        raise DataError(f"{out_dir} holds no records; generate some first")
    d = max((x.shape[1] for x in lats), default=0)
    lats = [x if x.shape[1] == d else np.zeros((len(x), d), np.float32) for x in lats]
    return _Synthetic(np.concatenate(imgs), np.concatenate(labs), np.concatenate(lats), counts, pos, dups,
                      repeated, fmt)


def _real_splits(real_source: str, seed: int):
    """(source splits, labeled train, labeled test, note). Without a test split, a seeded holdout of train."""
    from vae_model.data import Dataset, load_source

    real = load_source(real_source)
    train = real.train
    note = None
    if real.test is not None and len(real.test.labeled):
        test = real.test.labeled
    else:
        labeled = np.flatnonzero(train.labels >= 0)
        if len(labeled) < 20:
            raise DataError(f"real data {real_source} has {len(labeled)} labeled rows and no test split; CAS, "
                            "fidelity context and the novelty baseline need labeled real images")
        n_test = min(_MAX_BASELINE_HOLDOUT, len(labeled) // 6)
        held = np.sort(np.random.default_rng([seed, 3]).choice(labeled, n_test, replace=False))
        mask = np.ones(len(train), bool)
        mask[held] = False
        test = train.take(held)
        train = Dataset(train.images[mask], train.labels[mask])
        note = (f"{real_source} has no labeled test split: {n_test} labeled training rows were held out as the "
                "real test set (CAS, ceiling, baseline) and not used as training data")
    return real, train, test, note


# ---------------------------------------------------------------------------------------------- metrics

def _counts_section(manifest: dict, syn: _Synthetic) -> dict:
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


def _fidelity(clf, syn: _Synthetic, test) -> tuple[dict, dict]:
    """(section, extras for pictures)."""
    probs = clf.probabilities(syn.images)
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    lab = syn.labels >= 0
    out = {"classifier_accuracy_on_real_test": clf.accuracy(test.images, test.labels),
           "real_test_images": len(test)}
    extras = {"probs": probs, "pred": pred}
    if not lab.any():
        shares = np.bincount(pred, minlength=clf.num_classes) / len(pred)
        out.update(applicable=False, reason="the records are unlabeled (label -1, prior sampler): there is no "
                   "intended label to check", images=int(len(pred)), mean_confidence=float(conf.mean()),
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


def _cas_config(clf, cas_epochs, cas_max_steps):
    from vae_model.classifier import classifier_config_from_dict

    try:
        cfg = classifier_config_from_dict(clf.meta["config"])
    except Exception as e:  # noqa: BLE001 - an old or edited classifier.json
        raise ModelError(f"classifier {clf.path}: its classifier.json config is not usable ({e}); retrain it with "
                         "`vae-augment train-classifier`") from None
    changes = {"validation_split": 0.0}
    if cas_epochs is not None:
        changes["epochs"] = cas_epochs
    if cas_max_steps is not None:
        changes["max_steps"] = cas_max_steps
    return cfg.replace_train(**changes)


def _cas(out_dir, manifest, syn: _Synthetic, clf, cfg, real_source, real_train, test, test_is_holdout, log,
         verbose) -> dict:
    import dataclasses

    from pipeline.dataset.readers import load_parquet, tfrecord_dataset
    from vae_model.classifier import evaluate_accuracy, train_on_arrays, train_on_dataset

    classes = sorted(c for c in syn.counts if c >= 0)
    if not classes:
        return {"applicable": False, "reason": "the records are unlabeled (label -1, prior sampler): a classifier "
                                               "cannot be trained on them"}
    if max(classes) >= cfg.model.num_classes:
        raise DataError(f"records have label {max(classes)} but the reference architecture has "
                        f"{cfg.model.num_classes} classes; pass a matching --classifier")
    rows = sum(syn.counts[c] for c in classes)
    real_classes = sorted(int(c) for c in np.unique(test.labels))
    restricted = classes != real_classes
    if restricted:
        keep_test = np.isin(test.labels, classes)
        test = test.take(np.flatnonzero(keep_test))
        real_train = real_train.take(np.flatnonzero(np.isin(real_train.labels, classes)))
        if not len(test):
            return {"applicable": False, "reason": f"the real test set has no images of classes {classes}"}
    h, w = int(manifest["height"]), int(manifest["width"])
    t0 = time.time()
    if "tfrecord" in manifest.get("formats", []):
        ds = tfrecord_dataset(out_dir).filter(lambda x, y: y >= 0)
        source = "tfrecord shards (streamed)"
        log(f"CAS: training the reference architecture on {rows:,} synthetic records ...")
        model, info = train_on_dataset(ds, rows, (h, w), cfg, verbose=verbose)
    else:
        images, labels = load_parquet(out_dir)
        source = "parquet shards (in memory; no tfrecord shards were written)"
        log(f"CAS: training the reference architecture on {rows:,} synthetic records ...")
        model, info = train_on_arrays(images, labels, cfg, verbose=verbose)
    cas = evaluate_accuracy(model, test.images, test.labels)
    cas_seconds = time.time() - t0
    out = {"applicable": True, "cas": cas, "synthetic_rows": rows, "read_from": source, "epochs": info["epochs"],
           "steps": info["steps"], "batch_size": cfg.train.batch_size, "train_seconds": round(cas_seconds, 1),
           "test_images": len(test), "classes": classes, "config": cfg.to_dict(), "real_source": real_source}
    if restricted:
        out["note"] = (f"the records hold classes {classes} only: CAS and the ceiling are scored on the real test "
                       "images of these classes, and the ceiling is trained on the real images of these classes")
    rec = clf.meta
    recorded = rec.get("metrics", {}).get("test", {})
    same = (rec.get("data", {}).get("source") == real_source and not restricted and not test_is_holdout
            and rec.get("config", {}).get("model") == dataclasses.asdict(cfg.model)
            and rec.get("config", {}).get("train") == dataclasses.asdict(cfg.train)
            and recorded.get("images") == len(test) and "accuracy" in recorded)
    if same:
        out.update(ceiling=float(recorded["accuracy"]), ceiling_source=(
            f"recorded in {clf.path}/classifier.json: the same architecture and training config on the same real "
            f"source ({real_source})"), ceiling_steps=rec.get("steps"))
    else:
        log(f"CAS ceiling: training the same architecture on {int((real_train.labels >= 0).sum()):,} real images ...")
        t1 = time.time()
        model, info = train_on_arrays(real_train.images, real_train.labels, cfg, verbose=verbose)
        out.update(ceiling=evaluate_accuracy(model, test.images, test.labels),
                   ceiling_source=f"trained now on the real training set of {real_source}",
                   ceiling_steps=info["steps"], ceiling_seconds=round(time.time() - t1, 1))
    out["gap"] = out["ceiling"] - out["cas"]
    out["ratio"] = out["cas"] / out["ceiling"] if out["ceiling"] else None
    return out


def _quantiles(d: np.ndarray) -> dict:
    return {f"q{int(round(q * 100)):02d}": float(np.quantile(d, q)) for q in QUANTILES} | {"mean": float(d.mean())}


def _novelty(syn: _Synthetic, real_train, test, novelty_images, baseline_images, near_dup_threshold,
             near_dup_quantile, seed, log) -> tuple[dict, dict]:
    rng = np.random.default_rng([seed, 11])
    qi = np.sort(rng.choice(len(syn.images), min(novelty_images, len(syn.images)), replace=False))
    bi = np.sort(rng.choice(len(test), min(baseline_images, len(test)), replace=False))
    log(f"novelty: exact nearest neighbours of {len(qi):,} synthetic and {len(bi):,} real test images among "
        f"{len(real_train):,} real training images ...")
    syn_d, syn_j = nearest_neighbours(syn.images[qi], real_train.images)
    base_d, _ = nearest_neighbours(test.images[bi], real_train.images)
    syn_d, base_d = syn_d / 255.0, base_d / 255.0
    if near_dup_threshold is None:
        threshold = float(np.quantile(base_d, near_dup_quantile))
        how = (f"the {near_dup_quantile:.0%} quantile of the baseline: {near_dup_quantile:.0%} of real test images "
               "are this close to a training image")
    else:
        threshold, how = float(near_dup_threshold), "given"
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
        "synthetic": _quantiles(syn_d), "baseline": _quantiles(base_d),
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


def _diversity(syn: _Synthetic, real_train, per_class: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 13])

    def pick(images, n):
        return images if len(images) <= n else images[np.sort(rng.choice(len(images), n, replace=False))]

    out = {"units": "mean pairwise L2 distance over pixels scaled to [0, 1]", "per_class_limit": per_class}
    pooled_n = 2 * per_class
    s = mean_pairwise_distance(pick(syn.images, pooled_n))
    r = mean_pairwise_distance(pick(real_train.images, pooled_n))
    out["pooled"] = {"synthetic": s / 255 if s is not None else None, "real": r / 255 if r is not None else None,
                     "ratio": s / r if s and r else None, "images": int(min(pooled_n, len(syn.images)))}
    classes = sorted(int(c) for c in np.unique(syn.labels) if c >= 0)
    if not classes:
        out.update(applicable=False, reason="the records are unlabeled: only the pooled diversity is measured")
        return out
    rows = {}
    for c in classes:
        s = mean_pairwise_distance(pick(syn.images[syn.labels == c], per_class))
        r = mean_pairwise_distance(pick(real_train.images[real_train.labels == c], per_class))
        rows[str(c)] = {"synthetic": s / 255 if s is not None else None, "real": r / 255 if r is not None else None,
                        "ratio": s / r if s and r else None,
                        "images": int(min(per_class, int((syn.labels == c).sum())))}
    ratios = [v["ratio"] for v in rows.values() if v["ratio"] is not None]
    syn_means = [v["synthetic"] for v in rows.values() if v["synthetic"] is not None]
    real_means = [v["real"] for v in rows.values() if v["real"] is not None]
    out.update(applicable=True, per_class=rows,
               synthetic_mean=float(np.mean(syn_means)) if syn_means else None,
               real_mean=float(np.mean(real_means)) if real_means else None,
               mean_ratio=float(np.mean(ratios)) if ratios else None)
    return out


# ---------------------------------------------------------------------------------------------- entry point

def _check_positive(name, value, allow_zero=False):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
        raise UsageError(f"{name} must be an integer >= {0 if allow_zero else 1}, got {value!r}")


def check_report_dir(report_dir: str, out_dir: str | None = None) -> str:
    """The report directory must be new, empty, or an earlier report (it is replaced); never other data."""
    report_dir = os.path.abspath(report_dir)
    if out_dir and "://" not in out_dir and report_dir == os.path.abspath(out_dir):
        raise UsageError(f"--report {report_dir} is the dataset itself; choose a separate directory")
    if os.path.exists(report_dir):
        if not os.path.isdir(report_dir):
            raise UsageError(f"--report {report_dir} is a file; give a directory path")
        if os.listdir(report_dir) and not os.path.isfile(os.path.join(report_dir, "report.json")):
            raise UsageError(f"--report {report_dir} exists and is not an earlier report; choose a new or empty "
                             "directory (an earlier report directory is replaced)")
    return report_dir


def evaluate(out_dir: str, real_source: str = "mnist", classifier_dir: str | None = None,
             report_dir: str | None = None, cas_epochs: int | None = None, cas_max_steps: int | None = None,
             max_images: int = 20_000, novelty_images: int = 5_000, baseline_images: int = 5_000,
             diversity_per_class: int = 500, near_dup_threshold: float | None = None,
             near_dup_quantile: float = 0.01, seed: int = 0, argv=None, log=None, verbose: int | str = 0) -> dict:
    """Evaluate a generated dataset against real data; write report.json + report.html when `report_dir` is given.

    `classifier_dir`: the reference classifier (None = bundled MNIST one). `cas_epochs`: epochs of the CAS
    training over the synthetic records (None = the classifier's config, 0 = skip CAS); `cas_max_steps` caps it.
    Returns the report dict.
    """
    from pipeline.dataset.readers import read_manifest
    from vae_model import artifacts
    from vae_model.classifier import bundled_classifier_dir, load_classifier

    log = log or (lambda msg: None)
    for name, value in (("max_images", max_images), ("novelty_images", novelty_images),
                        ("baseline_images", baseline_images), ("diversity_per_class", diversity_per_class)):
        _check_positive(name, value)
    _check_positive("cas_epochs", cas_epochs, allow_zero=True)
    _check_positive("cas_max_steps", cas_max_steps, allow_zero=True)
    _check_positive("seed", seed, allow_zero=True)
    if near_dup_threshold is not None and not (near_dup_threshold >= 0 and math.isfinite(near_dup_threshold)):
        raise UsageError(f"near-duplicate threshold must be a distance >= 0, got {near_dup_threshold!r}")
    if not 0.0 < near_dup_quantile < 1.0:
        raise UsageError(f"near-duplicate quantile must be in (0, 1), got {near_dup_quantile!r}")
    if report_dir is not None:
        report_dir = check_report_dir(report_dir, out_dir)
    t_start = time.time()
    timings = {}

    def timed(name, t0):
        timings[name] = round(time.time() - t0, 1)

    t0 = time.time()
    manifest = read_manifest(out_dir)
    clf = load_classifier(classifier_dir)
    real, real_train, test, holdout_note = _real_splits(real_source, seed)
    h, w = int(manifest["height"]), int(manifest["width"])
    if real_train.image_shape != (h, w):
        raise DataError(f"real data {real_source} has {real_train.image_shape[0]}x{real_train.image_shape[1]} "
                        f"images but {out_dir} holds {h}x{w}; compare with real data of the same size")
    if clf.image_shape != (h, w):
        raise ModelError(f"classifier {clf.path} takes {clf.image_shape[0]}x{clf.image_shape[1]} images but "
                         f"{out_dir} holds {h}x{w}; pass a matching --classifier")
    cas_cfg = _cas_config(clf, cas_epochs, cas_max_steps) if cas_epochs != 0 else None
    log(f"reading {out_dir} ({manifest['total']:,} records) ...")
    syn = read_synthetic(out_dir, manifest, max_images, seed, set(_digests(real_train.images)))
    timed("read", t0)
    notes = [holdout_note] if holdout_note else []
    if syn.total_read > len(syn.images):
        notes.append(f"fidelity, diversity and pictures use a seeded uniform subsample of {len(syn.images):,} of "
                     f"the {syn.total_read:,} records (max_images); counts and exact duplicates use every record")

    report = {
        "dataset": {"out_dir": out_dir, "total": syn.total_read, "model_id": manifest.get("model_id"),
                    "sampler": manifest.get("sampler"), "seed": manifest.get("seed"),
                    "command": manifest.get("command"), "dataset_digest": manifest.get("dataset_digest"),
                    "image_shape": [h, w], "sampled_images": int(len(syn.images))},
        "real": {"source": real_source, "train_rows": len(real_train),
                 "train_labeled": int((real_train.labels >= 0).sum()), "test_images": len(test),
                 "description": real.describe()},
        "classifier": {"path": clf.path or bundled_classifier_dir(), "classifier_id": clf.meta.get("classifier_id"),
                       "recorded_test_accuracy": clf.meta.get("metrics", {}).get("test", {}).get("accuracy"),
                       "trained_on": clf.meta.get("data", {}).get("source"),
                       "command": clf.meta.get("command")},
        "options": {"max_images": max_images, "novelty_images": novelty_images, "baseline_images": baseline_images,
                    "diversity_per_class": diversity_per_class, "near_dup_threshold": near_dup_threshold,
                    "near_dup_quantile": near_dup_quantile, "cas_epochs": cas_epochs, "cas_max_steps": cas_max_steps,
                    "seed": seed},
    }
    report["counts"] = _counts_section(manifest, syn)
    if not report["counts"]["match"]:
        notes.append("the shards disagree with the manifest: " + "; ".join(report["counts"]["problems"][:3]))

    t0 = time.time()
    log(f"label fidelity: classifying {len(syn.images):,} synthetic images ...")
    report["fidelity"], fid_extras = _fidelity(clf, syn, test)
    timed("fidelity", t0)

    t0 = time.time()
    if cas_cfg is None:
        report["cas"] = {"applicable": False, "reason": "skipped (cas_epochs = 0)"}
    else:
        report["cas"] = _cas(out_dir, manifest, syn, clf, cas_cfg, real_source, real_train, test,
                             holdout_note is not None, log, verbose)
    timed("cas", t0)

    t0 = time.time()
    report["novelty"], nov_extras = _novelty(syn, real_train, test, novelty_images, baseline_images,
                                             near_dup_threshold, near_dup_quantile, seed, log)
    timed("novelty", t0)

    t0 = time.time()
    log("diversity ...")
    report["diversity"] = _diversity(syn, real_train, diversity_per_class, seed)
    timed("diversity", t0)

    report["notes"] = notes
    report["timings"] = timings
    report["command"] = artifacts.command_line(argv)
    report["versions"] = artifacts.versions()
    report["created"] = artifacts.utc_now()
    timings["metrics_total"] = round(time.time() - t_start, 1)
    if report_dir is not None:
        from pipeline.evaluation.report import write_report

        t0 = time.time()
        log(f"writing {report_dir}/report.html ...")
        pictures = {"syn": syn, "fidelity": fid_extras, "novelty": nov_extras}
        write_report(report_dir, report, pictures)
        timed("report", t0)  # in the returned dict only: report.json is already written
    return report
