"""Dataflow from the driver's side: Beam options as Beam parses them, the GPU and machine type pair, staging from a
clean copy of the package, no driver path in the pickled graph, GPU workers' TensorFlow set up before a model
loads, the job's progress lines; and the job description itself, built by dry runs (`--dry_run True --no_auth`,
nothing submitted, no network) and read back from `--dataflow_job_file`."""
import base64
import bz2
import json
import logging
import os
import re
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.generate.graph import _pipeline_options, build
from pipeline.generate.job import GenerateJob, validate
from pipeline.generate.options import beam_arguments
from pipeline.generate.runners import DATAFLOW_GPUS, check_dataflow_args, dataflow_gpu_args, setup_file
from vae_model.errors import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# The README's "Running on Dataflow" command as written (space-separated Beam options), with the bundled model
# instead of one on GCS and a dry run.
README = ["--runner", "DataflowRunner", "--gpu", "nvidia-l4", "--workers", "4", "--per-class", "1000000",
          "--out", "gs://demo-bucket/out/run1",
          "--project", "demo-project", "--region", "us-central1", "--temp_location", "gs://demo-bucket/tmp",
          "--sdk_container_image", "us-central1-docker.pkg.dev/demo-project/repo/vae-augment-gpu:2.77.0"]
DRY = ["--dry_run", "True", "--no_auth"]


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


def test_beam_options_are_read_as_beam_reads_them_and_the_rest_is_refused():
    from apache_beam.options.pipeline_options import PipelineOptions

    spaced = ["--project", "demo-project", "--region", "us-central1", "--experiments", "a", "--experiments=b",
              "--no_auth", "--dry_run", "True", "--num_workers", "3"]
    args = beam_arguments(spaced)
    assert args == ["--project=demo-project", "--region=us-central1", "--experiments=a", "--experiments=b",
                    "--no_auth", "--dry_run=True", "--num_workers=3"]
    assert PipelineOptions(args).get_all_options() == PipelineOptions(spaced).get_all_options()
    for argv, needle in [(["--project", "p", "stray"], "Received: 'stray'"),
                         (["--projcet", "p"], "did you mean --project?"),
                         (["--num_workers", "many"], "invalid int value: 'many'"),
                         (["--region"], "expected one argument")]:
        with pytest.raises(UsageError, match=re.escape(needle)):
            beam_arguments(argv)


@pytest.mark.parametrize("gpu", sorted(DATAFLOW_GPUS))
def test_each_dataflow_gpu_gets_a_machine_type_of_its_series_unless_one_is_given(gpu):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, WorkerOptions

    series, prefixes, default = DATAFLOW_GPUS[gpu]
    options = _pipeline_options(GenerateJob(out="X", runner="DataflowRunner", gpu=gpu), ["--setup_file=setup.py"])
    assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
        f"worker_accelerator=type:{gpu};count:1;install-nvidia-driver"]
    machine = options.view_as(WorkerOptions).machine_type
    assert machine == default and (machine is None or machine.startswith(prefixes))
    own = f"{prefixes[0]}standard-8" if series in ("G2", "N1") else f"{prefixes[0]}2g"
    assert not [a for a in dataflow_gpu_args(gpu, [f"--machine_type={own}"]) if "machine_type" in a]
    wrong = "n1-standard-4" if series != "N1" else "g2-standard-4"
    with pytest.raises(UsageError, match=f"Expected a machine type of the {series} series for --gpu {gpu}.*'{wrong}'"):
        dataflow_gpu_args(gpu, [f"--worker_machine_type={wrong}"])


def test_l4_runs_on_g2_and_an_unknown_gpu_needs_its_machine_type():
    assert "--machine_type=g2-standard-4" in dataflow_gpu_args("nvidia-l4", [])
    with pytest.raises(UsageError, match="Expected --gpu one of nvidia-l4, .*Received: gpu='nvidia-l5'"):
        dataflow_gpu_args("nvidia-l5", [])
    assert dataflow_gpu_args("nvidia-b200", ["--machine_type=a4-highgpu-8g"]) == [
        "--dataflow_service_options=worker_accelerator=type:nvidia-b200;count:1;install-nvidia-driver"]


