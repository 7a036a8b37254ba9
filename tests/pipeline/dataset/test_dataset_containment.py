"""Containment and cheap verification: a manifest can only name its own shard files, and every reader checks
each shard (inside the output folder, a regular file of the manifest's size) before it reads a byte of it.

Each way of breaking that is tried on every reader and CLI command that reads an output; each must refuse it in
one line (verify lists it as a problem), promptly, and read nothing outside the output folder."""
import contextlib
import json
import os
import shutil
import signal

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.dataset import layout, source
from pipeline.dataset.readers import (checked_manifest, load_dataframe, load_parquet, load_table,
                                      synthetic_training_stream, tfrecord_dataset)
from pipeline.dataset.verify import verify_output
from vae_model.errors import DataError

SHARD0 = {fmt: f"{fmt}/part-00000-of-00002.{fmt}" for fmt in layout.FORMATS}


def _edit_manifest(out, change):
    path = out / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _repath(new_path):
    """Point shard 0 of each format at new_path(fmt), with that file's size when it has one."""
    def change(m):
        for s in m["shards"]:
            if s["path"] == SHARD0[s["format"]]:
                s["path"] = new_path(s["format"])
        return m
    return change


def _replace_shard0(make):
    """Replace shard 0 of each format, inside OUT, by make(path, fmt)."""
    def damage(out, other):
        for fmt, rel in SHARD0.items():
            os.remove(out / rel)
            make(out / rel, other / rel)
    return damage


def _append_byte(out, other):
    for rel in SHARD0.values():
        with open(out / rel, "ab") as f:
            f.write(b"\0")


# name: (damage(out, other), what the one line says, whether the manifest itself is refused)
CASES = {
    "dotdot": (lambda out, other: _edit_manifest(out, _repath(lambda fmt: f"../other/{SHARD0[fmt]}")),
               "has a '..' segment and leaves the output folder", True),
    "absolute": (lambda out, other: _edit_manifest(out, _repath(lambda fmt: "/etc/passwd")), "is absolute", True),
    "scheme": (lambda out, other: _edit_manifest(out, _repath(lambda fmt: "gs://x/y")), "has a URL scheme", True),
    "json_array": (lambda out, other: _edit_manifest(out, lambda m: [m]), "a JSON list, not an object", True),
    "future_version": (lambda out, other: _edit_manifest(out, lambda m: {**m, "format_version": 99}),
                       "written by a newer vae-augment", True),
    # a valid shard of the dataset next door, of the very same size and bytes: only its real path gives it away
    "symlink_out": (_replace_shard0(lambda path, theirs: os.symlink(theirs, path)),
                    "outside the output folder (a symlink leaving it)", False),
    "dev_zero": (_replace_shard0(lambda path, theirs: os.symlink("/dev/zero", path)),
                 "resolves to /dev/zero, outside the output folder", False),
    "directory": (_replace_shard0(lambda path, theirs: os.mkdir(path)), "is a directory, not a regular file", False),
    "fifo": (_replace_shard0(lambda path, theirs: os.mkfifo(path)), "is a FIFO, not a regular file", False),
    "size": (_append_byte, "bytes, manifest says", False),
}


@pytest.fixture(params=sorted(CASES))
def broken(request, tmp_path, generated):
    """(out, what the one line says, manifest refused?, case name): a copy of `generated` broken one way, with an
    intact copy next door (tmp/other) for the damage to point at."""
    out, other = tmp_path / "o", tmp_path / "other"
    shutil.copytree(generated[0], out)
    shutil.copytree(generated[0], other)
    damage, needle, structural = CASES[request.param]
    damage(out, other)
    return out, needle, structural, request.param


def assert_one_line(error, needle, out):
    message = str(error)
    assert needle in message and "\n" not in message, message
    assert str(out) in message  # names the output (and the shard, or its manifest)


@contextlib.contextmanager
def promptly(seconds=60):
    """Fail instead of hanging: reading /dev/zero never ends and opening a FIFO blocks (the bound leaves room for
    a first TensorFlow import on a busy machine)."""
    def hung(*_):
        raise TimeoutError(f"still reading after {seconds} s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_refused(read, out, needle, structural):
    """`read()` raises one line; when the shards are at fault, naming shard 0 of the format it reads."""
    with promptly(), pytest.raises(DataError) as e:
        read()
    assert_one_line(e.value, needle, out)
    if not structural:
        assert any(str(out / rel) in str(e.value) for rel in SHARD0.values())


def test_load_parquet_load_table_and_load_dataframe_refuse(broken):
    out, needle, structural, _ = broken
    for read in (load_parquet, load_table, load_dataframe):
        assert_refused(lambda: read(str(out)), out, needle, structural)


def test_tfrecord_dataset_and_the_synthetic_training_stream_refuse(broken):
    out, needle, structural, _ = broken
    assert_refused(lambda: tfrecord_dataset(str(out)), out, needle, structural)
    assert_refused(lambda: synthetic_training_stream(str(out), 3), out, needle, structural)


def test_the_parquet_data_source_refuses(broken):
    out, needle, structural, _ = broken
    assert_refused(lambda: source.read(str(out), None), out, needle, structural)
    assert_refused(lambda: checked_manifest(str(out)), out, needle, structural)


def test_verify_lists_each_as_a_problem(broken):
    out, needle, structural, case = broken
    if case == "future_version":  # nothing it can check: the same one line as every reader
        with pytest.raises(DataError) as e:
            verify_output(str(out))
        assert_one_line(e.value, needle, out)
        return
    with promptly():
        problems = verify_output(str(out))
    if structural:
        assert len(problems) == 1 and problems[0].startswith(f"{out / 'manifest.json'}: not a valid manifest")
        assert needle in problems[0]
    else:  # one line per broken shard, nothing else (the unread shards' totals are not checked)
        assert sorted(problems) == sorted(p for p in problems if p.split(":")[0] in SHARD0.values())
        assert len(problems) == 2 and all(needle in p for p in problems), problems


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_every_cli_command_that_reads_an_output_refuses_in_one_error_line(broken, tmp_path):
    out, needle, structural, case = broken
    for args in (["preview", out, "--png", tmp_path / "p.png"],
                 ["preview", out, "--png", tmp_path / "p.png", "--format", "tfrecord"],
                 ["train-classifier", "--data", "mnist?limit=10", "--out", tmp_path / "clf", "--synthetic", out],
                 ["evaluate", out, "--real", "mnist?limit=10", "--report", tmp_path / "rep"]):
        with promptly():
            res = invoke(*args)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (args, res.output)
        assert needle in lines[0], (args, lines[0])
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "clf").exists() and not (tmp_path / "rep").exists()


