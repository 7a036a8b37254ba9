"""The main job: Create(shard tasks) -> Reshuffle -> sample + decode each task's work units -> write each task's
batches straight into its own Parquet/TFRecord shard (no shuffle of decoded data), then a manifest written only
after every shard is finalized. With --labeled-data the class statistics are one more stage of the same
pipeline, a side input of the sampling stage.

`build` is the graph, `run_job` runs a GenerateJob to its manifest, and `run(argv)` does both from
`vae-augment generate` arguments."""
from __future__ import annotations

import gc
import json
import sys
import time
from dataclasses import asdict

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, TestOptions

from pipeline.dataset import layout, publish
from pipeline.generate.job import GenerateJob, Validated, validate
from pipeline.generate.options import parse_generate_args
from pipeline.generate.planning import plan_shard_tasks, plan_units
from pipeline.generate.runners import (accelerator, dataflow_gpu_args, make_runner, portable_stages_package,
                                       runner_description, setup_file)
from pipeline.generate.sinks import WriteParquetShards, WriteTFRecordShards
from pipeline.generate.transforms import GenerateShards, SummarizeRecords
from vae_model import artifacts
from vae_model.classifier import CLASSIFIER
from vae_model.errors import UserError
from vae_model.model_dir import ModelDir


def _pipeline_options(job: GenerateJob, beam_args: list[str]) -> PipelineOptions:
    args = list(beam_args)
    if job.runner == "DataflowRunner":
        args.append("--runner=DataflowRunner")
        if job.workers:
            args += [f"--num_workers={job.workers}", f"--max_num_workers={job.workers}"]
        if job.gpu:
            args += dataflow_gpu_args(job.gpu, args)
        if not any(a.startswith("--setup_file") for a in args):
            args.append(f"--setup_file={setup_file()}")
    elif job.runner == "PortableRunner":
        args.append("--runner=PortableRunner")
        # a DOCKER or PROCESS environment installs the staged package; a worker pool (EXTERNAL) has its own
        if portable_stages_package(PipelineOptions(args)) and not any(a.startswith("--setup_file") for a in args):
            args.append(f"--setup_file={setup_file()}")
    else:
        if job.runner == "BundleBasedDirectRunner":
            args.append("--runner=BundleBasedDirectRunner")
        if job.workers:
            args.append(f"--direct_num_workers={job.workers}")
            if job.workers > 1 and not any(a.startswith("--direct_running_mode") for a in args):
                args.append("--direct_running_mode=multi_processing")
    return PipelineOptions(args)


def build(p: beam.Pipeline, job: GenerateJob, md: ModelDir, checked: Validated):
    """Adds the generation graph of a validated job to `p`; returns the summary PCollection.

    Work units are dealt to K shard tasks up front (unit_id % K); only those tiny tasks are shuffled. Each task
    is sampled, decoded, encoded, hashed and written inside one fused stage, one open file per shard and
    format, so memory stays flat in N and no decoded byte goes through a GroupByKey.
    """
    units = plan_units(checked.counts, job.batch_size)
    total = sum(checked.counts.values())
    hints = {"accelerator": accelerator(job.gpu)} if job.gpu else {}
    stats = None
    if checked.class_stats is not None:
        # --labeled-data: the samplers are built on the workers from statistics computed in this same job
        stats = beam.pvalue.AsSingleton(p | "ClassStats" >> checked.class_stats)
    keyed = (
        p
        | "CreateShardTasks" >> beam.Create(plan_shard_tasks(units, job.shards), reshuffle=False)
        | "ShuffleShardTasks" >> beam.Reshuffle()
        | "DecodeLatents" >> GenerateShards(checked.sampler, job.seed, md.path, job.batch_size, md.model_id,
                                            job.sampler, job.batch_size, total, record_filter=checked.record_filter,
                                            max_rounds=job.max_filter_rounds, stats=stats).with_resource_hints(**hints)
    )
    stats_dir = layout.shard_stats_dir(job.out)
    if "parquet" in job.formats:
        keyed | "WriteParquet" >> WriteParquetShards(
            layout.shard_dir(job.out, "parquet"), job.shards, height=md.image_shape[0], width=md.image_shape[1],
            stats_dir=stats_dir)
    if "tfrecord" in job.formats:
        keyed | "WriteTFRecord" >> WriteTFRecordShards(layout.shard_dir(job.out, "tfrecord"), job.shards,
                                                       stats_dir=stats_dir)
    summary = keyed | "Batches" >> beam.Values() | "Summarize" >> SummarizeRecords()
    summary | "WriteSummary" >> beam.Map(_write_summary, layout.summary_prefix(job.out))
    return summary


