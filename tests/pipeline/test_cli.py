"""The CLI through click's CliRunner: happy paths and user mistakes (exit code, one line, no traceback)."""
import json
import os

import pytest
from click.testing import CliRunner

from pipeline.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(res, code, *needles):
    assert res.exit_code == code, res.output
    text = res.output.strip()
    assert "Traceback" not in text
    last = text.splitlines()[-1]
    for n in needles:
        assert n in last, last


def test_help_lists_every_command():
    res = invoke("--help")
    assert res.exit_code == 0
    listed = {line.split()[0] for line in res.output.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(cli.commands) and "pseudo-label" in listed


def test_generate_help_names_every_sampler_format_and_runner():
    from pipeline.generate.job import FORMATS, RUNNERS
    from pipeline.generate.samplers import SAMPLERS

    text = " ".join(invoke("generate", "--help").output.split())
    for name in (*SAMPLERS, *FORMATS, *RUNNERS):
        assert name in text


def test_importing_the_cli_loads_no_tensorflow():
    """-v is read before a command's body runs, which quiets the libraries before it imports TensorFlow; so the
    module itself must not import it (its C++ start-up lines would reach the terminal first)."""
    import subprocess
    import sys

    code = "import sys, pipeline.cli; print(sorted({'tensorflow', 'keras', 'apache_beam'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args,verbose", [(["verify", "/no/such"], False), (["-v", "verify", "/no/such"], True)])
def test_the_group_quiets_the_libraries_unless_verbose(args, verbose, monkeypatch):
    import pipeline.cli

    calls = []
    monkeypatch.setattr(pipeline.cli, "quiet_libraries", lambda verbose, **_: calls.append(verbose))
    invoke(*args)
    assert calls == [verbose]


