"""Drop posterior-pool anchors whose decoded mean already nearly copies a real training image.

Posterior samples stay near their anchor's reconstruction. When that reconstruction is within the
near-duplicate distance of a training image, its samples often are too: on the bundled model, 1s whose
reconstruction is that close give 17% near-duplicate samples, against 8.6% for real test 1s. Dropping those
anchors once, when the statistics are made, costs nothing at generation time; the decoder and the real images
are both at hand here and nowhere in the generate job.

The threshold follows `vae-augment evaluate`: by default the 1st percentile of the nearest-training-image
distances of (up to 5,000) real test images.
"""
from __future__ import annotations

import dataclasses
import math

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from pipeline.evaluation.distances import nearest_neighbours
from pipeline.generate.worker_env import portable_model_dir
from vae_model.errors import DataError, UsageError
from vae_model.latent_stats import LatentStats

BASELINE_IMAGES = 5_000
QUANTILE = 0.01
NAMESPACE = "vae_augment_anchors"


def auto_threshold(train_images: np.ndarray, test_images: np.ndarray | None, seed: int, source: str) -> float:
    """The 1st percentile of real test -> train nearest-neighbour distances, pixels scaled to [0, 1]."""
    if test_images is None or not len(test_images):
        raise UsageError(f"--near-dup-threshold auto needs a test split in {source} for its baseline; pass a "
                         "distance instead (e.g. --near-dup-threshold 1.3)")
    rng = np.random.default_rng([seed, 17])
    pick = np.sort(rng.choice(len(test_images), min(BASELINE_IMAGES, len(test_images)), replace=False))
    d, _ = nearest_neighbours(test_images[pick], train_images)
    return float(np.quantile(d / 255.0, QUANTILE))


def parse_threshold(value: str) -> float | None:
    """'auto' -> None (computed later); a distance >= 0 -> float; anything else is a usage error."""
    if value == "auto":
        return None
    try:
        t = float(value)
    except ValueError:
        t = float("nan")
    if not (math.isfinite(t) and t >= 0):
        raise UsageError(f"--near-dup-threshold must be 'auto' or a distance >= 0 (L2 over pixels in [0, 1]), "
                         f"got {value!r}")
    return t


def prune_anchors(stats: LatentStats, decode, train_images: np.ndarray, threshold: float) -> tuple[LatentStats, dict]:
    """Stats whose posterior pool keeps only anchors decoding farther than `threshold` from every training image.

    `decode(z) -> (uint8 images, nonfinite count)` is a BatchDecoder. Moments are untouched: they describe the
    data, the pool is what samples are drawn around. Returns (stats, per-class {kept, dropped}).
    """
    if stats.pool_mu is None or not len(stats.pool_mu):
        raise UsageError("the statistics have no per-example pool to prune")
    recon, _ = decode(stats.pool_mu.astype(np.float32))
    d, _ = nearest_neighbours(recon, train_images)
    keep = d / 255.0 >= threshold
    report = {}
    for c in stats.classes.tolist():
        rows = stats.pool_labels == c
        report[str(c)] = {"kept": int((keep & rows).sum()), "dropped": int((~keep & rows).sum())}
        if not (keep & rows).any():
            raise DataError(f"every pool anchor of class {c} decodes within {threshold:.3f} of a training image; "
                            "lower --near-dup-threshold or leave it off")
    return dataclasses.replace(stats, pool_labels=stats.pool_labels[keep], pool_mu=stats.pool_mu[keep],
                               pool_logvar=stats.pool_logvar[keep]), report


def auto_threshold_of_source(source: str, seed: int) -> float:
    """`auto_threshold` of `source`'s own train and test splits."""
    from vae_model.data import load_source

    splits = load_source(source, seed=seed)
    return auto_threshold(splits.train.images, splits.test.images if splits.test is not None else None, seed, source)


class _PruneFn(beam.DoFn):
    def __init__(self, model_path: str, source: str, seed: int, threshold: float):
        self._model_path, self._source, self._seed = portable_model_dir(model_path), source, seed
        self._threshold = threshold

    def setup(self):
        from pipeline.generate.worker_env import anonymous_gcs_on_worker, enable_gpu_memory_growth
        from vae_model.inference import BatchDecoder
        from vae_model.model_dir import ModelDir

        enable_gpu_memory_growth()
        anonymous_gcs_on_worker()  # before the model and the data are read from gs://
        self._decode = BatchDecoder(ModelDir.open(self._model_path).decoder, 4096)

    def process(self, stats: LatentStats):
        from vae_model.data import load_source

        decode = self._decode
        train = load_source(self._source, seed=self._seed).train.images
        pruned, report = prune_anchors(stats, decode, train, self._threshold)
        # the per-class report reaches the driver as counters (exact: committed once per successful bundle)
        for c, v in report.items():
            for what in ("kept", "dropped"):
                Metrics.counter(NAMESPACE, f"{what}:{c}").inc(v[what])
        yield pruned


class PruneAnchors(beam.PTransform):
    """LatentStats -> `prune_anchors` of it against the train split of `source`, decoded by the model at
    `model_path`; run where the real images are. `anchor_counts(result)` gives the job's per-class report."""

    def __init__(self, model_path: str, source: str, seed: int, threshold: float, label=None):
        super().__init__(label)
        self._fn = _PruneFn(model_path, source, seed, threshold)

    def expand(self, stats):
        return stats | "Prune" >> beam.ParDo(self._fn)


def anchor_counts(result) -> dict[str, dict[str, int]]:
    """Per class {"kept", "dropped"} pool anchors from a finished job's PruneAnchors counters."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, dict[str, int]] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        what, c = counter.key.metric.name.split(":")
        out.setdefault(c, {"kept": 0, "dropped": 0})[what] += counter.committed
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))
