"""A generate job: its options and defaults (`GenerateJob`), the fingerprint of what decides its records, and
`validate`, the one place its options are checked, against each other and against the model, on the driver
before anything is written. Light at import (no Beam, no TensorFlow): the CLI's option defaults come from here."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.generate.planning import default_shards, split_evenly, unit_count
from pipeline.generate.samplers import NEEDS_STATS, LatentSampler, SamplerSpec, StatsFileSampler, check_sampler
from vae_model.errors import UsageError

if TYPE_CHECKING:
    from pipeline.generate.class_stats import ComputeClassStats
    from pipeline.generate.latents import LatentFile
    from pipeline.generate.filter import ClassifierFilter
    from vae_model.model_dir import ModelDir

FORMATS = ("parquet", "tfrecord")
# Shard checksums the sinks can record (sinks.CHECKSUMS; not imported: the sinks import Beam). crc32c is always
# kept: it is what GCS stores per object, so verify can check a gs:// shard without downloading it.
CHECKSUMS = ("crc32c", "sha256")
DEFAULT_CHECKSUMS = ("crc32c",)
RUNNERS = ("DirectRunner", "DataflowRunner", "BundleBasedDirectRunner", "PortableRunner")
# Chosen by benchmarks/sampler_grid.py on the bundled model (README, "Choosing the sampler"): posterior at 1.25 has
# the best CAS with label fidelity >= 95%.
DEFAULT_SAMPLER = "posterior"
DEFAULT_SPREADS = {"posterior": 1.25}  # every other sampler: 1.0
LATENTS_SAMPLER = "latents"  # the records' `sampler` field when they decode a --latents file
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
    checksums: tuple[str, ...] = DEFAULT_CHECKSUMS  # shard checksums in the manifest; not in the fingerprint
    shards: int | None = None  # None: default_shards(total)
    batch_size: int = 4096
    runner: str = "DirectRunner"
    workers: int | None = None
    gpu: str | None = None
    overwrite: bool = False
    filter_classifier: str | None = None  # classifier directory, or "bundled"; None = no filter
    min_confidence: float | None = None  # default DEFAULT_FILTER_CONFIDENCE when filtering
    max_filter_rounds: int = MAX_FILTER_ROUNDS
    latents: str | None = None  # a file of the user's own latent codes (latents.LatentFile) instead of a sampler
    latents_sha256: str | None = field(default=None, init=False)  # of that file's bytes, set by validate
    units: int | None = field(default=None, init=False)  # work units planned (decides the records), set by validate

    @property
    def filtered(self) -> bool:
        return self.filter_classifier is not None

    def record_fingerprint(self, model_id: str, classifier_sha256: str | None = None) -> str:
        """Hash of the arguments that decide record contents (not where or how they are written)."""
        keys = ("num", "per_class", "sampler", "classes", "spread", "labeled_data", "stats", "gmm_components",
                "seed", "batch_size")
        if self.units is None:
            raise ValueError("Expected a validated job (validate sets units), Received: units=None")
        # The unit count (set by the batch size and --shards) decides how records are dealt and permuted; the
        # shard count alone does not: shards=1 and shards=5 of 5 units are the same records, laid out otherwise.
        fields = {"model_id": model_id, "units": self.units, **{k: getattr(self, k) for k in keys}}
        if self.filtered:  # unfiltered fingerprints stay what they were
            fields.update(classifier_sha256=classifier_sha256, min_confidence=self.min_confidence)
        if self.latents is not None:  # the file's content decides the records, not its path
            if self.latents_sha256 is None:
                raise ValueError("Expected a validated job (validate sets latents_sha256), Received: "
                                 "latents_sha256=None")
            fields.update(latents_sha256=self.latents_sha256)
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Validated:
    """What `validate` settled for a job besides its own fields."""

    counts: dict[int, int]  # records per class; {-1: n} for unlabeled records
    # a SamplerSpec is built on the workers from `class_stats`; a LatentFile (--latents) plans its own work units
    sampler: LatentSampler | SamplerSpec | LatentFile
    class_stats: ComputeClassStats | None  # --labeled-data: the statistics stage of the same job
    record_filter: ClassifierFilter | None
    classifier_meta: dict | None  # classifier.json of the filter's classifier
    # What the workers get instead of `sampler` when they can read its statistics file themselves (see
    # samplers.StatsFileSampler); None: `sampler` itself is shipped.
    worker_sampler: StatsFileSampler | None = None


def _positive(flag: str, value) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"--{flag} must be > 0, got {value}")


def check_checksums(names) -> tuple[str, ...]:
    """--checksums as the sinks take it: crc32c first (always kept), then sha256 if asked; UsageError otherwise."""
    names = [names] if isinstance(names, str) else list(names or ())
    bad = [n for n in names if n not in CHECKSUMS]
    if bad:
        raise UsageError(f"Expected --checksums to be a comma-separated list of {', '.join(CHECKSUMS)} (crc32c is "
                         f"always recorded), Received: checksums={','.join(map(str, names))}")
    return tuple(dict.fromkeys(["crc32c", *names]))


def validate(job: GenerateJob, md: ModelDir) -> Validated:
    """Check `job` against itself and the model `md`; UsageError/DataError/ModelError for the first problem.

    Fills in the defaults that depend on other options (spread, shards, min_confidence), builds the sampler
    (or, with --labeled-data, the statistics stage it is built from in the job) and loads the decoder and the
    filter's classifier metadata, so that every user mistake surfaces here and not inside a worker."""
    if job.latents is not None:
        return _validate_latents(job, md)
    if job.spread is None:
        job.spread = default_spread(job.sampler)
    if (job.num is None) == (job.per_class is None):
        raise UsageError("give exactly one of --num N or --per-class N")
    for flag in ("num", "per_class"):
        _positive(flag.replace("_", "-"), getattr(job, flag))
    _check_output_options(job)
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
    job.units = unit_count(total, job.batch_size, shards)
    sampler, class_stats, stats_sha256 = _sampler(job, md, counts)
    md.decoder  # fail here, with a clear message, rather than inside a worker
    record_filter, classifier_meta = _record_filter(job, md)
    return Validated(counts, sampler, class_stats, record_filter, classifier_meta,
                     _worker_sampler(job, md, stats_sha256))


