"""Retries and failures of the generate job: nothing lost, nothing duplicated, nothing partial. Every test but the
first runs whole jobs, with faults injected by pipeline/generate/faults.py."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.dataset.readers import load_parquet, tfrecord_dataset
from pipeline.dataset.verify import verify_output
from pipeline.generate import faults
from pipeline.generate.graph import run_job
from pipeline.generate.job import GenerateJob
from vae_model.errors import DataError

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
JOB = dict(per_class=100, classes=[0, 1, 2], batch_size=64, seed=3, shards=2)  # 6 work units


@pytest.fixture(autouse=True)
def fresh_faults(monkeypatch, tmp_path):
    faults._fired.clear()
    monkeypatch.setenv("VAE_AUGMENT_FAULTS_LOG", str(tmp_path / "faults.log"))
    yield
    faults._fired.clear()


def test_faults_fail_the_first_attempt_or_every_attempt(monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "decode:2,write:1:always")
    faults.maybe_fail("decode", 1)  # not planned
    with pytest.raises(faults.InjectedFault, match="once fault in decode of work unit 2"):
        faults.maybe_fail("decode", 2)
    faults.maybe_fail("decode", 2)  # the retry passes
    for _ in range(2):
        with pytest.raises(faults.InjectedFault, match="always fault in write of shard 1"):
            faults.maybe_fail("write", 1)
    assert fired(tmp_path) == ["decode:2:once", "write:1:always", "write:1:always"]


def fired(tmp_path):
    path = tmp_path / "faults.log"
    return path.read_text().split() if path.exists() else []


def leftovers(out):
    return [p for p in out.rglob("*") if "temp" in p.name]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "o"
    return run_job(GenerateJob(out=str(out), **JOB), LOCAL)


def assert_same_records(out, clean):
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset_digest"] == clean["dataset_digest"]
    assert manifest["per_class"] == clean["per_class"] == {"0": 100, "1": 100, "2": 100}
    assert verify_output(str(out)) == []  # reads every record of both formats back: ids unique, counts, digest
    ids = [int(i) for _, _, i in tfrecord_dataset(str(out), with_ids=True).as_numpy_iterator()]
    assert len(ids) == len(set(ids)) == 300
    assert not leftovers(out)


@pytest.mark.e2e
def test_every_bundle_replayed_gives_the_same_records(tmp_path, clean):
    out = tmp_path / "o"
    run_job(GenerateJob(out=str(out), **JOB), LOCAL + ["--direct_runner_bundle_repeat=2"])
    assert_same_records(out, clean)


@pytest.mark.e2e
def test_first_attempt_faults_are_retried_to_the_same_records(tmp_path, clean, monkeypatch):
    """BundleBasedDirectRunner retries a failed bundle (as Dataflow does); the fault log proves it fired."""
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "sample:1,decode:4")
    out = tmp_path / "o"
    run_job(GenerateJob(out=str(out), runner="BundleBasedDirectRunner", **JOB), [])
    assert sorted(fired(tmp_path)) == ["decode:4:once", "sample:1:once"]
    assert_same_records(out, clean)


@pytest.mark.e2e
def test_a_write_that_fails_after_its_first_batch_is_retried_to_the_same_records(tmp_path, clean, monkeypatch):
    """The writer of shard 1 dies with a half-written temp file; the retried bundle rewrites it, and neither the
    partial file nor a duplicate of its records reaches the output."""
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "write:1")
    out = tmp_path / "o"
    run_job(GenerateJob(out=str(out), runner="BundleBasedDirectRunner", **JOB), [])
    assert fired(tmp_path) == ["write:1:once"]  # the first writer of shard 1 (either format) failed once
    assert_same_records(out, clean)
    assert not leftovers(out)


@pytest.mark.e2e
def test_permanent_write_failure_publishes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "write:0:always")
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["generate", "--out", str(out), "--per-class", "50", "--classes", "0,1",
                                   "--batch-size", "64", "--shards", "2", *LOCAL])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "InjectedFault: injected always fault in write of shard 0" in res.output.strip().splitlines()[-1]
    assert not (out / "manifest.json").exists()
    assert not (out / "parquet").exists() and not (out / "tfrecord").exists()


@pytest.mark.e2e
def test_permanent_failure_publishes_nothing_and_a_rerun_succeeds(tmp_path, clean, monkeypatch):
    out = tmp_path / "o"
    args = ["generate", "--out", str(out), "--per-class", "100", "--classes", "0,1,2", "--batch-size", "64",
            "--seed", "3", "--shards", "2", *LOCAL]
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "decode:2:always")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert "Traceback" not in res.output
    assert lines[-1].startswith("Error: generation job failed: InjectedFault: injected always fault in decode "
                                "of work unit 2")
    assert "decode:2:always" in fired(tmp_path)
    assert not (out / "manifest.json").exists()
    assert not (out / "parquet").exists() and not (out / "tfrecord").exists()
    with pytest.raises(DataError, match="no manifest.json"):
        load_parquet(str(out))
    monkeypatch.delenv("VAE_AUGMENT_FAULTS")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert_same_records(out, clean)


@pytest.mark.e2e
def test_overwrite_removes_the_old_manifest_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "o"
    run_job(GenerateJob(out=str(out), per_class=10, batch_size=64), LOCAL)
    assert (out / "manifest.json").exists()
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "decode:0:always")
    res = CliRunner().invoke(cli, ["generate", "--out", str(out), "--per-class", "20", "--seed", "8",
                                   "--overwrite", *LOCAL])
    assert res.exit_code == 1
    # the crash happened after --overwrite took effect: no stale manifest describes the (gone) new files
    assert not (out / "manifest.json").exists() and not (out / "parquet").exists()


@pytest.mark.e2e
def test_nan_from_the_decoder_fails_the_job_and_writes_nothing(tmp_path, bundled, reseal):
    import keras
    model = tmp_path / "nanmodel"
    shutil.copytree(bundled.path, model)
    dec = keras.models.load_model(model / "decoder.keras", compile=False)
    w = dec.layers[-2].get_weights()
    w[0][0, :] = np.nan  # one input unit poisons every pixel
    dec.layers[-2].set_weights(w)
    dec.save(model / "decoder.keras")
    reseal(model, "decoder.keras")
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["generate", "--model", str(model), "--out", str(out), "--per-class", "10",
                                   *LOCAL])
    assert res.exit_code == 1
    assert "NaN/Inf" in res.output.strip().splitlines()[-1] and "Traceback" not in res.output
    assert not (out / "manifest.json").exists() and not (out / "parquet").exists()


@pytest.mark.e2e
def test_many_bundles_under_multi_processing_keep_exact_counts(tmp_path, clean):
    out = tmp_path / "o"
    m = run_job(GenerateJob(out=str(out), per_class=640, classes=[0, 1, 2, 3, 4], batch_size=32, seed=1, shards=4),
                ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert m["total"] == 3200 and m["per_class"] == {str(c): 640 for c in range(5)}  # 100 work units
    assert verify_output(str(out)) == []
    images, labels = load_parquet(str(out))
    assert np.bincount(labels).tolist() == [640] * 5


@pytest.mark.e2e
def test_rerun_with_different_shards_replaces_the_old_shard_files(tmp_path, clean):
    out = tmp_path / "o"
    run_job(GenerateJob(out=str(out), **JOB), LOCAL)
    run_job(GenerateJob(out=str(out), **{**JOB, "shards": 3}), LOCAL)  # same records, other layout: allowed
    names = sorted(p.name for p in (out / "parquet").iterdir())
    assert names == [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    assert_same_records(out, clean)
