"""The main job: Create(shard tasks) -> Reshuffle -> sample + decode each task's work units -> write each task's
batches straight into its own Parquet/TFRecord shard (no shuffle of decoded data), then a manifest written only
after every shard is finalized."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.dataset import publish as outdir
from pipeline.generate.class_stats import ComputeClassStats
from pipeline.generate.filter import DEFAULT_MIN_CONFIDENCE, ClassifierFilter
from pipeline.generate.runners import make_runner, runner_description, setup_file
from pipeline.generate.samplers import NEEDS_STATS, build_sampler
from pipeline.generate.sinks import WriteParquetShards, WriteTFRecordShards
from pipeline.generate.transforms import (MAX_FILTER_ROUNDS, GenerateShards, SummarizeRecords, plan_shard_tasks, plan_units,
                                 spread_evenly)
from vae_model import artifacts
from vae_model.classifier import CLASSIFIER
from vae_model.errors import UsageError
from vae_model.model_dir import ModelDir

_LOG = logging.getLogger(__name__)
FORMATS = ("parquet", "tfrecord")
# Chosen by benchmarks/sampler_grid.py on the bundled model (README, "Choosing the sampler"): posterior at 1.25 has
# the best CAS with label fidelity >= 95%.
DEFAULT_SAMPLER = "posterior"
DEFAULT_SPREADS = {"posterior": 1.25}  # every other sampler: 1.0


def default_spread(sampler: str) -> float:
    return DEFAULT_SPREADS.get(sampler, 1.0)


@dataclass
class GenerateJob:
    """Everything that determines the records (plus where they go and how the job runs)."""

    out: str
    model: str | None = None
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
    shards: int | None = None
    batch_size: int = 4096
    runner: str = "DirectRunner"
    workers: int | None = None
    gpu: str | None = None
    overwrite: bool = False
    filter_classifier: str | None = None  # classifier directory, or "bundled"; None = no filter
    min_confidence: float | None = None  # default DEFAULT_MIN_CONFIDENCE when filtering
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


def _validate(job: GenerateJob, md: ModelDir) -> dict[int, int]:
    if job.spread is None:
        job.spread = default_spread(job.sampler)
    if (job.num is None) == (job.per_class is None):
        raise UsageError("give exactly one of --num N or --per-class N")
    n = job.num if job.num is not None else job.per_class
    if n <= 0:
        raise UsageError(f"--{'num' if job.num is not None else 'per-class'} must be > 0, got {n}")
    if job.batch_size <= 0:
        raise UsageError(f"--batch-size must be > 0, got {job.batch_size}")
    bad = [f for f in job.formats if f not in FORMATS]
    if bad or not job.formats:
        raise UsageError(f"--formats {','.join(job.formats)!r}: each must be one of {', '.join(FORMATS)}")
    if job.max_filter_rounds <= 0:
        raise UsageError(f"--max-filter-rounds must be > 0, got {job.max_filter_rounds}")
    if job.min_confidence is not None and not job.filtered:
        raise UsageError("--min-confidence needs --filter-classifier DIR (or --filter-classifier bundled)")
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
    counts = spread_evenly(n, classes) if job.num is not None else {c: n for c in classes}
    return {c: k for c, k in counts.items() if k > 0}


def _pipeline_options(job: GenerateJob, beam_args: list[str]) -> PipelineOptions:
    args = list(beam_args)
    if job.runner == "DataflowRunner":
        args.append("--runner=DataflowRunner")
        if job.workers:
            args += [f"--num_workers={job.workers}", f"--max_num_workers={job.workers}"]
        if job.gpu:
            args.append(f"--dataflow_service_options=worker_accelerator=type:{job.gpu};count:1;install-nvidia-driver")
        if not any(a.startswith("--setup_file") for a in args):
            args.append(f"--setup_file={setup_file()}")
    else:
        if job.runner == "BundleBasedDirectRunner":
            args.append("--runner=BundleBasedDirectRunner")
        if job.workers:
            args.append(f"--direct_num_workers={job.workers}")
            if job.workers > 1 and not any(a.startswith("--direct_running_mode") for a in args):
                args.append("--direct_running_mode=multi_processing")
    return PipelineOptions(args)


def _record_filter(job: GenerateJob, md: ModelDir) -> tuple[ClassifierFilter | None, dict | None]:
    """The job's ClassifierFilter, checked against the model on the driver, and its classifier.json; or None, None."""
    if not job.filtered:
        return None, None
    if job.min_confidence is None:
        job.min_confidence = DEFAULT_MIN_CONFIDENCE
    clf_dir = None if job.filter_classifier == "bundled" else job.filter_classifier
    record_filter = ClassifierFilter(clf_dir, job.min_confidence)
    return record_filter, record_filter.check(md.num_classes, md.image_shape)