def _worker_sampler(job: GenerateJob, md: ModelDir, stats_sha256: str | None) -> StatsFileSampler | None:
    """For --sampler posterior (the one whose parameters are large: the whole encoded pool), a StatsFileSampler
    when its statistics are a file every worker reads: the model's own (bundled or gs://) or a --stats FILE on
    gs:// (or any file, for the local runners). The others ship as built: a few KB, and gmm's fit stays on the
    driver (EM through multithreaded BLAS is not bit-reproducible across machines). `stats_sha256`: of the file
    the driver's sampler was built from."""
    if job.sampler != "posterior" or job.labeled_data or stats_sha256 is None:
        return None
    from pipeline.generate.runners import REMOTE_RUNNERS
    from pipeline.generate.worker_env import portable_model_dir
    from vae_model.model_dir import STATS

    if job.stats and "://" not in job.stats and job.runner in REMOTE_RUNNERS:
        return None  # a local file only the driver sees: ship the sampler built from it
    src = job.stats or md.file(STATS)
    spec = SamplerSpec(job.sampler, md.latent_dim, md.conditional, job.spread, job.gmm_components, job.seed, src)
    return StatsFileSampler(spec, portable_model_dir(md.path), job.stats, stats_sha256)


def _check_output_options(job: GenerateJob) -> None:
    """The options every job has, sampled or --latents: batching, formats, checksums, runner, worker paths."""
    for flag in ("batch_size", "workers", "max_filter_rounds"):
        _positive(flag.replace("_", "-"), getattr(job, flag))
    bad = [f for f in job.formats if f not in FORMATS]
    if bad or not job.formats:
        raise UsageError(f"--formats {','.join(job.formats)!r}: each must be one of {', '.join(FORMATS)}")
    job.checksums = check_checksums(job.checksums)
    if job.runner not in RUNNERS:
        raise UsageError(f"--runner {job.runner!r} is not one of {', '.join(RUNNERS)}")
    from pipeline.generate.runners import check_worker_paths  # Beam's options: when a job runs, not by the CLI

    check_worker_paths(job)  # remote workers read only what every worker can (gs://, bundled)


