"""`vae-augment evaluate`: how good is a generated dataset, measured against real data.

This module reads the inputs (the manifest, a seeded subsample of the synthetic records, the real splits, the
reference classifier), runs the sections and writes the report:

- counts, label fidelity, novelty and diversity: pipeline.evaluation.metrics (distances: .distances);
- CAS and its ceiling: pipeline.evaluation.cas;
- the verdict, pass or fail against the README's quality targets: TARGETS and verdict_section below;
- report.json, report.html and figures/: pipeline.evaluation.report.

Counts and exact duplicates (by image hash) cover every record; everything else uses the in-memory subsample,
so memory and time are bounded by the `EvaluateOptions` cost knobs, not by the dataset size.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from pipeline.evaluation.distances import digests
from pipeline.evaluation.metrics import (RealSplits, SyntheticSample, counts_section, diversity_section,
                                         fidelity_section, novelty_section)
from vae_model.data.files import one_line
from vae_model.errors import DataError, ModelError, UsageError

_MAX_BASELINE_HOLDOUT = 10_000


# ---------------------------------------------------------------------------------------------- options

def _check_int(name: str, value, minimum: int, optional: bool = False):
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """What `evaluate` samples and how long CAS trains.

    `max_images`: synthetic records kept in memory (a seeded uniform subsample) for fidelity, novelty, diversity
    and pictures. `novelty_images` / `baseline_images`: synthetic / real test images whose nearest real training
    image is searched. `diversity_per_class`: images per class for the pairwise distances. `near_dup_threshold`:
    the near-duplicate distance (pixels in [0, 1]); None = the `near_dup_quantile` of the baseline distances.
    `cas_epochs` / `cas_max_steps`: None = the classifier's config; `cas_epochs=0` skips CAS. `seed` draws every
    subsample (and the holdout of a real source without a test split).
    """

    max_images: int = 20_000
    novelty_images: int = 5_000
    baseline_images: int = 5_000
    diversity_per_class: int = 500
    near_dup_threshold: float | None = None
    near_dup_quantile: float = 0.01
    cas_epochs: int | None = None
    cas_max_steps: int | None = None
    seed: int = 0
    # False when the caller owns OUT_DIR's files and records their checksums (augment's resumable steps)
    refresh_card: bool = True

    def __post_init__(self):
        for name in ("max_images", "novelty_images", "baseline_images", "diversity_per_class"):
            _check_int(name, getattr(self, name), 1)
        _check_int("cas_epochs", self.cas_epochs, 0, optional=True)
        _check_int("cas_max_steps", self.cas_max_steps, 0, optional=True)
        _check_int("seed", self.seed, 0)
        t = self.near_dup_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, np.number))
                              or not (t >= 0 and math.isfinite(t))):
            raise UsageError("Expected `near_dup_threshold` to be None or a distance >= 0 (L2 over pixels in "
                             f"[0, 1]). Received: near_dup_threshold={t!r}")
        q = self.near_dup_quantile
        if isinstance(q, bool) or not isinstance(q, (int, float, np.number)) or not 0.0 < q < 1.0:
            raise UsageError(f"Expected `near_dup_quantile` to be in (0, 1). Received: near_dup_quantile={q!r}")

    @property
    def runs_cas(self) -> bool:
        return self.cas_epochs != 0


# ---------------------------------------------------------------------------------------------- verdict

@dataclasses.dataclass(frozen=True)
class Target:
    """One quality target: the measured value `op` (">=", "<=" or "==") `threshold`; threshold None = the real
    baseline measured in the same report. `fix` is what to try when it fails."""

    name: str
    what: str
    op: str
    threshold: float | bool | None
    unit: str  # "share", "count" or "check": how the value is shown
    fix: str
    threshold_from: str | None = None  # what a threshold of None is taken from


# The README's quality targets (Evaluation, "Choosing the sampler"), met by the default sampler on MNIST.
TARGETS = (
    Target("counts_match", "records in the shards match the manifest", "==", True, "check",
           "run `vae-augment verify` on the output and generate it again"),
    Target("label_fidelity", "label fidelity (unfiltered output)", ">=", 0.95, "share",
           "lower `--spread` or add `--filter-classifier bundled --min-confidence 0.9`"),
    Target("label_fidelity_filtered", "label fidelity (output filtered by --filter-classifier)", ">=", 0.99,
           "share", "raise `--min-confidence`, or filter with the classifier `evaluate` scores with"),
    Target("cas", "CAS (a classifier trained on the synthetic records, scored on real test images)", ">=", 0.975,
           "share", "use the default `posterior` sampler without lowering `--spread`, or generate more records per "
                    "class"),
    Target("exact_duplicates", "exact copies of real training images", "<=", 0, "count",
           "prune the posterior pool with `vae-augment stats --near-dup-threshold auto` and pass it with `--stats`"),
    Target("near_duplicate_rate", "near-duplicate rate", "<=", None, "share",
           "raise `--spread`, or prune the posterior pool with `vae-augment stats --near-dup-threshold auto`",
           "the real test baseline"),
)


def _measured(report: dict) -> dict[str, tuple]:
    """{target name: (value, threshold from this report or None, reason when the target does not apply)}."""
    f, cas, nov = report["fidelity"], report["cas"], report["novelty"]
    filtered = report["dataset"].get("filter") is not None
    fid, fid_na = (f["fidelity"], None) if f.get("applicable") else (None, f.get("reason"))
    return {
        "counts_match": (report["counts"]["match"], None, None),
        "label_fidelity": (fid, None, "the output is filtered" if filtered else fid_na),
        "label_fidelity_filtered": (fid, None, fid_na if filtered else "the output is not filtered"),
        "cas": (cas.get("cas"), None, None if cas.get("applicable") else cas.get("reason")),
        "exact_duplicates": (nov["exact_duplicates"], None, None),
        "near_duplicate_rate": (nov["near_duplicate_rate"], nov["baseline_near_duplicate_rate"], None),
    }


def verdict_section(report: dict) -> dict:
    """Pass or fail against TARGETS; every target is listed, "n/a" with its reason when it does not apply."""
    measured = _measured(report)
    rows = []
    for t in TARGETS:
        value, threshold, reason = measured[t.name]
        threshold = t.threshold if threshold is None else threshold
        if reason is None and (value is None or threshold is None):
            reason = "not measured"
        if reason is not None:
            status = "n/a"
        else:
            status = "pass" if {">=": value >= threshold, "<=": value <= threshold,
                                "==": value == threshold}[t.op] else "fail"
        rows.append({"name": t.name, "what": t.what, "op": t.op, "threshold": threshold, "unit": t.unit,
                     **({"threshold_from": t.threshold_from} if t.threshold_from else {}),
                     "value": value, "status": status, **({"reason": reason} if reason else {})})
    failed = [t for t, r in zip(TARGETS, rows) if r["status"] == "fail"]
    fixes = list(dict.fromkeys(t.fix for t in failed))
    advice = ("To meet the targets: " + "; ".join(fixes) + ".") if fixes else None
    return {"status": "fail" if failed else "pass", "targets": rows, "advice": advice,
            "source": "README.md: Evaluation, Choosing the sampler (MNIST, bundled classifier)"}


def check_report_dir(report_dir: str, out_dir: str | None = None) -> str:
    """The report directory must be new, empty, or an earlier report (it is replaced); never other data."""
    report_dir = os.path.abspath(report_dir)
    if out_dir and "://" not in out_dir and report_dir == os.path.abspath(out_dir):
        raise UsageError(f"--report {report_dir} is the dataset itself; choose a separate directory")
    from pipeline.evaluation.report import REPORT_DIR
    from vae_model import artifacts

    return artifacts.check_out_dir(report_dir, REPORT_DIR)


# ---------------------------------------------------------------------------------------------- reading

def _parquet_batches(path: str, h: int, w: int):
    from pipeline.dataset.arrow import images_from_column, read_parquet_table
    from vae_model.artifacts import read_bytes

    # only the three columns used, not read_shard's full decode: this pass runs over every record
    try:
        table = read_parquet_table(read_bytes(path), ["label", "image", "latent"])
        images = images_from_column(table.column("image"), h, w)
    except Exception as e:  # noqa: BLE001 - any unreadable shard is a data problem
        raise DataError(f"{path}: cannot read parquet shard ({type(e).__name__}: {one_line(e)[:160]}); "
                        "run `vae-augment verify` on the output directory") from None
    n = table.num_rows
    labels = table.column("label").to_numpy().astype(np.int64)
    values = table.column("latent").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    latents = values.reshape(n, -1) if n and values.size % n == 0 else np.zeros((n, 0), np.float32)
    yield images, labels, latents


def _tfrecord_batches(path: str, h: int, w: int):
    from pipeline.dataset.verify import read_shard

    try:
        for b in read_shard(path, "tfrecord", h, w):
            yield b.images, b.labels, b.latents
    except ValueError as e:
        raise DataError(f"{path}: unreadable TFRecord shard ({one_line(e)[:160]}); run `vae-augment "
                        "verify` on the output directory") from None


def read_synthetic(out_dir: str, manifest: dict, max_images: int, seed: int,
                   real_digests: set[bytes]) -> SyntheticSample:
    """One pass over the manifest's shards (Parquet when written, else TFRecord): counts and duplicates over
    every record, and a seeded uniform subsample of at most `max_images` rows."""
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
            for d in digests(images):
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
    return SyntheticSample(np.concatenate(imgs), np.concatenate(labs), np.concatenate(lats), counts, pos, dups,
                           repeated, fmt)


def real_splits(real_source: str, seed: int) -> RealSplits:
    """The real source's train and labeled test splits. Without a test split, a seeded holdout of the labeled
    training rows becomes the test set (and leaves the training set, so the novelty baseline stays honest)."""
    from vae_model.data import Dataset, load_source

    real = load_source(real_source)
    train = real.train
    if real.test is not None and len(real.test.labeled):
        return RealSplits(real_source, real, train, real.test.labeled)
    labeled = np.flatnonzero(train.labels >= 0)
    if len(labeled) < 20:
        raise DataError(f"real data {real_source} has {len(labeled)} labeled rows and no test split; CAS, "
                        "fidelity context and the novelty baseline need labeled real images")
    n_test = min(_MAX_BASELINE_HOLDOUT, len(labeled) // 6)
    held = np.sort(np.random.default_rng([seed, 3]).choice(labeled, n_test, replace=False))
    mask = np.ones(len(train), bool)
    mask[held] = False
    note = (f"{real_source} has no labeled test split: {n_test} labeled training rows were held out as the "
            "real test set (CAS, ceiling, baseline) and not used as training data")
    return RealSplits(real_source, real, Dataset(train.images[mask], train.labels[mask]), train.take(held), note)


def _check_shapes(out_dir: str, manifest: dict, real: RealSplits, clf):
    h, w = int(manifest["height"]), int(manifest["width"])
    if real.train.image_shape != (h, w):
        raise DataError(f"real data {real.source} has {real.train.image_shape[0]}x{real.train.image_shape[1]} "
                        f"images but {out_dir} holds {h}x{w}; compare with real data of the same size")
    if clf.image_shape != (h, w):
        raise ModelError(f"classifier {clf.path} takes {clf.image_shape[0]}x{clf.image_shape[1]} images but "
                         f"{out_dir} holds {h}x{w}; pass a matching --classifier")


# ---------------------------------------------------------------------------------------------- entry point

def _filter_summary(f: dict | None) -> dict | None:
    """The manifest's filter block without its local classifier path."""
    if not f:
        return None
    return {k: f.get(k) for k in ("min_confidence", "classifier_id", "acceptance")}