def build(p: beam.Pipeline, job: GenerateJob, md: ModelDir, counts: dict[int, int], sampler, stats_pcoll=None,
          record_filter=None):
    """Adds the generation graph to `p`; returns the summary PCollection.

    Work units are dealt to K shard tasks up front (unit_id % K); only those tiny tasks are shuffled. Each task
    is sampled, decoded, encoded, hashed and written inside one fused stage, one open file per shard and
    format, so memory stays flat in N and no decoded byte goes through a GroupByKey.
    """
    units = plan_units(counts, job.batch_size)
    total = sum(counts.values())
    shards = job.shards or outdir.default_shards(total)
    hints = {"accelerator": f"type:{job.gpu};count:1;install-nvidia-driver"} if job.gpu else {}
    keyed = (
        p
        | "CreateShardTasks" >> beam.Create(plan_shard_tasks(units, shards), reshuffle=False)
        | "ShuffleShardTasks" >> beam.Reshuffle()
        | "DecodeLatents" >> GenerateShards(sampler, job.seed, md.path, job.batch_size, md.model_id, job.sampler,
                                            job.batch_size, total, record_filter=record_filter,
                                            max_rounds=job.max_filter_rounds).with_resource_hints(**hints)
    )
    stats_dir = outdir.shard_stats_dir(job.out)
    if "parquet" in job.formats:
        keyed | "WriteParquet" >> WriteParquetShards(
            outdir.shard_dir(job.out, "parquet"), shards, height=md.image_shape[0], width=md.image_shape[1],
            stats_dir=stats_dir)
    if "tfrecord" in job.formats:
        keyed | "WriteTFRecord" >> WriteTFRecordShards(outdir.shard_dir(job.out, "tfrecord"), shards,
                                                       stats_dir=stats_dir)
    summary = keyed | "Batches" >> beam.Values() | "Summarize" >> SummarizeRecords()
    summary | "WriteSummary" >> beam.Map(json.dumps) | beam.io.WriteToText(
        outdir.summary_prefix(job.out), shard_name_template="", num_shards=1)
    return summary


def run_job(job: GenerateJob, beam_args=(), argv=None, test_pipeline=None) -> dict:
    """Validate, run the pipeline to completion, write the manifest. Returns the manifest."""
    t0 = time.time()
    md = ModelDir.open(job.model)
    counts = _validate(job, md)
    total = sum(counts.values())
    shards = job.shards or outdir.default_shards(total)
    if shards <= 0 or shards > total:
        raise UsageError(f"--shards {shards} must be between 1 and the number of records ({total})")
    job.shards = shards
    stats = None
    stats_origin = ""
    if job.sampler in NEEDS_STATS:
        if job.labeled_data:
            stats = ComputeClassStats.run_local(md, job.labeled_data, job.seed, beam_args)
            stats_origin = job.labeled_data
        else:
            stats = md.stats(job.stats)
            stats_origin = job.stats or md.file("latent_stats.npz")
    sampler = build_sampler(job.sampler, md.latent_dim, md.conditional, stats, job.spread, job.gmm_components,
                            job.seed, stats_origin)
    known = sampler.classes()
    if known is not None:
        missing = [c for c in counts if c not in known]
        if missing:
            raise UsageError(f"--classes {missing[0]}: the class statistics have no examples of class "
                             f"{missing[0]}; pick from {known}")
    md.decoder  # fail here, with a clear message, rather than inside a worker
    record_filter, clf_meta = _record_filter(job, md)
    clf_sha256 = clf_meta["sha256"][CLASSIFIER] if clf_meta else None
    fingerprint = job.record_fingerprint(md.model_id, clf_sha256)
    dry_run = job.runner == "DataflowRunner" and any(a in ("--dry_run", "--dry_run=True") for a in beam_args)
    if not dry_run:
        outdir.prepare(job.out, fingerprint, job.overwrite)

    options = _pipeline_options(job, list(beam_args))
    runner = make_runner(options) if test_pipeline is None else None
    p = test_pipeline or beam.Pipeline(runner=runner, options=options)
    build(p, job, md, counts, sampler, record_filter=record_filter)
    started = time.time()
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as e:
        if not dry_run:
            outdir.abandon(job.out)
        raise outdir.JobFailed(e) from e
    if dry_run:
        return {"dry_run": True, "result": result}
    elapsed = time.time() - started
    outdir.remove_temp_leftovers(job.out)
    manifest = outdir.finalize(
        job.out, job.formats, shards, counts,
        {
            "model_id": md.model_id,
            "model_dir": md.path,
            "seed": job.seed,
            "sampler": job.sampler,
            "fingerprint": fingerprint,
            "height": md.image_shape[0],
            "width": md.image_shape[1],
            "latent_dim": md.latent_dim,
            "command": artifacts.command_line(argv),
            "config": {k: v for k, v in asdict(job).items()},
            "beam_args": list(beam_args),
            "versions": artifacts.versions(),
            "runner": runner_description(options),
            "elapsed_seconds": round(time.time() - t0, 3),
            "pipeline_seconds": round(elapsed, 3),
            **({"filter": {"classifier_dir": job.filter_classifier, "min_confidence": job.min_confidence,
                           "classifier_sha256": clf_sha256,
                           "classifier_id": clf_meta.get("classifier_id"),
                           "classifier_test_accuracy": clf_meta.get("metrics", {}).get("test", {}).get("accuracy")}}
               if clf_meta else {}),
        })
    manifest["result"] = result
    return manifest
