"""Which Beam runner executes a job. Locally we use Beam's portable FnApiRunner directly: it is what
DirectRunner ends up using for batch jobs, without first trying (and, offline, failing to download) Prism."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from vae_model.errors import UsageError


def is_dataflow(options: PipelineOptions) -> bool:
    return (options.view_as(StandardOptions).runner or "").endswith("DataflowRunner")


def make_runner(options: PipelineOptions):
    """FnApiRunner for local runs (honours --direct_running_mode/--direct_num_workers); None = use options.

    `--runner=BundleBasedDirectRunner` selects Beam's older local runner, which retries a failed bundle up to
    four times the way Dataflow does (the FnApiRunner does not retry): slower, used to test retry safety.
    """
    if is_dataflow(options):
        return None
    if (options.view_as(StandardOptions).runner or "").endswith("BundleBasedDirectRunner"):
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
        return BundleBasedDirectRunner()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # Same provisioning DirectRunner does, so multi_processing workers see the pipeline options.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def runner_description(options: PipelineOptions) -> dict:
    if is_dataflow(options):
        return {"runner": "DataflowRunner"}
    if (options.view_as(StandardOptions).runner or "").endswith("BundleBasedDirectRunner"):
        return {"runner": "BundleBasedDirectRunner"}
    d = options.view_as(DirectOptions)
    return {"runner": "DirectRunner (Beam FnApiRunner)", "direct_running_mode": d.direct_running_mode,
            "direct_num_workers": d.direct_num_workers}


def setup_file() -> str:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "setup.py")
    if not os.path.exists(path):
        raise UsageError("DataflowRunner needs the package staged: pass --setup_file=PATH/TO/vae-augment/setup.py")
    return path