# Options that choose what to sample, hence meaningless with --latents (the file decides every record).
_NOT_WITH_LATENTS = (("num", "--num"), ("per_class", "--per-class"), ("classes", "--classes"),
                     ("spread", "--spread"), ("stats", "--stats"), ("labeled_data", "--labeled-data"),
                     ("filter_classifier", "--filter-classifier"), ("min_confidence", "--min-confidence"))


def _validate_latents(job: GenerateJob, md: ModelDir) -> Validated:
    """--latents FILE: the file's rows are the records (counts from its labels), read by a LatentFile that plans
    the work units itself (LatentFile.plan instead of planning.plan_units)."""
    from pipeline.generate.latents import LatentFile

    given = [flag for name, flag in _NOT_WITH_LATENTS if getattr(job, name) is not None]
    if job.sampler not in (DEFAULT_SAMPLER, LATENTS_SAMPLER):
        given.insert(0, "--sampler")
    if given:
        raise UsageError(f"Expected no {', '.join(given)} with --latents (the file's rows are the records), "
                         f"Received: latents={job.latents} with {', '.join(given)}")
    _check_output_options(job)
    from pipeline.generate.runners import REMOTE_RUNNERS

    if job.runner in REMOTE_RUNNERS and "://" not in job.latents:
        raise UsageError(f"--latents {job.latents} is a local file, which {job.runner} workers cannot read; copy "
                         "it to gs://BUCKET/... and pass that")
    job.sampler = LATENTS_SAMPLER
    latents = LatentFile.open(job.latents, md.latent_dim, md.num_classes, md.conditional)
    job.latents_sha256 = latents.sha256
    counts = latents.counts()
    shards = default_shards(latents.rows) if job.shards is None else job.shards
    if not 0 < shards <= latents.rows:
        raise UsageError(f"--shards {shards} must be between 1 and the number of rows of --latents "
                         f"({latents.rows})")
    job.shards = shards
    job.units = unit_count(latents.rows, job.batch_size, shards)
    md.decoder  # fail here, with a clear message, rather than inside a worker
    return Validated(counts, latents, None, None, None)


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
    """(sampler, statistics stage, sha256 of the statistics file): a LatentSampler built here from a file, or
    with --labeled-data a SamplerSpec and the ComputeClassStats stage whose output it is built from on the
    workers (no file: None)."""
    from pipeline.generate.class_stats import ComputeClassStats  # Beam: imported when a job runs, not by the CLI

    origin = job.labeled_data or job.stats or md.file("latent_stats.npz")
    spec = SamplerSpec(job.sampler, md.latent_dim, md.conditional, job.spread, job.gmm_components, job.seed,
                       origin)
    if job.sampler not in NEEDS_STATS:
        return spec.build(None), None, None
    digest = None
    if job.labeled_data:
        class_stats = ComputeClassStats.for_source(md, job.labeled_data, job.seed)  # reads the labels only
        sampler, known = spec, list(class_stats.classes)
    else:
        class_stats = None
        stats, digest = md.stats_and_digest(job.stats)
        sampler = spec.build(stats)
        known = sampler.classes()
    missing = [c for c in counts if c not in known]
    if missing:
        raise UsageError(f"--classes {missing[0]}: the class statistics have no examples of class "
                         f"{missing[0]}; pick from {known}")
    return sampler, class_stats, digest


def _record_filter(job: GenerateJob, md: ModelDir):
    """The job's ClassifierFilter, checked against the model, and its classifier.json; or None, None."""
    from pipeline.generate.filter import DEFAULT_FILTER_CONFIDENCE, ClassifierFilter  # Beam, as above

    if not job.filtered:
        return None, None
    if job.min_confidence is None:
        job.min_confidence = DEFAULT_FILTER_CONFIDENCE
    record_filter = ClassifierFilter(job.filter_classifier, job.min_confidence)
    return record_filter, record_filter.check(md.num_classes, md.image_shape)
