"""A generate job: its options and defaults (`GenerateJob`), the fingerprint of what decides its records, and
`validate`, the one place its options are checked, against each other and against the model, on the driver
before anything is written. Light at import (no Beam, no TensorFlow): the CLI's option defaults come from here."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.generate.planning import default_shards, split_evenly
from pipeline.generate.samplers import NEEDS_STATS, LatentSampler, SamplerSpec, check_sampler
from vae_model.errors import UsageError

if TYPE_CHECKING:
    from pipeline.generate.class_stats import ComputeClassStats
    from pipeline.generate.filter import ClassifierFilter
    from vae_model.model_dir import ModelDir

FORMATS = ("parquet", "tfrecord")
RUNNERS = ("DirectRunner", "DataflowRunner", "BundleBasedDirectRunner", "PortableRunner")
# Chosen by benchmarks/sampler_grid.py on the bundled model (README, "Choosing the sampler"): posterior at 1.25 has
# the best CAS with label fidelity >= 95%.
DEFAULT_SAMPLER = "posterior"
DEFAULT_SPREADS = {"posterior": 1.25}  # every other sampler: 1.0
# Default rounds of `count` candidates a filtered work unit may decode: enough for a 5% acceptance rate (expected
# rounds 1/rate), and a bound on the cost of a threshold set too high.
MAX_FILTER_ROUNDS = 40


def default_spread(sampler: str) -> float:
    return DEFAULT_SPREADS.get(sampler, 1.0)

@dataclass
class GenerateJob:
    """Everything that determines the records (plus where they go and how the job runs)."""

    out: str
    model: str | None = None  # model directory; None or "bundled" = the bundled model
    num: int | None = None
    per_class: int | None = None
    sampler: str = DEFAULT_SAMPLER
    classes: list[int] | None = None
    spread: float | None = None  # None: default_spread(sampler)
    labeled_data: str | None = None
    stats: str | None = None
    gmm_components: int = 3
    seed: int = 0
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    shards: int | None = None  # None: default_shards(total)
    batch_size: int = 4096
    runner: str = "DirectRunner"
    workers: int | None = None
    gpu: str | None = None
    overwrite: bool = False
    filter_classifier: str | None = None  # classifier directory, or "bundled"; None = no filter
    min_confidence: float | None = None  # default DEFAULT_FILTER_CONFIDENCE when filtering
    max_filter_rounds: int = MAX_FILTER_ROUNDS

    @property
    def filtered(self) -> bool:
        return self.filter_classifier is not None

    def record_fingerprint(self, model_id: str, classifier_sha256: str | None = None) -> str:
        """Hash of the arguments that decide record contents (not where or how they are written)."""
        keys = ("num", "per_class", "sampler", "classes", "spread", "labeled_data", "stats", "gmm_components",
                "seed", "batch_size")
        fields = {"model_id": model_id, **{k: getattr(self, k) for k in keys}}
        if self.filtered:  # unfiltered fingerprints stay what they were
            fields.update(classifier_sha256=classifier_sha256, min_confidence=self.min_confidence)
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Validated:
    """What `validate` settled for a job besides its own fields."""

    counts: dict[int, int]  # records per class; {-1: n} for unlabeled records
    sampler: LatentSampler | SamplerSpec  # a SamplerSpec is built on the workers from `class_stats`
    class_stats: ComputeClassStats | None  # --labeled-data: the statistics stage of the same job
    record_filter: ClassifierFilter | None
    classifier_meta: dict | None  # classifier.json of the filter's classifier


def _positive(flag: str, value) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"--{flag} must be > 0, got {value}")


def validate(job: GenerateJob, md: ModelDir) -> Validated:
    """Check `job` against itself and the model `md`; UsageError/DataError/ModelError for the first problem.

    Fills in the defaults that depend on other options (spread, shards, min_confidence), builds the sampler
    (or, with --labeled-data, the statistics stage it is built from in the job) and loads the decoder and the
    filter's classifier metadata, so that every user mistake surfaces here and not inside a worker."""
    if job.spread is None:
        job.spread = default_spread(job.sampler)
    if (job.num is None) == (job.per_class is None):
        raise UsageError("give exactly one of --num N or --per-class N")
    for flag in ("num", "per_class", "batch_size", "workers", "max_filter_rounds"):
        _positive(flag.replace("_", "-"), getattr(job, flag))
    bad = [f for f in job.formats if f not in FORMATS]
    if bad or not job.formats:
        raise UsageError(f"--formats {','.join(job.formats)!r}: each must be one of {', '.join(FORMATS)}")
    if job.runner not in RUNNERS:
        raise UsageError(f"--runner {job.runner!r} is not one of {', '.join(RUNNERS)}")
    from pipeline.generate.runners import check_worker_paths  # Beam's options: when a job runs, not by the CLI

    check_worker_paths(job)  # remote workers read only what every worker can (gs://, bundled)
    if job.min_confidence is not None and not job.filtered:
        raise UsageError("--min-confidence needs --filter-classifier DIR (or --filter-classifier bundled)")
    if job.stats and job.labeled_data:
        raise UsageError("give at most one of --stats FILE and --labeled-data SOURCE")
    check_sampler(job.sampler, job.spread, md.conditional, job.gmm_components)
    counts = _counts(job, md)
    total = sum(counts.values())
    shards = default_shards(total) if job.shards is None else job.shards
    if not 0 < shards <= total:
        raise UsageError(f"--shards {shards} must be between 1 and the number of records ({total})")
    job.shards = shards
    sampler, class_stats = _sampler(job, md, counts)
    md.decoder  # fail here, with a clear message, rather than inside a worker
    record_filter, classifier_meta = _record_filter(job, md)
    return Validated(counts, sampler, class_stats, record_filter, classifier_meta)


