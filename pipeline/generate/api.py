"""Generation inside your own Beam pipeline: two public composite transforms.

    with beam.Pipeline() as p:
        p | GenerateRecords(per_class=50, seed=1) | WriteShards("out/mine")

`GenerateRecords` opens the model and checks its arguments the way `vae-augment generate` does (the same
GenerateJob and `validate`, on the driver, when it is constructed), plans the shard tasks and yields
(shard, RecordBatch) pairs. `WriteShards` writes them as Parquet and/or TFRecord shards and publishes the
manifest as the pipeline's last step, so `vae-augment verify OUT` accepts the output and its records equal
those of `generate` with the same arguments. `graph.build` (the `generate` job) is these two transforms.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

from pipeline.dataset import layout, publish
from pipeline.generate.job import (DEFAULT_SAMPLER, FORMATS, MAX_FILTER_ROUNDS, RUNNERS, GenerateJob, Validated,
                                  validate)
from pipeline.generate.planning import plan_shard_tasks, plan_units
from pipeline.generate.runners import REMOTE_RUNNERS, accelerator, check_worker_paths, runner_description
from pipeline.generate.sinks import WriteParquetShards, WriteTFRecordShards, check_checksums
from pipeline.generate.transforms import GenerateShards, SummarizeRecords
from vae_model import artifacts
from vae_model.classifier import CLASSIFIER
from vae_model.model_dir import ModelDir

__all__ = ["GenerateRecords", "WriteShards"]


class _Plan(NamedTuple):
    """What GenerateRecords settled on the driver and WriteShards needs (driver-side only, never pickled)."""

    job: GenerateJob  # validated: defaults filled in (shards, spread, ...)
    md: ModelDir
    checked: Validated
    fingerprint: str
    shard_rows: tuple[int, ...] | None = None  # planned records per shard (set in expand)


_PLAN = "_vae_augment_plan"  # attribute of GenerateRecords' output PCollection


def _int_arg(name: str, value, positive: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise ValueError(f"Expected {name} to be {'a positive' if positive else 'an'} int or None, "
                         f"Received: {name}={value!r}")


def fingerprint_of(job: GenerateJob, checked: Validated, md: ModelDir) -> str:
    """The job's record fingerprint (what decides its records), as OUT's lock and job marker record it."""
    clf_meta = checked.classifier_meta
    return job.record_fingerprint(md.model_id, clf_meta["sha256"][CLASSIFIER] if clf_meta else None)


class GenerateRecords(beam.PTransform):
    """PBegin -> PCollection of (shard, RecordBatch): synthetic labeled records decoded by a VAE.

    The arguments are `vae-augment generate`'s (README, "Generating"), with the same defaults: `model` is a model
    directory (local or gs://) or "bundled"; give exactly one of `num` (split evenly over `classes`) or
    `per_class`; `classes` defaults to all. `shards` defaults to one per 50,000 records. The records are a pure
    function of these arguments (not of workers, runner or retries) and equal `generate`'s. `latents` (a .npy
    or Parquet file of latent codes, with optional labels) decodes those codes instead of sampling.

    Everything is checked here, on the driver, before anything runs (UserError, one line; ValueError for an
    argument of the wrong type). Apply `WriteShards` directly to the output: every shard's batches come from one
    element, which the sinks rely on, and the shard count and planned counts travel with the PCollection.
    """

    def __init__(self, model: str | None = "bundled", sampler: str = DEFAULT_SAMPLER, *, num: int | None = None,
                 per_class: int | None = None, classes: list[int] | None = None, seed: int = 0,
                 shards: int | None = None, batch_size: int = 4096, spread: float | None = None,
                 stats: str | None = None, labeled_data: str | None = None, gmm_components: int = 3,
                 filter_classifier: str | None = None, min_confidence: float | None = None,
                 max_filter_rounds: int = MAX_FILTER_ROUNDS, latents: str | None = None, label: str | None = None):
        super().__init__(label)
        if model is not None and not isinstance(model, str):
            raise ValueError(f"Expected model to be a model directory, gs:// URL or 'bundled', "
                             f"Received: model={model!r}")
        for name, value in (("num", num), ("per_class", per_class), ("seed", seed), ("shards", shards),
                            ("batch_size", batch_size), ("gmm_components", gmm_components),
                            ("max_filter_rounds", max_filter_rounds)):
            _int_arg(name, value)
        if classes is not None and (isinstance(classes, (str, int)) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in classes)):
            raise ValueError(f"Expected classes to be a list of ints or None, Received: classes={classes!r}")
        job = GenerateJob(out="", model=model, num=num, per_class=per_class, sampler=sampler,
                          classes=None if classes is None else list(classes), spread=spread,
                          labeled_data=labeled_data, stats=stats, gmm_components=gmm_components, seed=seed,
                          shards=shards, batch_size=batch_size, filter_classifier=filter_classifier,
                          min_confidence=min_confidence, max_filter_rounds=max_filter_rounds,
                          **({} if latents is None else {"latents": latents}))
        md = ModelDir.open(job.model)
        checked = validate(job, md)  # the generate job's own checks; fills in shards, spread, ...
        self._plan = _Plan(job, md, checked, fingerprint_of(job, checked, md))
        self._stats = None

    @classmethod
    def _from_validated(cls, job: GenerateJob, md: ModelDir, checked: Validated, stats=None,
                        label: str | None = None) -> GenerateRecords:
        """The transform of a job `validate` has already checked (graph.build); `stats` the class statistics side
        input when the caller runs that stage itself."""
        self = cls.__new__(cls)
        beam.PTransform.__init__(self, label)
        self._plan = _Plan(job, md, checked, fingerprint_of(job, checked, md))
        self._stats = stats
        return self

    @property
    def num_shards(self) -> int:
        return self._plan.job.shards

    @property
    def counts(self) -> dict[int, int]:
        """Records per class as planned ({-1: n} for unlabeled records)."""
        return dict(self._plan.checked.counts)

    def expand(self, pbegin):
        job, md, checked = self._plan.job, self._plan.md, self._plan.checked
        if getattr(job, "latents", None) is not None:  # a user's latent file plans its own units
            units = checked.sampler.plan(job.batch_size, job.shards)
        else:
            units = plan_units(checked.counts, job.batch_size, job.shards)
        stats = self._stats
        if stats is None and checked.class_stats is not None:
            # --labeled-data: the samplers are built on the workers from statistics computed in this same job
            stats = beam.pvalue.AsSingleton(pbegin | "ClassStats" >> checked.class_stats)
        hints = {"accelerator": accelerator(job.gpu)} if job.gpu else {}
        tasks = plan_shard_tasks(units, job.shards)
        records = (
            pbegin
            | "CreateShardTasks" >> beam.Create(tasks, reshuffle=False)
            | "ShuffleShardTasks" >> beam.Reshuffle()  # only the tiny tasks: decoded data is never shuffled
            # the posterior pool is read on the workers, not pickled into the DoFn (samplers.StatsFileSampler)
            | "DecodeLatents" >> GenerateShards(checked.worker_sampler or checked.sampler, job.seed, md.path,
                                                job.batch_size, md.model_id, job.sampler, job.batch_size,
                                                sum(checked.counts.values()),
                                                record_filter=checked.record_filter,
                                                max_rounds=job.max_filter_rounds,
                                                stats=stats).with_resource_hints(**hints)
        )
        shard_rows = tuple(sum(u.count for u in t.units) for t in tasks)  # lets the sinks finish each shard early
        setattr(records, _PLAN, self._plan._replace(shard_rows=shard_rows))
        return records


def manifest_info(job: GenerateJob, md: ModelDir, checked: Validated, fingerprint: str, options, argv,
                  beam_args) -> dict:
    """What the manifest records about the job besides its records and timing."""
    clf_meta = checked.classifier_meta
    return {
        "model_id": md.model_id,
        "model_dir": md.path,
        "seed": job.seed,
        "sampler": job.sampler,
        "fingerprint": fingerprint,
        "height": md.image_shape[0],
        "width": md.image_shape[1],
        "latent_dim": md.latent_dim,
        "command": artifacts.command_line(argv),
        "config": asdict(job),
        "beam_args": list(beam_args),
        "versions": artifacts.versions(),
        "runner": runner_description(options),
        **({"filter": {"classifier_dir": job.filter_classifier, "min_confidence": job.min_confidence,
                       "classifier_sha256": clf_meta["sha256"][CLASSIFIER],
                       "classifier_id": clf_meta.get("classifier_id"),
                       "classifier_test_accuracy": clf_meta.get("metrics", {}).get("test", {}).get("accuracy")}}
           if clf_meta else {}),
    }


def write_summary(summary: dict, path: str) -> None:
    # One file at its exact name (a retry rewrites it whole): Beam's WriteToText finalizes through a glob of
    # its path, which a `[` in --out breaks.
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary).encode() + b"\n")


def _publish(summary: dict, *written, lock, out, formats, shards, counts, info, started) -> dict:
    """The pipeline's last step, after both sinks (their paths are side inputs): publish the manifest, then let
    go of OUT's lock. Any failure removes what the job wrote, as `generate` does."""
    try:
        write_summary(summary, layout.summary_prefix(out))  # here, so a retried step finds it again
        publish.remove_temp_leftovers(out)
        return publish.finalize(out, formats, shards, counts,
                                {**info, "elapsed_seconds": round(time.time() - started, 3)})
    except BaseException:
        publish.abandon(out)
        raise
    finally:
        publish.release(lock)