def test_a_temp_location_beam_would_replace_over_the_network_is_refused():
    check_dataflow_args(None, ["--temp_location=gs://demo-bucket/tmp"])
    check_dataflow_args(None, ["--temp_location=gs://x/tmp", "--staging_location=gs://demo-bucket/staging"])
    with pytest.raises(UsageError, match="Expected --temp_location=gs://BUCKET/PATH; Beam says: Invalid GCS bucket"):
        check_dataflow_args(None, ["--temp_location=gs://x/tmp"])  # a bucket name has 3 characters at least
    with pytest.raises(UsageError, match="with --no_auth Beam cannot create a default bucket"):
        check_dataflow_args(None, ["--no_auth"])


def test_an_incompatible_gpu_and_machine_type_is_one_usage_line_before_any_work():
    from pipeline.cli import cli

    res = CliRunner().invoke(cli, ["generate", *README, *DRY, "--machine_type", "n1-standard-4"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [
        "Error: Expected a machine type of the G2 series for --gpu nvidia-l4 (e.g. --machine_type=g2-standard-4); "
        "Received: machine_type='n1-standard-4'"]


def _pickled_payloads(proto):
    """(transform or coder, bytes) of everything Beam pickled into a pipeline proto, unpacked."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2 as pb

    def unpack(b):
        try:
            raw = base64.b64decode(b, validate=True)
        except ValueError:
            return b
        for decompress in (zlib.decompress, bz2.decompress):
            try:
                return decompress(raw)
            except (zlib.error, OSError, ValueError):
                pass
        return b

    combines = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
                common_urns.combine_components.COMBINE_GROUPED_VALUES.urn}
    for t in proto.components.transforms.values():
        yield t.unique_name, t.spec.payload
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            pardo = pb.ParDoPayload.FromString(t.spec.payload)
            yield t.unique_name, unpack(pardo.do_fn.payload)
            for side in pardo.side_inputs.values():
                yield t.unique_name, unpack(side.view_fn.payload)
        elif t.spec.urn in combines:
            yield t.unique_name, unpack(pb.CombinePayload.FromString(t.spec.payload).combine_fn.payload)
    for name, coder in proto.components.coders.items():
        yield name, unpack(coder.spec.payload)


def _driver_paths(p):
    """Absolute paths into this checkout pickled into `p`'s graph, except the source file names of pickled code."""
    pattern = re.escape(REPO.encode()) + rb"[\x21-\x7e]*"
    return {(where, m.group().decode()) for where, data in _pickled_payloads(p.to_runner_api())
            for m in re.finditer(pattern, data) if not m.group().endswith(b".py")}


def test_no_driver_path_of_a_bundled_asset_is_pickled_into_the_graph(tmp_path):
    """Workers install the package elsewhere: the bundled model (for decoding and the --labeled-data encoder) and
    the bundled classifier travel as "bundled" and resolve in DoFn.setup."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from vae_model.model_dir import ModelDir

    src = tmp_path / "five.npz"
    rng = np.random.default_rng(0)
    np.savez(src, x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_train=np.arange(50) % 5)
    job = GenerateJob(out=str(tmp_path / "out"), per_class=5, classes=[1, 2], labeled_data=f"npz:{src}",
                      filter_classifier="bundled")
    md = ModelDir.open(job.model)
    p = beam.Pipeline(options=PipelineOptions([]))
    build(p, job, md, validate(job, md))
    assert _driver_paths(p) == set()
    control = beam.Pipeline(options=PipelineOptions([]))  # the check finds such a path where one is
    _ = control | beam.Create([1]) | "HoldsPath" >> beam.Map(lambda x, d: x, md.path)
    assert ("HoldsPath", md.path) in _driver_paths(control)


def test_a_worker_whose_bundled_model_is_not_the_jobs_refuses_to_decode(bundled, classgauss):
    """"bundled" resolves on the worker, to whatever model its install ships: a skewed container must not write
    another model's images under this job's model id."""
    from pipeline.generate.transforms import _GenerateShardFn
    from vae_model.errors import ModelError

    fn = _GenerateShardFn(classgauss, 0, bundled.path, 16, "some-other-model", "classgauss", 16, 16)
    with pytest.raises(ModelError, match=f"is {bundled.model_id}, the job's is some-other-model"):
        fn.setup()
    fn.teardown()


def test_gpu_memory_growth_is_set_before_the_decoder_and_the_classifier_load(monkeypatch, bundled, classgauss):
    """Dataflow runs one SDK process per vCPU on one GPU: each process must let TensorFlow grow its GPU memory
    before it loads a model. Here two fake GPUs; the decoder's batch is --batch-size."""
    import tensorflow as tf

    import vae_model.classifier as classifier
    from pipeline.generate.filter import ClassifierFilter
    from pipeline.generate.transforms import _GenerateShardFn
    from pipeline.generate.worker_env import enable_gpu_memory_growth
    from vae_model.model_dir import ModelDir

    assert enable_gpu_memory_growth() == len(tf.config.list_physical_devices("GPU"))  # no GPU here: a no-op
    events = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0", "GPU:1"])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda d, on: events.append(("grow", d, on)))
    for owner, name in [(ModelDir, "open"), (classifier, "load_classifier")]:
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _real=real, _name=name, **k: events.append(_name) or _real(*a, **k))
    fn = _GenerateShardFn(classgauss, 0, bundled.path, 128, bundled.model_id, "classgauss", 128, 128,
                          record_filter=ClassifierFilter("bundled"))
    fn.setup()
    try:
        assert events == [("grow", "GPU:0", True), ("grow", "GPU:1", True), "open",
                          ("grow", "GPU:0", True), ("grow", "GPU:1", True), "load_classifier"]
        assert fn._handle.decoder.batch_size == 128
    finally:
        fn.teardown()


def test_a_dataflow_job_shows_its_id_console_and_states_one_line_each(capsys):
    """Beam logs these among much else (the whole job proto, every worker message); only they get through, and
    Beam still words them the way we match."""
    import inspect

    from apache_beam.runners.dataflow import dataflow_runner
    from apache_beam.runners.dataflow.internal import apiclient

    from pipeline import logs

    assert repr(logs._CREATED) in inspect.getsource(apiclient) and repr(logs._CONSOLE) in inspect.getsource(apiclient)
    assert repr(logs._STATE) in inspect.getsource(dataflow_runner)
    loggers = [logging.getLogger(n) for n in logs.DATAFLOW_LOGGERS]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    try:
        logs.show_dataflow_progress()
        logs.show_dataflow_progress()  # once is enough: no second handler
        api, runner = loggers
        api.info("Create job: %s", "<the whole job proto>")
        api.info("Created job with id: [%s]", "2026-01-01_00_00_00-123")
        api.info("To access the Dataflow monitoring console, please navigate to "
                 "https://console.cloud.google.com/dataflow/jobs/%s/%s?project=%s", "us-central1", "J1", "demo")
        runner.info("Job %s is in state %s", "J1", "JOB_STATE_RUNNING")
        runner.info("%s: %s", "2026-01-01T00:00:00Z", "JOB_MESSAGE_BASIC: Worker pool started.")
        runner.error("a worker's traceback")
        logging.getLogger("apache_beam.runners.worker").info("bundle chatter")
    finally:
        for lg, (level, propagate, handlers) in zip(loggers, saved):
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers
    assert capsys.readouterr().err.splitlines() == [
        "Dataflow job 2026-01-01_00_00_00-123 created",
        "Dataflow console: https://console.cloud.google.com/dataflow/jobs/us-central1/J1?project=demo",
        "Dataflow job J1: running"]


def test_the_staged_package_is_built_from_a_clean_copy_not_from_the_checkouts_build_dir(tmp_path, capfd):
    """After an in-tree `pip install .`, build/ in the checkout shadowed the `build` module Beam's stager runs
    ("No module named build.__main__") and its leftovers were there to ship."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.stager import Stager

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("setup.py", "vae_model", "pipeline", "configs", "README.md"):
        (checkout / name).symlink_to(os.path.join(REPO, name))
    (checkout / "build" / "lib" / "pipeline").mkdir(parents=True)
    (checkout / "build" / "lib" / "pipeline" / "leftover.py").write_text("")
    staged = setup_file(str(checkout))
    assert os.path.dirname(staged) != str(checkout) and not os.path.exists(os.path.join(os.path.dirname(staged),
                                                                                        "build"))
    resources = Stager.create_job_resources(PipelineOptions([f"--setup_file={staged}"]), str(tmp_path / "stage"))
    [tarball] = [p for p, name, _ in Stager.extract_staging_tuple_iter(resources) if name == "workflow.tar.gz"]
    with tarfile.open(tarball) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pipeline/generate/transforms.py", "vae_model/pretrained/mnist/decoder.keras",
            "configs/default.yaml"} <= names
    assert not [n for n in names if "leftover" in n or n.startswith("build/")]
    err = capfd.readouterr().err
    assert "build.__main__" not in err and "standard file not found" not in err


@pytest.fixture(scope="module")
def readme_dry_run(tmp_path_factory):
    """The README's command through graph.run (the CLI's own parser), as a dry run writing its job file."""
    from pipeline.generate.graph import run

    path = tmp_path_factory.mktemp("dataflow") / "job.json"
    m = run([*README, *DRY, "--dataflow_job_file", str(path)], save_main_session=False)
    with open(path) as f:
        return m["result"].job, json.load(f)


@pytest.mark.e2e  # builds and stages the whole job (a few seconds)
def test_the_readme_command_builds_a_g2_job_with_the_accelerator_and_the_container(readme_dry_run):
    job, description = readme_dry_run
    env = description["environment"]
    [pool] = env["workerPools"]
    assert pool["machineType"] == "g2-standard-4" and pool["numWorkers"] == 4
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 4
    assert "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in env["serviceOptions"]
    assert {i["containerImage"] for i in pool["sdkHarnessContainerImages"]} == {
        "us-central1-docker.pkg.dev/demo-project/repo/vae-augment-gpu:2.77.0"}
    assert "workflow.tar.gz" in {p["name"] for p in pool["packages"]}
    assert env["sdkPipelineOptions"]["options"]["project"] == "demo-project"
    comps = job.proto_pipeline.components
    hinted = {k for k, e in comps.environments.items()
              if e.resource_hints.get("beam:resources:accelerator:v1") ==
              b"type:nvidia-l4;count:1;install-nvidia-driver"}
    decode_envs = {t.environment_id for t in comps.transforms.values()
                   if "DecodeLatents" in t.unique_name and t.environment_id}
    assert decode_envs and decode_envs <= hinted


def _dockerfile() -> tuple[dict, list[tuple[str, str]]]:
    """(ARG defaults, [(instruction, argument)]) of the repo's Dockerfile, continuation lines joined."""
    import re

    text = re.sub(r"\\\n", " ", (Path(REPO) / "Dockerfile").read_text())
    steps = [tuple((line.split(None, 1) + [""])[:2]) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    args = {}
    for op, rest in steps:
        if op == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
    return args, steps


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (Path(REPO) / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_gpu_container_installs_the_wheel_under_constraints_txt_at_its_pins():
    """The Dockerfile (it cannot be built here: no Docker Hub): its base images are the TensorFlow and Beam of
    constraints.txt, every pip install runs under constraints.txt, whatever it pins is constraints.txt's pin, it
    installs the wheel of this package with [gcp], and the wheel is built from exactly the sources Beam's staging
    copies (runners._PACKAGE_SOURCES)."""
    import re
    import shlex

    from pipeline.generate.runners import _PACKAGE_SOURCES

    args, steps = _dockerfile()
    pins = _constraints()

    def expand(s):
        return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], s)

    images = [expand(rest.split()[0]) for op, rest in steps if op == "FROM"]
    assert f"tensorflow/tensorflow:{pins['tensorflow']}-gpu" in images
    assert f"apache/beam_python{args['PYTHON']}_sdk:{pins['apache-beam']}" in images
    assert f"python:{args['PYTHON']}-slim" in images
    assert steps[-1] == ("ENTRYPOINT", '["/opt/apache/beam/boot"]')
    copied = {dest: src for op, rest in steps if op == "COPY" and not rest.startswith("--")
              for *srcs, dest in [rest.split()] for src in srcs}
    installs = [cmd for op, rest in steps if op == "RUN" for cmd in rest.split("&&") if " pip install" in cmd]
    assert installs
    wheel_installed = False
    for cmd in installs:
        words = shlex.split(cmd.replace("$(ls ", "").replace(".whl)", ".whl"))
        assert "-c" in words, f"pip install without -c constraints.txt: {cmd}"
        assert copied.get(words[words.index("-c") + 1]) == "constraints.txt"
        for word in words:
            if "==" in word:
                name, version = word.split("==")
                assert pins.get(name.lower().split("[")[0]) == version, f"{word} is not constraints.txt's pin"
            wheel_installed |= bool(re.fullmatch(r"/tmp/dist/vae_augment-\*\.whl\[gcp\]", word))
    assert wheel_installed
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"] + [len(steps)]
    wheel_stage = next(steps[a:b] for a, b in zip(stages, stages[1:]) if " AS wheel" in steps[a][1])
    sources = {src for op, rest in wheel_stage if op == "COPY" for src in rest.split()[:-1]}
    assert sources == set(_PACKAGE_SOURCES)
    python = ".".join(map(str, sys.version_info[:2]))
    assert args["PYTHON"] == python  # Beam's boot runs the workers with the image's Python: the driver's