def test_the_verify_command_lists_each_problem_and_exits_1(broken):
    out, needle, structural, case = broken
    with promptly():
        res = invoke("verify", out)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and "Traceback" not in res.output
    if case == "future_version":
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
        return
    found = [line for line in lines if line.startswith("FAIL ")]
    assert found and all(needle in line for line in found) and len(found) == (1 if structural else 2)
    assert lines[-1] == f"{out}: {len(found)} problem(s)"


# ---------------------------------------------------------------------------------------------- what is allowed

def test_a_symlink_that_stays_inside_the_output_folder_is_followed(damaged, generated_records):
    """The rule is the real path, not "no symlinks": a shard moved elsewhere inside OUT and linked is fine."""
    rel = SHARD0["parquet"]
    os.makedirs(damaged / "parquet" / "moved")
    shutil.move(damaged / rel, damaged / "parquet" / "moved" / "p")
    os.symlink(damaged / "parquet" / "moved" / "p", damaged / rel)
    np.testing.assert_array_equal(load_parquet(str(damaged))[1], generated_records[1])


def test_an_output_folder_reached_through_a_symlink_is_read(tmp_path, generated, generated_records):
    os.symlink(generated[0], tmp_path / "link")
    np.testing.assert_array_equal(load_parquet(str(tmp_path / "link"))[1], generated_records[1])
    assert verify_output(str(tmp_path / "link")) == []


def test_the_cheap_check_counts_parquet_rows_as_it_reads(damaged):
    _edit_manifest(damaged, lambda m: {**m, "shards": [{**s, "rows": 1} if s["path"] == SHARD0["parquet"] else s
                                                       for s in m["shards"]]})
    with pytest.raises(DataError, match=f"{SHARD0['parquet']}: has 150 rows but the manifest says 1"):
        load_parquet(str(damaged))


def test_a_shard_of_the_right_size_with_other_bytes_passes_the_cheap_check_only(damaged):
    """What the always-on check does not do (checksum every byte) is what verify=True adds."""
    shard = damaged / SHARD0["tfrecord"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # the last frame's CRC: same size, same records, different bytes
    shard.write_bytes(bytes(data))
    tfrecord_dataset(str(damaged))  # builds: sizes match
    with pytest.raises(DataError, match=f"failed verification: {SHARD0['tfrecord']}: crc32c differs"):
        tfrecord_dataset(str(damaged), verify=True)


# ---------------------------------------------------------------------------------------------- remote outputs

def test_remote_shards_are_checked_from_one_listing_per_format(damaged, remote, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    url = remote(damaged)
    manifest = layout.read_manifest(url)
    calls = []
    match = FileSystems.match
    monkeypatch.setattr(FileSystems, "match", staticmethod(lambda patterns, *a: calls.append(patterns) or
                                                           match(patterns, *a)))
    assert all(problem is None for _, problem in layout.check_shards(url, manifest))
    assert len(calls) == len(layout.FORMATS)  # not one request per shard
    _append_byte(damaged, None)
    os.remove(damaged / "tfrecord" / "part-00001-of-00002.tfrecord")
    os.mkdir(damaged / "tfrecord" / "part-00001-of-00002.tfrecord")  # an object store has no folders: missing
    size = {s["path"]: s["bytes"] for s in manifest["shards"]}
    found = {shard.path[len(url) + 1:]: problem for shard, problem in layout.check_shards(url, manifest)}
    assert found == {**{rel: f"{size[rel] + 1} bytes, manifest says {size[rel]}" for rel in SHARD0.values()},
                     "parquet/part-00001-of-00002.parquet": None, "tfrecord/part-00001-of-00002.tfrecord": "missing"}
    with pytest.raises(DataError, match=f"{url}/{SHARD0['parquet']}: .* bytes, manifest says"):
        load_parquet(url)


def test_a_remote_output_whose_name_holds_glob_characters_is_listed_exactly(tmp_path, generated, remote):
    out = tmp_path / "run [1] *"
    shutil.copytree(generated[0], out)
    shutil.copytree(generated[0], tmp_path / "run 1 x")  # what the name would match as a glob
    assert all(problem is None for _, problem in layout.check_shards(remote(out), layout.read_manifest(remote(out))))
    assert verify_output(remote(out)) == []


# ---------------------------------------------------------------------------------------------- provenance

def test_provenance_says_how_the_records_were_checked(generated):
    out, _ = generated
    assert source.origin(out)["verified"] == "sizes"
    assert synthetic_training_stream(out, 3)[1]["verified"] == "sizes"
