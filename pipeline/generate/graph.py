"""The main job: Create(shard tasks) -> Reshuffle -> sample + decode each task's work units -> write each task's
batches straight into its own Parquet/TFRecord shard (no shuffle of decoded data), then a manifest written only
after every shard is finalized. The graph is api.GenerateRecords | api.WriteShards, the transforms Beam users
put in their own pipelines. With --labeled-data the class statistics are one more stage of the same
pipeline, a side input of the sampling stage.

`build` is the graph, `run_job` runs a GenerateJob to its manifest, and `run(argv)` does both from
`vae-augment generate` arguments."""
from __future__ import annotations

import gc
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, TestOptions

from pipeline.dataset import publish
from pipeline.generate.api import GenerateRecords, WriteShards, fingerprint_of, manifest_info
from pipeline.generate.job import GenerateJob, Validated, validate
from pipeline.generate.options import parse_generate_args
from pipeline.generate.runners import dataflow_gpu_args, make_runner, portable_stages_package, setup_file
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
    """Adds the generation graph of a validated job to `p`; returns the summary PCollection. It is the public
    transforms `GenerateRecords | WriteShards` (pipeline.generate.api), with the manifest left to run_job.

    Work units are dealt to K shard tasks up front (unit_id % K); only those tiny tasks are shuffled. Each task
    is sampled, decoded, encoded, hashed and written inside one fused stage, one open file per shard and
    format, so memory stays flat in N and no decoded byte goes through a GroupByKey.
    """
    stats = None
    if checked.class_stats is not None:
        # --labeled-data: a top-level stage of the job (its stage names, as tests and Dataflow's UI show them)
        stats = beam.pvalue.AsSingleton(p | "ClassStats" >> checked.class_stats)
    records = p | "Generate" >> GenerateRecords._from_validated(job, md, checked, stats=stats)  # noqa: SLF001
    return records | "Write" >> WriteShards(job.out, job.formats, overwrite=job.overwrite,
                                            checksums=getattr(job, "checksums", ("crc32c",)), publish=False)


def run_job(job: GenerateJob, beam_args=(), argv=None, test_pipeline=None) -> dict:
    """Validate, then, holding OUT's job lock, prepare OUT, run the pipeline to completion and publish the
    manifest; any failure from there on cleans OUT up and is one UserError line. Returns the manifest."""
    t0 = time.time()
    md = ModelDir.open(job.model)
    checked = validate(job, md)
    fingerprint = fingerprint_of(job, checked, md)
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
    info = manifest_info(job, md, checked, fingerprint, options, argv, beam_args)
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


def run(argv=None, save_main_session=True, test_pipeline=None) -> dict:
    """The job from `vae-augment generate` arguments, in the style of Beam's examples: `argv` (default
    sys.argv[1:]) holds the generate flags and any Beam options, parsed by the same command as the CLI's.
    Returns the manifest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job, beam_args = parse_generate_args(argv)
    if save_main_session:
        beam_args.append("--save_main_session")
    return run_job(job, beam_args, argv=["vae-augment", "generate", *argv], test_pipeline=test_pipeline)