def _runner_name(pipeline) -> str:
    """The pipeline's runner as GenerateJob.runner names it (for the remote-worker path checks)."""
    name = pipeline.options.view_as(StandardOptions).runner or type(pipeline.runner).__name__
    name = name.rsplit(".", 1)[-1]
    return name if name in RUNNERS else "DirectRunner"


class WriteShards(beam.PTransform):
    """(shard, RecordBatch) from GenerateRecords -> a `generate` output at `out` (local folder or gs://).

    Writes `formats` (default both) as `out/parquet/part-SSSSS-of-NNNNN.parquet` and `out/tfrecord/...` shards,
    checksummed as they are written (crc32c, plus sha256 with checksums=("crc32c", "sha256")), then, as the
    pipeline's last step once both sinks are done, the manifest, the dataset card and the TFDS metadata.

    Like `generate`, it takes OUT's job lock and prepares OUT when the pipeline is built, on the driver: a folder
    holding files vae-augment did not write is refused (UserError), and another job's output is replaced only with
    `overwrite=True`; the same arguments again replace their own output. The lock is released when the manifest is
    published. If the pipeline fails, no manifest is written and the lock stays (naming this process); the next
    job says so, and once this process has exited it is safe to delete the lock it names.

    Returns a PCollection of one dict: the published manifest (`publish=False`: the job summary, for a caller
    that publishes itself, as `vae-augment generate` does after the pipeline).
    """

    def __init__(self, out: str, formats=FORMATS, *, overwrite: bool = False, checksums=None,
                 publish: bool = True, label: str | None = None):
        super().__init__(label)
        if not isinstance(out, str) or not out:
            raise ValueError(f"Expected out to be a folder path or gs:// URL, Received: out={out!r}")
        formats = [formats] if isinstance(formats, str) else list(formats)
        if not formats or any(f not in FORMATS for f in formats) or len(set(formats)) != len(formats):
            raise ValueError(f"Expected formats to be a non-empty subset of {FORMATS}, Received: formats={formats!r}")
        self._out = out
        self._formats = formats
        self._overwrite = bool(overwrite)
        self._checksums = None if checksums is None else check_checksums(checksums)
        self._publish = publish

    def expand(self, records):
        plan = getattr(records, _PLAN, None)
        if plan is None:
            where = records.producer.full_label if getattr(records, "producer", None) else type(records).__name__
            raise ValueError("Expected the output of GenerateRecords (its shards and planned counts travel with it), "
                             f"Received: records produced by {where!r}")
        job = copy.copy(plan.job)  # not dataclasses.replace: it would reset the fields validate set (init=False)
        job.out, job.formats, job.overwrite = self._out, list(self._formats), self._overwrite
        if self._checksums is not None:
            job.checksums = self._checksums
        checksums = getattr(job, "checksums", ("crc32c",))
        md = plan.md
        stats_dir = layout.shard_stats_dir(job.out)
        written = []
        if "parquet" in job.formats:
            written.append(records | "WriteParquet" >> WriteParquetShards(
                layout.shard_dir(job.out, "parquet"), job.shards, height=md.image_shape[0],
                width=md.image_shape[1], stats_dir=stats_dir, checksums=checksums, shard_rows=plan.shard_rows))
        if "tfrecord" in job.formats:
            written.append(records | "WriteTFRecord" >> WriteTFRecordShards(
                layout.shard_dir(job.out, "tfrecord"), job.shards, stats_dir=stats_dir, checksums=checksums,
                shard_rows=plan.shard_rows))
        summary = records | "Batches" >> beam.Values() | "Summarize" >> SummarizeRecords()
        if not self._publish:
            summary | "WriteSummary" >> beam.Map(write_summary, layout.summary_prefix(job.out))
            return summary
        return summary | "Publish" >> beam.Map(_publish, *(beam.pvalue.AsList(w) for w in written),
                                               **self._prepare(records.pipeline, job, plan))

    def _prepare(self, pipeline, job: GenerateJob, plan: _Plan) -> dict:
        """On the driver, as `generate` does before its pipeline runs: check OUT, take its lock, prepare it.
        Returns the Publish step's arguments."""
        job.runner = _runner_name(pipeline)
        if job.runner in REMOTE_RUNNERS:
            check_worker_paths(job)  # --model/--out must be readable by every worker
        options = pipeline.options
        publish.use_anonymous_gcs(options.view_as(GoogleCloudOptions).no_auth)
        info = manifest_info(job, plan.md, plan.checked, plan.fingerprint, options, None, [])
        started = time.time()
        lock = publish.acquire(job.out, plan.fingerprint)
        try:
            publish.prepare(job.out, plan.fingerprint, job.overwrite)
        except BaseException:
            publish.release(lock)
            raise
        return dict(lock=lock, out=job.out, formats=list(job.formats), shards=job.shards,
                    counts=dict(plan.checked.counts), info=info, started=started)
