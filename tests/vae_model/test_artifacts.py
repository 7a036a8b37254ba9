"""What every artifact directory shares (vae_model/artifacts.py): atomic directory writes that replace only a
directory provably ours, sha256-checked Keras loading, checksums and provenance."""
import hashlib
import json
import os
import shutil
import stat

import pytest

from vae_model import artifacts
from vae_model.errors import ModelError, UsageError


def _tree(root):
    """Every entry below `root` (symlinks as their target, never followed) -> its bytes, target or None for a
    folder: what a refusal must leave exactly as it was."""
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            path = os.path.join(d, n)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = None
            else:
                out[rel] = open(path, "rb").read()
    return out


def _thing_files(meta):
    if meta["thing_id"] != "t1":
        raise ValueError("another kind")
    return meta["files"]


# a stand-in kind: "thing.json" with its id lists the files beside it; "empty/" may be left empty
THING = artifacts.ArtifactKind("thing", "thing.json", "a thing directory", "--out", "make-thing", _thing_files,
                               ("empty",))


def _write_thing(root, files=("a.bin", "sub/b.bin"), **meta):
    os.makedirs(root, exist_ok=True)
    for name in files:
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(name.encode())
    with open(os.path.join(root, "thing.json"), "w") as f:
        json.dump({"thing_id": "t1", "files": list(files), **meta}, f)


@pytest.mark.parametrize("before", ["absent", "empty", "earlier"])
def test_atomic_directory_writes_a_new_empty_or_earlier_directory_of_its_kind_in_one_step(tmp_path, before):
    out = tmp_path / "out"
    if before != "absent":
        out.mkdir()
    if before == "earlier":
        _write_thing(str(out), ("a.bin", "sub/b.bin", "old.bin"))
    snapshot = _tree(tmp_path)
    with artifacts.atomic_directory(str(out), THING) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".tmp-thing-")
        assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith(".tmp-")} == snapshot  # untouched
        _write_thing(tmp, ("sub/new.bin",))
        os.makedirs(os.path.join(tmp, "empty"))
    assert _tree(out) == {"sub": None, os.path.join("sub", "new.bin"): b"sub/new.bin", "empty": None,
                          "thing.json": (out / "thing.json").read_bytes()}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temp or set-aside directory left


def _user_files(out):
    (out / "photos").mkdir(parents=True)
    (out / "thesis.tex").write_text("years of work")
    (out / "photos" / "cat.jpg").write_bytes(b"cat")


def _stray(rel):
    def make(out):
        _write_thing(str(out))
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    return make


def _meta(text):
    def make(out):
        _write_thing(str(out))
        (out / "thing.json").write_text(text)
    return make


def _a_file(out):
    out.write_text("a file")


def _link_to_ours(out):
    _write_thing(str(out.parent / "real"))
    out.symlink_to(out.parent / "real")


def _link_to_empty(out):
    (out.parent / "real").mkdir()
    out.symlink_to(out.parent / "real")


def _listed_link(name, target_is_dir):
    def make(out):
        outside = out.parent / "outside"
        outside.mkdir()
        (outside / "b.bin").write_text("outside")
        _write_thing(str(out))
        if target_is_dir:
            shutil.rmtree(out / name)
            (out / name).symlink_to(outside)
        else:
            (out / name).unlink()
            (out / name).symlink_to(outside / "b.bin")
    return make


def _meta_is_a_folder(out):
    (out / "thing.json").mkdir(parents=True)
    (out / "a.bin").write_text("x")


@pytest.mark.parametrize("make,problem", [
    (_user_files, "exists and is not a thing directory (no thing.json); choose a new or empty directory"),
    (_stray("notes.txt"), "is a thing directory but also holds notes.txt, which `vae-augment make-thing` did not "
                          "write; move it out or choose a new or empty directory"),
    (_stray("extra/deep/notes.txt"), "but also holds extra/, which"),
    (_stray("sub/notes.txt"), "but also holds sub/notes.txt, which"),
    (_stray("empty/notes.txt"), "but also holds empty/notes.txt, which"),  # a folder it may leave empty, filled
    (_meta("{not json"), "exists and is not a thing directory (its thing.json is not one `vae-augment make-thing` "
                         "writes); choose a new or empty directory, or remove it yourself"),
    (_meta("[1, 2]"), "its thing.json is not one"),
    (_meta('{"thing_id": "other", "files": ["a.bin", "sub/b.bin"]}'), "its thing.json is not one"),
    (_meta('{"thing_id": "t1", "files": [1]}'), "its thing.json is not one"),
    (_meta_is_a_folder, "(no thing.json)"),
    (_a_file, "is a file; remove it yourself or choose a new or empty directory"),
    (_link_to_ours, "is a symbolic link; remove it yourself"),
    (_link_to_empty, "is a symbolic link"),
    (_listed_link("a.bin", False), "but also holds a.bin (a symbolic link), which"),
    (_listed_link("sub", True), "but also holds sub (a symbolic link), which"),
], ids=["user-files", "stray-file", "stray-folder", "stray-in-our-folder", "stray-in-empty-folder", "bad-json",
        "json-array", "other-id", "bad-file-list", "meta-is-a-folder", "a-file", "link-to-ours", "link-to-empty",
        "listed-file-is-a-link", "listed-folder-is-a-link"])
