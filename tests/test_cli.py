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
    for cmd in ("train", "generate", "stats", "preview", "verify"):
        assert cmd in res.output


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
    (["verify", "/no/such/out"], 1, ["manifest.json"]),
    (["preview", "/no/such/out", "--png", "p.png"], 1, ["manifest.json"]),
])
def test_user_mistakes_get_one_line_and_no_output(args, code, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(*args)
    assert_user_error(res, code, *needles)
    assert not (tmp_path / "X").exists()


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
