"""Start-up stays light (issue 15): `vae-augment --help`, `vae-augment verify` of a local output and importing the
public readers load neither TensorFlow, Keras nor Beam's runner machinery (each costs seconds). Each check runs in
a fresh interpreter and looks at sys.modules afterwards."""
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("tensorflow", "keras", "apache_beam.runners")
_REPORT = ("import sys, json\n"
           "print(json.dumps(sorted({m.split('.')[0] if not m.startswith('apache_beam.runners') else "
           "'apache_beam.runners' for m in sys.modules} & set(%r))))" % (HEAVY,))


def _heavy_after(code: str) -> tuple[list[str], subprocess.CompletedProcess]:
    """The heavy modules loaded once `code` has run in a fresh interpreter (and the finished process)."""
    r = subprocess.run([sys.executable, "-c", code + "\n" + _REPORT], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r


def _cli(args) -> str:
    return ("import pipeline.cli\ntry:\n    pipeline.cli.cli.main(%r, prog_name='vae-augment')\n"
            "except SystemExit as e:\n    print('exit', e.code)\n" % (list(args),))


def _dataset_writer(name: str):
    """A fresh copy of tests/pipeline/dataset/conftest.py (the dataset tests' Beam-free output writer) as `name`."""
    conftest = Path(__file__).parent / "dataset" / "conftest.py"
    spec = importlib.util.spec_from_file_location(name, conftest)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """(both formats, parquet only): small finished outputs written without Beam (the dataset tests' writer)."""
    mod = _dataset_writer("dataset_conftest_for_startup")
    both = str(tmp_path_factory.mktemp("startup") / "both")
    mod.write_generate_output(both)
    parquet = str(tmp_path_factory.mktemp("startup") / "parquet")
    shutil.copytree(both, parquet)
    shutil.rmtree(os.path.join(parquet, "tfrecord"))
    path = os.path.join(parquet, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["formats"] = ["parquet"]
    manifest["shards"] = [s for s in manifest["shards"] if s["format"] == "parquet"]
    with open(path, "w") as f:
        json.dump(manifest, f)
    return both, parquet


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["verify", "--help"], ["verify", "/no/such/output"]])
def test_help_and_verify_errors_load_nothing_heavy(args):
    heavy, r = _heavy_after(_cli(args))
    assert heavy == [], r.stdout + r.stderr


@pytest.mark.parametrize("names", ["load_parquet", "load_dataframe", "load_parquet, read_manifest, tfrecord_dataset"])
def test_importing_the_readers_loads_nothing_heavy(names):
    heavy, r = _heavy_after(f"from pipeline.readers import {names}")
    assert heavy == [], r.stderr


def test_verify_and_load_parquet_of_a_local_output_load_nothing_heavy(outputs):
    both, parquet = outputs
    heavy, r = _heavy_after(_cli(["verify", parquet]))
    assert "OK" in r.stdout and "exit 0" in r.stdout and heavy == [], r.stdout + r.stderr
    heavy, r = _heavy_after(_cli(["verify", "--checksums-only", both]))
    assert "OK" in r.stdout and heavy == [], r.stdout + r.stderr
    heavy, r = _heavy_after(f"from pipeline.readers import load_parquet\nimages, labels = load_parquet({both!r})\n"
                            "assert len(images) == len(labels) == 300")
    assert heavy == [], r.stderr


@pytest.fixture(scope="module")
def one_run_output(tmp_path_factory):
    """Both formats, every record of the manifest's (sampler, model_id, seed), as generate writes them."""
    mod = _dataset_writer("dataset_conftest_for_startup_one_run")
    two_runs = mod.record_batches
    mod.record_batches = lambda shard: [dataclasses.replace(b, seed=1) for b in two_runs(shard)]
    out = str(tmp_path_factory.mktemp("startup") / "one-run")
    mod.write_generate_output(out)
    return out


def test_verify_of_generates_tfrecords_parses_them_without_tensorflow(one_run_output):
    heavy, r = _heavy_after(_cli(["verify", one_run_output]))
    assert "OK" in r.stdout and "exit 0" in r.stdout and heavy == [], r.stdout + r.stderr


def test_verify_of_tfrecord_records_imports_tensorflow_quietly(outputs):
    """Records in another layout (here a second seed the manifest does not name) are parsed with TensorFlow: verify
    imports it then, muted like every other command."""
    heavy, r = _heavy_after(_cli(["verify", outputs[0]]))
    assert "OK" in r.stdout and "tensorflow" in heavy and "apache_beam.runners" not in heavy, r.stdout + r.stderr
    assert "cuda" not in r.stderr.lower() and "I0000" not in r.stderr, r.stderr


def test_reading_parquet_then_exiting_never_aborts(outputs):
    """pyarrow's thread pool, after a read through a file object, aborted ~30% of interpreter exits here
    ("terminate called without an active exception", apache/arrow#50482); the readers read single-threaded."""
    code = f"from pipeline.readers import load_parquet\nload_parquet({outputs[0]!r})"
    for _ in range(8):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[2])
        assert r.returncode == 0, r.stderr