def _header(out_dir: str, manifest: dict, syn: SyntheticSample, real: RealSplits, clf,
            options: EvaluateOptions) -> dict:
    """The report's first sections: what was evaluated, against what, with which options."""
    from vae_model.classifier import bundled_classifier_dir

    bundled = bundled_classifier_dir()
    clf_path = clf.path or bundled
    return {
        "dataset": {"out_dir": out_dir, "total": syn.total_read, "model_id": manifest.get("model_id"),
                    "sampler": manifest.get("sampler"), "seed": manifest.get("seed"),
                    "command": manifest.get("command"), "dataset_digest": manifest.get("dataset_digest"),
                    "image_shape": [int(manifest["height"]), int(manifest["width"])],
                    "sampled_images": int(len(syn.images)), "filter": _filter_summary(manifest.get("filter"))},
        "real": {"source": real.source, "train_rows": len(real.train),
                 "train_labeled": int((real.train.labels >= 0).sum()), "test_images": len(real.test),
                 "description": real.data.describe()},
        "classifier": {"path": clf_path, "bundled": os.path.realpath(clf_path) == os.path.realpath(bundled),
                       "classifier_id": clf.meta.get("classifier_id"),
                       "recorded_test_accuracy": clf.meta.get("metrics", {}).get("test", {}).get("accuracy"),
                       "trained_on": clf.meta.get("data", {}).get("source"),
                       "command": clf.meta.get("command")},
        "options": dataclasses.asdict(options),
    }