def _write_summary(summary: dict, path: str) -> None:
    # One file at its exact name (a retry rewrites it whole): Beam's WriteToText finalizes through a glob of
    # its path, which a `[` in --out breaks.
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary).encode() + b"\n")


def run_job(job: GenerateJob, beam_args=(), argv=None, test_pipeline=None) -> dict:
    """Validate, then, holding OUT's job lock, prepare OUT, run the pipeline to completion and publish the
    manifest; any failure from there on cleans OUT up and is one UserError line. Returns the manifest."""
    t0 = time.time()
    md = ModelDir.open(job.model)
    checked = validate(job, md)
    clf_meta = checked.classifier_meta
    clf_sha256 = clf_meta["sha256"][CLASSIFIER] if clf_meta else None
    fingerprint = job.record_fingerprint(md.model_id, clf_sha256)
    options = _pipeline_options(job, list(beam_args))
    publish.use_anonymous_gcs(options.view_as(GoogleCloudOptions).no_auth)
    runner = make_runner(options) if test_pipeline is None else None
    p = test_pipeline or beam.Pipeline(runner=runner, options=options)
    if job.runner == "DataflowRunner" and options.view_as(TestOptions).dry_run:  # as Beam itself decides
        build(p, job, md, checked)
        try:
            result = p.run()
            result.wait_until_finish()
        except Exception as e:
            raise publish.JobFailed(e) from e
        return {"dry_run": True, "result": result}
    info = _manifest_info(job, md, checked, fingerprint, options, argv, beam_args)
    with publish.exclusive(job.out, fingerprint):
        publish.prepare(job.out, fingerprint, job.overwrite)
        try:
            build(p, job, md, checked)
            started = time.time()
            result = p.run()
            result.wait_until_finish()
            timing = {"elapsed_seconds": round(time.time() - t0, 3),
                      "pipeline_seconds": round(time.time() - started, 3)}
            publish.remove_temp_leftovers(job.out)
            manifest = publish.finalize(job.out, job.formats, job.shards, checked.counts, {**info, **timing})
        except BaseException as e:
            failed = e if isinstance(e, UserError) or not isinstance(e, Exception) else publish.JobFailed(e)
            _let_go(e)
            publish.abandon(job.out)
            if failed is e:
                raise  # already one line, or Ctrl-C
            raise failed from e
    manifest["result"] = result
    return manifest


def _let_go(error: BaseException) -> None:
    """Free what a failed run still holds through `error`'s tracebacks, before the cleanup looks: a failed bundle's
    open GCS writer uploads its partial temp object when it is garbage-collected, which would be after `abandon`."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    gc.collect()


def _manifest_info(job: GenerateJob, md: ModelDir, checked: Validated, fingerprint: str, options, argv,
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


def run(argv=None, save_main_session=True, test_pipeline=None) -> dict:
    """The job from `vae-augment generate` arguments, in the style of Beam's examples: `argv` (default
    sys.argv[1:]) holds the generate flags and any Beam options, parsed by the same command as the CLI's.
    Returns the manifest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job, beam_args = parse_generate_args(argv)
    if save_main_session:
        beam_args.append("--save_main_session")
    return run_job(job, beam_args, argv=["vae-augment", "generate", *argv], test_pipeline=test_pipeline)