@pytest.mark.parametrize("args", [["generate", "--help"], ["train", "-h"], ["generate", "--per-class", "x"]])
def test_help_and_parse_errors_import_no_tensorflow(args):
    """Quieting imports TensorFlow (seconds); help and click's own parse errors must not wait for it."""
    import subprocess
    import sys

    code = ("import sys, pipeline.cli\ntry:\n    pipeline.cli.main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted({'tensorflow', 'keras', 'apache_beam'} & set(sys.modules)))" % (args,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.e2e
def test_train_writes_a_model_dir(tmp_path):
    res = invoke("train", "--config", "configs/dense_seed003.yaml", "--set", "epochs=1", "--data", "mnist?limit=1000",
                 "--out", tmp_path / "m", "--quiet")
    assert res.exit_code == 0, res.output
    assert "test -ELBO" in res.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["config"]["train"]["data"] == "mnist?limit=1000" and meta["config"]["model"]["hidden"] == [64, 16, 8]


@pytest.mark.parametrize("args,code,needles", [
    (["train", "--out", "X", "--set", "train.epochs=-3"], 2, ["train.epochs must be > 0"]),
    (["train", "--out", "X", "--set", "train.loss=hinge"], 2, ["train.loss must be one of"]),
    (["train", "--out", "X", "--set", "model.widht=3"], 2, ["unknown config key model.widht"]),
    (["train", "--out", "X", "--set", "train.epochs=abc"], 2, ["must be an integer"]),
    (["train", "--out", "X", "--config", "nope.yaml"], 2, ["nope.yaml does not exist"]),
    (["train", "--out", "X", "--data", "csv:/nonexistent.csv"], 1, ["/nonexistent.csv"]),
    (["generate", "--out", "X", "--num", "0"], 2, ["--num"]),
    (["generate", "--out", "X", "--per-class", "5", "--spread", "nan"], 2, ["--spread"]),
    (["generate", "--out", "X", "--per-class", "5", "--spread", "-1"], 2, ["--spread"]),
    (["generate", "--out", "X", "--per-class", "5", "--batch-size", "0"], 2, ["--batch-size"]),
    (["generate", "--out", "X", "--per-class", "5", "--formats", "csv"], 2, ["--formats"]),
    (["generate", "--out", "X", "--per-class", "5", "--classes", "0,12"], 2, ["--classes 12"]),
    (["generate", "--out", "X", "--per-class", "5", "--num", "5"], 2, ["exactly one of --num"]),
    (["generate", "--out", "X", "--per-class", "5", "--shards", "100"], 2, ["--shards 100"]),
    (["generate", "--out", "X", "--per-class", "5", "--sampler", "conditional"], 2, ["conditional VAE"]),
    (["generate", "--out", "X", "--per-class", "5", "--model", "/no/such/model"], 1, ["/no/such/model"]),
    (["generate", "--out", "X", "--per-class", "5", "--filter-classifier", "bundled", "--min-confidence", "1.5"], 2,
     ["--min-confidence", "(0, 1]"]),
    (["generate", "--out", "X", "--per-class", "5", "--filter-classifier", "bundled", "--min-confidence", "0"], 2,
     ["--min-confidence", "(0, 1]"]),
    (["generate", "--out", "X", "--per-class", "5", "--min-confidence", "0.9"], 2,
     ["--min-confidence", "needs --filter-classifier"]),
    (["generate", "--out", "X", "--per-class", "5", "--filter-classifier", "bundled", "--max-filter-rounds", "0"], 2,
     ["--max-filter-rounds"]),
    (["generate", "--out", "X", "--per-class", "5", "--filter-classifier", "/no/such/clf"], 1,
     ["/no/such/clf", "train-classifier"]),
    (["generate", "--out", "X", "--per-class", "5", "--sampler", "bogus"], 2, ["--sampler 'bogus'"]),
    (["generate", "--out", "X", "--per-class", "5", "--runner", "Spark"], 2, ["--runner 'Spark'"]),
    (["generate", "--out", "X", "--per-class", "5", "--workers", "0"], 2, ["--workers"]),
    (["generate", "--out", "X", "--per-class", "5", "--stats", "s.npz", "--labeled-data", "mnist"], 2,
     ["at most one of --stats"]),
    (["generate", "--out", "X", "--per-class", "5", "--model", "bundled", "--filter-classifier", "bundled",
      "--shards", "100"], 2, ["--shards 100"]),  # both shortcuts accepted: the job got as far as its shards
    (["stats", "--model", "bundled", "--data", "mnist?limit=10&unlabeled=1", "--out", "X"], 1, ["no labeled rows"]),
    (["verify", "/no/such/out"], 1, ["manifest.json"]),
    (["preview", "/no/such/out", "--png", "p.png"], 1, ["manifest.json"]),
])
def test_user_mistakes_get_one_line_and_no_output(args, code, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(*args)
    assert_user_error(res, code, *needles)
    assert not (tmp_path / "X").exists()


@pytest.mark.e2e
def test_generate_preview_verify_through_the_cli(tmp_path):
    out = tmp_path / "o"
    res = invoke("generate", "--out", out, "--per-class", 20, "--batch-size", 64, "--classes", "1,4",
                 "--direct_running_mode=in_memory")
    assert res.exit_code == 0, res.output
    assert "wrote 40 records" in res.output and "1: 20, 4: 20" in res.output
    res = invoke("preview", out, "--png", tmp_path / "p.png")
    assert res.exit_code == 0 and os.path.getsize(tmp_path / "p.png") > 1000
    assert invoke("verify", out).exit_code == 0
    # a different job may not write over it without --overwrite
    res = invoke("generate", "--out", out, "--per-class", 20, "--batch-size", 64, "--seed", 9)
    assert_user_error(res, 2, "--overwrite")
    res = invoke("generate", "--out", out, "--per-class", 5, "--batch-size", 64, "--seed", 9, "--overwrite")
    assert res.exit_code == 0, res.output


def test_a_class_without_labeled_examples_fails_before_the_job(tmp_path):
    """--labeled-data statistics are computed inside the job; a class the source has no labels for is still
    refused up front, in one line, with nothing written."""
    import numpy as np

    src = tmp_path / "five.npz"
    np.savez(src, x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.arange(20) % 5)
    res = invoke("generate", "--out", tmp_path / "X", "--per-class", 5, "--classes", "2,8", "--labeled-data",
                 f"npz:{src}")
    assert_user_error(res, 2, "--classes 8", "no examples of class 8")
    assert not (tmp_path / "X").exists()


# ---- bad-input matrix: models, statistics, output, data files -------------------------------------------

def _damage_model(model, how):
    dec = model / "decoder.keras"
    if how == "truncated":
        dec.write_bytes(dec.read_bytes()[: 5000])
    elif how == "corrupt":
        dec.write_bytes(b"\x00garbage" * 1000)
    elif how == "encoder":
        dec.write_bytes((model / "encoder.keras").read_bytes())
    elif how == "no_stats":
        (model / "latent_stats.npz").unlink()


@pytest.mark.parametrize("how,needles", [
    ("truncated", ["decoder.keras could not be loaded", "truncated or corrupt"]),
    ("corrupt", ["decoder.keras could not be loaded", "truncated or corrupt"]),
    ("encoder", ["decoder.keras does not look like a decoder"]),
    ("no_stats", ["needs class statistics", "--labeled-data"]),
])
def test_bad_models_are_reported_without_writing(how, needles, model_copy, tmp_path, reseal):
    _damage_model(model_copy, how)
    if how != "no_stats":
        reseal(model_copy, "decoder.keras")  # past the sha256 check, to the checks behind it
    res = invoke("generate", "--model", model_copy, "--out", tmp_path / "X", "--per-class", 5)
    assert_user_error(res, 2 if how == "no_stats" else 1, *needles)
    assert not (tmp_path / "X").exists()


def test_statistics_of_another_latent_size_are_refused(tmp_path):
    import numpy as np

    from vae_model.latent_stats import LatentStats

    d = 2
    small = LatentStats(classes=np.arange(10), counts=np.full(10, 5), means=np.zeros((10, d)),
                        covs=np.stack([np.eye(d)] * 10), global_count=50, global_mean=np.zeros(d), global_cov=np.eye(d))
    (tmp_path / "s2.npz").write_bytes(small.to_bytes())
    res = invoke("generate", "--stats", tmp_path / "s2.npz", "--out", tmp_path / "X", "--per-class", 5)
    assert_user_error(res, 1, "latent size 2", "has 20", "vae-augment stats")
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("args,code,needles", [
    (["--per-class", "-2"], 2, ["--per-class"]),
    (["--per-class", "5", "--sampler", "prior"], 2, ["--sampler prior", "--num"]),
    (["--num", "5", "--classes", "3,3"], 2, ["lists a class twice"]),
    (["--num", "5", "--classes", "a,b"], 2, ["--classes"]),
])
def test_more_bad_generate_flags(args, code, needles, tmp_path):
    res = invoke("generate", "--out", tmp_path / "X", *args)
    assert_user_error(res, code, *needles)
    assert not (tmp_path / "X").exists()


def test_unwritable_output_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = invoke("generate", "--out", blocker / "sub", "--per-class", 5)
    assert_user_error(res, 2, str(blocker / "sub"), "not writable")
    res = invoke("generate", "--out", blocker, "--per-class", 5)
    assert_user_error(res, 2, "is a file")
    assert blocker.read_text() == "not a directory"


def _write_bad_data(tmp_path, kind):
    import gzip
    import struct
    import numpy as np
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    row = ["3"] + ["0"] * 784
    if kind == "csv_columns":
        p = tmp_path / "d.csv"
        p.write_text(header + "\n" + ",".join(row[:-4]) + "\n")
    elif kind == "csv_nonnumeric":
        p = tmp_path / "d.csv"
        p.write_text(header + "\n" + ",".join(row[:10] + ["x"] + row[11:]) + "\n")
    elif kind == "csv_range":
        p = tmp_path / "d.csv"
        p.write_text(header + "\n" + ",".join(row[:10] + ["256"] + row[11:]) + "\n")
    elif kind == "csv_empty":
        p = tmp_path / "d.csv"
        p.write_text(header + "\n")
    elif kind == "idx_magic":
        p = tmp_path / "train-images-idx3-ubyte"
        p.write_bytes(struct.pack(">IIII", 0x0801, 1, 28, 28) + bytes(784))
        return f"idx:{p}", p.name
    elif kind == "idx_truncated":
        p = tmp_path / "train-images-idx3-ubyte.gz"
        p.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 2, 28, 28) + bytes(784)))
        return f"idx:{p}", p.name
    elif kind == "idx_count":
        img = tmp_path / "train-images-idx3-ubyte"
        img.write_bytes(struct.pack(">IIII", 0x0803, 2, 28, 28) + bytes(2 * 784))
        lab = tmp_path / "train-labels-idx1-ubyte"
        lab.write_bytes(struct.pack(">II", 0x0801, 3) + bytes(3))
        return f"idx:{img},{lab}", lab.name
    elif kind == "npz_keys":
        p = tmp_path / "d.npz"
        np.savez(p, images=np.zeros((2, 28, 28), np.uint8))
    return str(p), p.name


@pytest.mark.parametrize("kind", ["csv_columns", "csv_nonnumeric", "csv_range", "csv_empty", "idx_magic",
                                  "idx_truncated", "idx_count", "npz_keys"])
def test_bad_data_files_through_the_cli(kind, tmp_path):
    source, name = _write_bad_data(tmp_path, kind)
    res = invoke("train", "--data", source, "--set", "epochs=1", "--out", tmp_path / "M", "--quiet")
    assert_user_error(res, 1, name)
    assert not (tmp_path / "M").exists()
    res = invoke("stats", "--data", source, "--out", tmp_path / "s.npz")
    assert_user_error(res, 1, name)
    assert not (tmp_path / "s.npz").exists()


def test_evaluate_refuses_a_directory_without_manifest(tmp_path):
    (tmp_path / "shards" / "parquet").mkdir(parents=True)
    res = invoke("evaluate", tmp_path / "shards", "--real", "mnist", "--report", tmp_path / "R")
    assert_user_error(res, 1, "manifest.json")
    assert not (tmp_path / "R").exists()