def evaluate(out_dir: str, real_source: str = "mnist", classifier_dir: str | None = None,
             report_dir: str | None = None, options: EvaluateOptions | None = None, *, log=None,
             verbose: int | str = 0, argv=None) -> dict:
    """Evaluate a generated dataset against real data; write report.json + report.html when `report_dir` is given.

    `classifier_dir`: the reference classifier (None = the bundled one). `options`: the cost knobs and seed
    (None = the defaults). `log` gets one line per step; `verbose` is the Keras verbosity of the CAS training;
    `argv` is recorded as the command (default sys.argv). Returns the report dict.
    """
    from pipeline.dataset.readers import checked_manifest
    from pipeline.evaluation.cas import cas_config, cas_section
    from vae_model import artifacts
    from vae_model.classifier import load_classifier

    options = EvaluateOptions() if options is None else options
    if not isinstance(options, EvaluateOptions):
        raise UsageError(f"Expected `options` to be an EvaluateOptions. Received: options={options!r}")
    log = log or (lambda msg: None)
    if report_dir is not None:
        report_dir = check_report_dir(report_dir, out_dir)
    t_start = time.time()
    timings = {}

    def timed(name, t0):
        timings[name] = round(time.time() - t0, 1)

    t0 = time.time()
    manifest = checked_manifest(out_dir)  # a bad shard fails before the classifier and real data load
    clf = load_classifier(classifier_dir)
    real = real_splits(real_source, options.seed)
    _check_shapes(out_dir, manifest, real, clf)
    cfg = cas_config(clf, options.cas_epochs, options.cas_max_steps) if options.runs_cas else None
    log(f"reading {out_dir} ({manifest['total']:,} records) ...")
    syn = read_synthetic(out_dir, manifest, options.max_images, options.seed, set(digests(real.train.images)))
    timed("read", t0)
    notes = [real.holdout_note] if real.holdout_note else []
    if syn.total_read > len(syn.images):
        notes.append(f"fidelity, diversity and pictures use a seeded uniform subsample of {len(syn.images):,} of "
                     f"the {syn.total_read:,} records (max_images); counts and exact duplicates use every record")

    report = _header(out_dir, manifest, syn, real, clf, options)
    report["counts"] = counts_section(manifest, syn)
    if not report["counts"]["match"]:
        notes.append("the shards disagree with the manifest: " + "; ".join(report["counts"]["problems"][:3]))

    t0 = time.time()
    log(f"label fidelity: classifying {len(syn.images):,} synthetic images ...")
    report["fidelity"], fid_extras = fidelity_section(clf, syn, real.test)
    timed("fidelity", t0)

    t0 = time.time()
    if cfg is None:
        report["cas"] = {"applicable": False, "reason": "skipped (cas_epochs = 0)"}
    else:
        report["cas"] = cas_section(out_dir, manifest, syn.counts, clf, cfg, real, log, verbose)
    timed("cas", t0)

    t0 = time.time()
    report["novelty"], nov_extras = novelty_section(
        syn, real.train, real.test, options.novelty_images, options.baseline_images, options.near_dup_threshold,
        options.near_dup_quantile, options.seed, log)
    timed("novelty", t0)

    t0 = time.time()
    log("diversity ...")
    report["diversity"] = diversity_section(syn, real.train, options.diversity_per_class, options.seed)
    timed("diversity", t0)

    report["verdict"] = verdict_section(report)
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
        write_report(report_dir, report, {"syn": syn, "fidelity": fid_extras, "novelty": nov_extras})
        timed("report", t0)  # in the returned dict only: report.json is already written
        if options.refresh_card:
            _refresh_card(out_dir, manifest, report, report_dir, log)
    return report


def _refresh_card(out_dir: str, manifest: dict, report: dict, report_dir: str, log) -> None:
    """The output's dataset card (OUT_DIR/README.md) gets the verdict; skipped when the card is a user's file or
    OUT_DIR is not writable (the report stands on its own)."""
    from pipeline.dataset import card

    ref = os.path.join(report_dir, "report.html")
    if "://" not in out_dir:
        ref = os.path.relpath(ref, out_dir)
    if card.refresh(out_dir, manifest, report, ref):
        log(f"dataset card {out_dir}/{card.CARD_FILE} updated with the verdict")
