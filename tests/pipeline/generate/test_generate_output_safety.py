"""Failures stay one line, and paths are paths: disk full, permission denied and a failing finalize each end as
one `Error:` line and exit 1 with nothing partial published and no Beam traceback on the terminal; glob characters
in --out are plain characters; --overwrite never removes user files."""
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.dataset import card, layout
from pipeline.dataset.verify import verify_output
from pipeline.generate.graph import run_job
from pipeline.generate.job import GenerateJob
from vae_model.errors import UserError

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
CLI = os.path.join(os.path.dirname(sys.executable), "vae-augment")


def tree(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names}


def published(shards: int) -> set[str]:
    return {layout.MANIFEST, layout.JOB_MARKER, *card.FILES} | {  # + dataset card and TFDS metadata
        f"{fmt}/part-{i:05d}-of-{shards:05d}.{fmt}" for fmt in layout.FORMATS for i in range(shards)}


def run_cli(*args, prefix=()):
    """`vae-augment ARGS` in a fresh process, as a user's terminal sees it: (exit code, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAE_AUGMENT_FAULTS")}
    res = subprocess.run([*prefix, CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    return res.returncode, res.stdout + res.stderr


def assert_one_error_line(output: str, *needles):
    errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, output
    assert all(n in errors[0] for n in needles), errors[0]
    assert "Traceback" not in output and "ERROR" not in output, output


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs root to mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.e2e
def test_disk_full_is_one_line_and_publishes_nothing(tiny_disk):
    out = tiny_disk / "o"
    code, output = run_cli("generate", "--out", out, "--per-class", 300, "--batch-size", 512, *LOCAL)
    assert code == 1
    assert_one_error_line(output, "generation job failed: OSError: [Errno 28] No space left on device")
    assert tree(out) == {layout.JOB_MARKER}  # no manifest, no shard, no temp file, no lock


@pytest.mark.e2e
def test_permission_denied_is_one_line_and_writes_nothing(tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = ()
    if os.geteuid() == 0:  # root writes anywhere: drop the capabilities that let it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: no way to be refused a write")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")
    code, output = run_cli("generate", "--out", locked / "o", "--per-class", 5, *LOCAL, prefix=prefix)
    assert code == 1
    assert_one_error_line(output, f"--out {locked / 'o'} is not writable (PermissionError: [Errno 13]")
    assert os.listdir(locked) == []


@pytest.mark.e2e
def test_a_failing_finalize_is_one_line_and_publishes_nothing(tmp_path, monkeypatch):
    def denied(out_dir, manifest):
        raise PermissionError(13, "Permission denied", layout.manifest_path(out_dir))

    monkeypatch.setattr(layout, "write_manifest", denied)
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["generate", "--out", str(out), "--per-class", "20", "--classes", "0,1",
                                   "--batch-size", "64", *LOCAL])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1] == (
        f"Error: generation job failed: PermissionError: [Errno 13] Permission denied: '{out}/manifest.json'; no "
        "manifest was written, fix the cause and re-run the same command")
    assert "Traceback" not in res.output
    assert tree(out) == {layout.JOB_MARKER}  # the shards were removed, and the lock released


@pytest.mark.e2e
def test_glob_characters_in_out_are_plain_characters(tmp_path, monkeypatch, faults_log):
    out = tmp_path / "g[1]"
    lookalike = tmp_path / "g1"  # what `g[1]` matches as a glob
    (lookalike / "parquet").mkdir(parents=True)
    (lookalike / "parquet" / "part-00000-of-00002.parquet").write_text("not this job's")
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "write:0:always")
    job = dict(out=str(out), per_class=50, classes=[0, 1], batch_size=64, shards=2)
    with pytest.raises(UserError, match="injected always fault in write of shard 0"):
        run_job(GenerateJob(**job), LOCAL)
    assert tree(out) == {layout.JOB_MARKER}  # cleaned up, partial shards and temp folders included
    monkeypatch.delenv("VAE_AUGMENT_FAULTS")
    manifest = run_job(GenerateJob(**job), LOCAL)
    assert tree(out) == published(2) and verify_output(str(out)) == []
    assert layout.read_manifest(str(out))["dataset_digest"] == manifest["dataset_digest"]
    assert tree(lookalike) == {"parquet/part-00000-of-00002.parquet"}


def test_overwrite_over_user_files_is_refused_with_one_line(tmp_path):
    out = tmp_path / "o"
    files = {"parquet/2023/sales.parquet": "sales", "tfrecord/train.tfrecord": "train",
             "manifest.json": json.dumps({"my": "own manifest"})}
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    res = CliRunner().invoke(cli, ["generate", "--out", str(out), "--per-class", "5", "--overwrite", *LOCAL])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        f"Error: --out {out} holds files vae-augment did not write: manifest.json (not a valid manifest of ours; "
        "`vae-augment verify` says why), parquet/2023 (in a folder with no job marker or manifest of ours), "
        "tfrecord/train.tfrecord (in a folder with no job marker or manifest of ours); move them away or choose "
        "another --out (--overwrite replaces only a generate output's own files)"]
    assert {rel: (out / rel).read_text() for rel in tree(out)} == files  # intact, and no lock left behind


def test_beam_logs_stay_off_the_terminal_unless_verbose(monkeypatch):
    from pipeline.logs import quiet_libraries

    names = ("apache_beam", "tensorflow", "absl", "h5py")
    levels = {n: logging.getLogger(n).level for n in names}
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    runner_log = logging.getLogger("apache_beam.runners.common")  # where a failed bundle's traceback is logged
    try:
        logging.getLogger("apache_beam").setLevel(logging.NOTSET)
        with warnings.catch_warnings():
            quiet_libraries(verbose=True)  # -v: left as Beam has it
            assert runner_log.isEnabledFor(logging.ERROR)
            quiet_libraries(verbose=False)
        assert not runner_log.isEnabledFor(logging.CRITICAL)
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


@pytest.mark.e2e
def test_glob_characters_and_spaces_in_model_data_and_out_paths(tmp_path, bundled):
    # Beam's FileSystems.match treats [ * ? as a pattern: every path here must still be used as a path ('?' starts
    # a SOURCE's options, so data paths can't hold it; --out can)
    from vae_model.data import load_source
    import numpy as np

    root = tmp_path / "g m[1]*"
    shutil.copytree(bundled.path, root / "model")
    real = load_source("mnist?limit=300").train
    np.savez(root / "d.npz", x_train=real.images, y_train=real.labels)
    out = root / "o?ut"
    res = CliRunner().invoke(cli, ["generate", "--model", str(root / "model"), "--labeled-data",
                                   f"npz:{root / 'd.npz'}", "--per-class", "20", "--classes", "0,1",
                                   "--batch-size", "64", "--out", str(out), *LOCAL])
    assert res.exit_code == 0, res.output
    assert verify_output(str(out)) == []
    assert json.loads((out / "manifest.json").read_text())["per_class"] == {"0": 20, "1": 20}
