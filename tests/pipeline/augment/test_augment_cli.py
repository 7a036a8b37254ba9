"""`vae-augment augment`: bad input is one `Error:` line with the right exit code, and nothing is left behind."""
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli


def _npz(path, labels):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (len(labels), 28, 28), dtype=np.uint8), y_train=np.array(labels))
    return str(path)


def _run(*args):
    r = CliRunner().invoke(cli, ["augment", *args])
    lines = [line for line in r.output.splitlines() if line.strip()]
    return r, lines


@pytest.mark.parametrize("labels, exit_code, words", [
    ([0, 1, 2, 0, 1, 2], 1, "no unlabeled training rows"),
    ([-1] * 6, 1, "no labeled training rows"),
    ([0, 0, 0, -1, -1, -1], 1, "one class only"),
    ([0, 1, -1, -1, -1, -1], 1, "at least 2 labels per class"),
])
def test_a_source_unfit_for_augment_is_one_error_line_and_leaves_nothing(tmp_path, labels, exit_code, words):
    src = _npz(tmp_path / "d.npz", labels)
    out = tmp_path / "out"
    r, lines = _run("--data", f"npz:{src}", "--out", str(out), "--set", "vae_epochs=1")
    assert r.exit_code == exit_code, r.output
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0] and words in errors[0], r.output
    assert "Traceback" not in r.output and "vae:" not in r.output  # refused before any training
    assert not out.exists()  # a failure in ingest removes the new output directory


@pytest.mark.parametrize("args, words", [
    (["--data", "nosuchkind:x"], "unknown kind"),
    (["--data", "mnist?labeled_per_class=x"], "must be an integer"),
    (["--data", "mnist", "--set", "no_such_key=1"], "unknown config key"),
    (["--data", "mnist", "--set", "val_fraction=1.5"], "val_fraction"),
    (["--data", "mnist", "--set", "labelers=[neighbours, knn]"], "labelers must be distinct names"),
    (["--data", "mnist", "--set", "translate=0.6"], "translate must be in [0, 0.5)"),
    (["--data", "mnist", "--set", "rotate=200"], "rotate must be in [0, 180] degrees"),
    (["--data", "mnist", "--vae", "/nonexistent/vae"], "no model.json"),
])
def test_bad_flags_are_one_error_line(tmp_path, args, words):
    r, lines = _run(*args, "--out", str(tmp_path / "out"))
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("Error:") and words in lines[0], r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["translate", "rotate"])
def test_a_nan_shift_range_is_refused_like_the_classifiers(key):
    # a YAML `.nan` reaches validate() (the --set parser refuses "nan" before it)
    from pipeline.augment.config import AugmentConfig
    from vae_model.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{key} must be in"):
        AugmentConfig(**{key: float("nan")}).validate()


def test_an_output_directory_that_is_not_ours_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    src = _npz(tmp_path / "d.npz", [0, 1, 0, 1, -1, -1])
    r, lines = _run("--data", f"npz:{src}", "--out", str(out))
    assert r.exit_code == 2 and len(lines) == 1 and "not an augment output" in lines[0], r.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