def test_anything_not_provably_ours_is_refused_before_the_work_and_left_as_it_was(tmp_path, make, problem):
    out = tmp_path / "out"
    make(out)
    before = _tree(tmp_path)
    ran = []
    with pytest.raises(UsageError) as e:
        with artifacts.atomic_directory(str(out), THING):
            ran.append(True)
    msg = str(e.value)
    assert msg.startswith(f"--out {out} ") and problem in msg and "\n" not in msg
    assert not ran and _tree(tmp_path) == before
    with pytest.raises(UsageError):
        artifacts.check_out_dir(str(out), THING)


def _interrupt(out):
    raise KeyboardInterrupt  # BaseException too: Ctrl-C mid-write must not leave debris


def _user_writes_there(out):
    out.mkdir(exist_ok=True)
    (out / "late.txt").write_text("written while the work ran")


@pytest.mark.parametrize("earlier", [True, False])
@pytest.mark.parametrize("during", [_interrupt, _user_writes_there], ids=["interrupt", "user-writes"])
def test_a_failure_or_a_change_during_the_work_leaves_the_directory_as_it_was_and_no_temp_dir(tmp_path, earlier,
                                                                                               during):
    """A user's write during the work is caught by the check made again right before the rename."""
    out = tmp_path / "out"
    if earlier:
        _write_thing(str(out))
    before = _tree(tmp_path)
    with pytest.raises(KeyboardInterrupt if during is _interrupt else UsageError) as e:
        with artifacts.atomic_directory(str(out), THING) as tmp:
            _write_thing(tmp, ("new.bin",))
            during(out)
    if during is _user_writes_there:
        assert ("also holds late.txt" if earlier else "(no thing.json)") in str(e.value)
        before.update({"out": None, os.path.join("out", "late.txt"): b"written while the work ran"})
    assert _tree(tmp_path) == before


def test_a_change_after_the_last_check_is_caught_once_moved_aside_and_put_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _write_thing(str(out))
    checked, real = [], artifacts.ownership_problem

    def racing(path, kind):
        problem = real(path, kind)
        checked.append(path)
        if path == str(out) and checked.count(path) == 2:  # the check right before the move; the user writes now
            (out / "late.txt").write_text("mine")
        return problem

    monkeypatch.setattr(artifacts, "ownership_problem", racing)
    with pytest.raises(UsageError, match=f"^--out {out} is a thing directory but also holds late.txt"):
        with artifacts.atomic_directory(str(out), THING) as tmp:
            _write_thing(tmp, ("new.bin",))
    assert (out / "late.txt").read_text() == "mine" and (out / "a.bin").exists()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_writer_must_record_everything_it_writes(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="also holds unlisted.bin"):
        with artifacts.atomic_directory(str(out), THING) as tmp:
            _write_thing(tmp, ("a.bin",))
            open(os.path.join(tmp, "unlisted.bin"), "wb").close()
    assert os.listdir(tmp_path) == []


def test_remote_and_uncreatable_paths_are_refused_up_front(tmp_path):
    with pytest.raises(UsageError, match=r"^--out gs://b/m is not a local path; `vae-augment make-thing` writes"):
        artifacts.check_out_dir("gs://b/m", THING)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError) as e:
        artifacts.check_out_dir(str(tmp_path / "f" / "sub" / "out"), THING)
    assert str(e.value) == (f"--out {tmp_path / 'f' / 'sub' / 'out'} cannot be created: {tmp_path / 'f'} is not a "
                            "directory; choose another path")
    assert artifacts.check_out_dir(str(tmp_path / "new" / "deeper"), THING) == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_checksums_key_every_file_by_its_relative_path(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "a.keras").write_bytes(b"abc")
    (tmp_path / "plots" / "p.png").write_bytes(b"")
    assert artifacts.checksums(str(tmp_path)) == {"a.keras": hashlib.sha256(b"abc").hexdigest(),
                                                  "plots/p.png": hashlib.sha256(b"").hexdigest()}


def test_load_keras_checks_the_recorded_sha256_before_loading(tmp_path, bundled):
    data = open(bundled.file("decoder.keras"), "rb").read()
    path = tmp_path / "decoder.keras"
    path.write_bytes(data)
    fix = "retrain or re-copy it"
    model = artifacts.load_keras(str(path), hashlib.sha256(data).hexdigest(), "model.json", fix)
    assert model.inputs[0].shape[-1] == bundled.latent_dim
    assert artifacts.load_keras(str(path), None, "model.json", fix).count_params() == model.count_params()
    with pytest.raises(ModelError) as e:
        artifacts.load_keras(str(path), "0" * 64, "model.json", fix)
    assert str(e.value) == f"{path} does not match the sha256 in model.json (changed or damaged); {fix}"
    with pytest.raises(ModelError, match="is missing"):
        artifacts.load_keras(str(tmp_path / "none.keras"), None, "model.json", fix)


def test_bundled_or_none_resolves_to_the_shipped_directory():
    assert artifacts.resolve_dir(None, lambda: "/shipped") == artifacts.resolve_dir("bundled", lambda: "/shipped") \
        == "/shipped"
    assert artifacts.resolve_dir("gs://b/m", lambda: "/shipped") == "gs://b/m"


def test_command_line_names_the_command_whatever_started_it():
    assert artifacts.command_line(["/venv/bin/vae-augment", "train", "--set", "a=b c"]) == \
        "vae-augment train --set 'a=b c'"
    assert set(artifacts.versions()) >= {"python", "tensorflow", "keras", "numpy"}