def _counts(job: GenerateJob, md: ModelDir) -> dict[int, int]:
    n = job.num if job.num is not None else job.per_class
    if job.sampler == "prior" and not job.filtered:
        if job.per_class is not None or job.classes:
            raise UsageError("--sampler prior draws unlabeled records: use --num N without --classes, or add "
                             "--filter-classifier to label prior samples by the classifier")
        return {-1: n}
    # With a filter, prior samples of unit class c are kept only where the classifier says c with p >= P:
    # labels come from the classifier, and the whole latent space (hence all the data the VAE saw, labeled
    # or not) is used, not only the neighbourhoods of the labeled examples.
    classes = job.classes or list(range(md.num_classes))
    outside = [c for c in classes if not 0 <= c < md.num_classes]
    if outside:
        raise UsageError(f"--classes {outside[0]} is not a class of this model (0..{md.num_classes - 1})")
    if len(set(classes)) != len(classes):
        raise UsageError(f"--classes lists a class twice: {classes}")
    classes = sorted(classes)
    counts = split_evenly(n, classes) if job.num is not None else {c: n for c in classes}
    return {c: k for c, k in counts.items() if k > 0}


def _sampler(job: GenerateJob, md: ModelDir, counts: dict[int, int]):
    """(sampler, statistics stage): a LatentSampler built here, or with --labeled-data a SamplerSpec and the
    ComputeClassStats stage whose output it is built from on the workers."""
    from pipeline.generate.class_stats import ComputeClassStats  # Beam: imported when a job runs, not by the CLI

    origin = job.labeled_data or job.stats or md.file("latent_stats.npz")
    spec = SamplerSpec(job.sampler, md.latent_dim, md.conditional, job.spread, job.gmm_components, job.seed,
                       origin)
    if job.sampler not in NEEDS_STATS:
        return spec.build(None), None
    if job.labeled_data:
        class_stats = ComputeClassStats.for_source(md, job.labeled_data, job.seed)  # reads the labels only
        sampler, known = spec, list(class_stats.classes)
    else:
        class_stats = None
        sampler = spec.build(md.stats(job.stats))
        known = sampler.classes()
    missing = [c for c in counts if c not in known]
    if missing:
        raise UsageError(f"--classes {missing[0]}: the class statistics have no examples of class "
                         f"{missing[0]}; pick from {known}")
    return sampler, class_stats


def _record_filter(job: GenerateJob, md: ModelDir):
    """The job's ClassifierFilter, checked against the model, and its classifier.json; or None, None."""
    from pipeline.generate.filter import DEFAULT_FILTER_CONFIDENCE, ClassifierFilter  # Beam, as above

    if not job.filtered:
        return None, None
    if job.min_confidence is None:
        job.min_confidence = DEFAULT_FILTER_CONFIDENCE
    record_filter = ClassifierFilter(job.filter_classifier, job.min_confidence)
    return record_filter, record_filter.check(md.num_classes, md.image_shape)
