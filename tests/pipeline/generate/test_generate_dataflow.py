"""Dataflow: the job is built (`--dry_run=True --no_auth`, nothing submitted) with the options Dataflow needs."""
import pytest

from pipeline.generate.graph import _pipeline_options, run_job
from pipeline.generate.job import GenerateJob

DATAFLOW = ["--project=my-project", "--region=us-central1", "--temp_location=gs://my-bucket/tmp", "--dry_run=True",
            "--no_auth"]


def test_local_worker_counts_select_the_runner_mode():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    one = _pipeline_options(GenerateJob(out="X", workers=1), []).view_as(DirectOptions)
    assert one.direct_num_workers == 1 and one.direct_running_mode != "multi_processing"
    two = _pipeline_options(GenerateJob(out="X", workers=2), []).view_as(DirectOptions)
    assert two.direct_num_workers == 2 and two.direct_running_mode == "multi_processing"
    kept = _pipeline_options(GenerateJob(out="X", workers=2), ["--direct_running_mode=multi_threading"])
    assert kept.view_as(DirectOptions).direct_running_mode == "multi_threading"
    retries = _pipeline_options(GenerateJob(out="X", runner="BundleBasedDirectRunner"), [])
    assert retries.view_as(StandardOptions).runner == "BundleBasedDirectRunner"


@pytest.mark.e2e  # runs run_job, which builds and stages the whole job (a few seconds)
def test_dataflow_dry_run_carries_gpu_option_resource_hint_and_setup_file():
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, WorkerOptions

    m = run_job(GenerateJob(out="gs://my-bucket/out", per_class=10, runner="DataflowRunner", gpu="nvidia-l4",
                            workers=4), DATAFLOW)
    job = m["result"].job
    assert "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in \
        job.options.view_as(GoogleCloudOptions).dataflow_service_options
    assert job.options.view_as(WorkerOptions).max_num_workers == 4
    assert job.options.view_as(SetupOptions).setup_file.endswith("setup.py")
    envs = job.proto_pipeline.components.environments.values()
    hints = [dict(e.resource_hints) for e in envs]
    assert {"beam:resources:accelerator:v1": b"type:nvidia-l4;count:1;install-nvidia-driver"} in hints
    staged = [a.role_payload for e in envs for a in e.dependencies]
    assert any(b"workflow.tar.gz" in p for p in staged)
    comps = job.proto_pipeline.components
    hinted = {k for k, e in comps.environments.items() if "beam:resources:accelerator:v1" in e.resource_hints}
    decode_envs = {t.environment_id for t in comps.transforms.values()
                   if "DecodeLatents" in t.unique_name and t.environment_id}
    assert decode_envs and decode_envs <= hinted
