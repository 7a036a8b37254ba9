"""`train --out`, `train-classifier --out` and `evaluate --report` replace only a directory they wrote: anything else
there is refused before any work, with one `Error:` line and exit 2, and left exactly as it was."""
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from pipeline.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _snapshot(root):
    """Every entry below `root` -> its bytes, link target or None (folder); symlinks are not followed."""
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            path = os.path.join(d, n)
            out[os.path.relpath(path, root)] = (("-> " + os.readlink(path)) if os.path.islink(path) else
                                                None if os.path.isdir(path) else open(path, "rb").read())
    return out


def _earlier_model(path):
    from vae_model.model_dir import bundled_model_dir
    shutil.copytree(bundled_model_dir(), path)


def _earlier_classifier(path):
    from vae_model.classifier import bundled_classifier_dir
    shutil.copytree(bundled_classifier_dir(), path)


def _earlier_report(path):
    """What `evaluate --report` leaves: report.json listing its figures, report.html, figures/."""
    os.makedirs(os.path.join(path, "figures"))
    figures = {"samples": "figures/samples.png", "novelty_hist": "figures/novelty_hist.png"}
    with open(os.path.join(path, "report.json"), "w") as f:
        json.dump({"dataset": {"out_dir": "ds"}, "counts": {"total": 1}, "figures": figures}, f)
    for rel in ["report.html", *figures.values()]:
        with open(os.path.join(path, rel), "wb") as f:
            f.write(b"ours")


COMMANDS = {  # the command line with PATH for its output directory, and an earlier output of it
    "train": (["train", "--config", "configs/dense_seed001.yaml", "--set", "train.epochs=1", "--data",
               "mnist?limit=2000", "--quiet", "--out", "PATH"],
              _earlier_model),
    "train-classifier": (["train-classifier", "--data", "mnist?limit=100", "--set", "train.max_steps=1", "--quiet",
                          "--out", "PATH"], _earlier_classifier),
    "evaluate": (["evaluate", "DATASET", "--real", "mnist?limit=100", "--cas-epochs", "0", "--quiet", "--report",
                  "PATH"], _earlier_report),
}
WHAT = {"train": "a model directory", "train-classifier": "a classifier directory", "evaluate": "an earlier report"}


def _args(command, path, dataset="no-dataset"):
    args, _ = COMMANDS[command]
    return [path if a == "PATH" else dataset if a == "DATASET" else a for a in args]


def _user_files(out, command):
    (out / "photos").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    (out / "photos" / "cat.jpg").write_bytes(b"cat")
    return f"exists and is not {WHAT[command]} (no "


def _ours_plus_a_stray_file(out, command):
    COMMANDS[command][1](str(out))
    (out / "notes.txt").write_text("mine")
    return f"is {WHAT[command]} but also holds notes.txt, which `vae-augment {command}` did not write; move it out"


def _a_file(out, command):
    out.write_text("a file")
    return "is a file; remove it yourself or choose a new or empty directory"


def _a_link_to_ours(out, command):
    COMMANDS[command][1](str(out.parent / "elsewhere"))
    out.symlink_to(out.parent / "elsewhere")
    return "is a symbolic link; remove it yourself"


@pytest.mark.parametrize("make", [_user_files, _ours_plus_a_stray_file, _a_file, _a_link_to_ours],
                         ids=["user-files", "ours-plus-stray", "a-file", "a-link"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_what_is_not_provably_ours_is_refused_before_any_work_and_kept(tmp_path, command, make):
    out = tmp_path / "out"
    needle = make(out, command)
    before = _snapshot(tmp_path)
    res = invoke(*_args(command, out))
    assert res.exit_code == 2, res.output
    option = "--report" if command == "evaluate" else "--out"
    assert res.output.splitlines() == [res.output.strip()] and res.output.startswith(f"Error: {option} {out} ")
    assert needle in res.output
    assert _snapshot(tmp_path) == before  # nothing deleted, nothing written beside it


def test_the_bundled_directories_and_each_writers_own_record_prove_ownership(tmp_path):
    from pipeline.evaluation.report import REPORT_DIR
    from vae_model import artifacts
    from vae_model.classifier.directory import CLASSIFIER_DIR
    from vae_model.training import MODEL_DIR

    for kind, make in ((MODEL_DIR, _earlier_model), (CLASSIFIER_DIR, _earlier_classifier),
                       (REPORT_DIR, _earlier_report)):
        make(str(tmp_path / kind.name))
        assert artifacts.ownership_problem(str(tmp_path / kind.name), kind) is None
    # another kind's directory is not ours: a model directory is not a classifier directory, nor the reverse
    assert "(no classifier.json)" in artifacts.ownership_problem(str(tmp_path / "model"), CLASSIFIER_DIR)
    assert "(no model.json)" in artifacts.ownership_problem(str(tmp_path / "classifier"), MODEL_DIR)


def _replaced(root, command, dataset="no-dataset"):
    """Run `command` into an earlier output of it (refused while a stray file is there); return the new output."""
    out = root / "out"
    COMMANDS[command][1](str(out))
    (out / "notes.txt").write_text("mine")
    assert invoke(*_args(command, out, dataset)).exit_code == 2
    (out / "notes.txt").unlink()
    old = _snapshot(out)
    res = invoke(*_args(command, out, dataset))
    assert res.exit_code == 0, res.output
    assert _snapshot(out) != old
    assert sorted(os.listdir(root)) == ["out"]  # no temp or set-aside directory left
    return out


@pytest.mark.e2e
def test_train_replaces_an_earlier_model_directory(tmp_path):
    from vae_model.model_dir import ModelDir, bundled_model_dir

    out = _replaced(tmp_path, "train")
    meta = ModelDir.open(str(out)).meta
    assert meta["model_id"] != ModelDir.open(bundled_model_dir()).model_id and meta["epochs_run"] == 1
    assert sorted(_snapshot(out)) == sorted(["model.json", "plots", *meta["sha256"]])


@pytest.mark.e2e
def test_train_classifier_replaces_an_earlier_classifier_directory(tmp_path):
    from vae_model.classifier import bundled_classifier_dir, read_classifier_meta

    out = _replaced(tmp_path, "train-classifier")
    meta = read_classifier_meta(str(out))
    assert meta["classifier_id"] != read_classifier_meta(bundled_classifier_dir())["classifier_id"]
    assert sorted(os.listdir(out)) == ["classifier.json", "classifier.keras"]


@pytest.mark.e2e
def test_evaluate_replaces_an_earlier_report(tmp_path):
    dataset = tmp_path / "dataset"
    res = invoke("generate", "--per-class", 3, "--out", dataset)
    assert res.exit_code == 0, res.output
    out = _replaced(tmp_path / "r", "evaluate", dataset)
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["total"] == 30
    assert sorted(os.listdir(out)) == ["figures", "report.html", "report.json"]
    assert sorted(f"figures/{n}" for n in os.listdir(out / "figures")) == sorted(report["figures"].values())
