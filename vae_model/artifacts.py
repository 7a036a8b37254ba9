"""What every artifact directory (model, classifier, report) shares: local-or-remote file access, atomic
directory writes that replace only a directory provably ours, sha256-checked Keras loading, and the provenance
(command, versions, checksums) it records."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from vae_model.errors import ModelError, UsageError

_PACKAGES = ("vae-augment", "tensorflow", "keras", "apache-beam", "numpy", "pyarrow", "click")
BUNDLED = "bundled"  # names the shipped model or classifier wherever a directory is asked for (as None does)


# ---------------------------------------------------------------------------------------------- files

def _fs():
    from apache_beam.io.filesystems import FileSystems  # heavy; only when a path is actually touched
    return FileSystems


def join(base: str, *parts: str) -> str:
    return _fs().join(base, *parts) if "://" in base else os.path.join(base, *parts)


def resolve_dir(path: str | None, bundled_dir) -> str:
    """`path`, or `bundled_dir()` (the shipped directory) for None or "bundled"."""
    return bundled_dir() if path in (None, BUNDLED) else path


def read_bytes(path: str) -> bytes:
    if "://" not in path:  # local: no Beam import (its runners load with it, ~2 s)
        with open(path, "rb") as f:
            return f.read()
    with _fs().open(path) as f:
        return f.read()


def exists(path: str) -> bool:
    return _fs().exists(path)


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a local or remote (gs://) file, streamed."""
    h = hashlib.sha256()
    with _fs().open(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_meta(path: str, meta_name: str, required: tuple, kind: str, command: str, option: str) -> dict:
    """The JSON metadata file `meta_name` of the artifact directory `path`, with every `required` key (a name,
    or a tuple of names for a nested key) present. ModelError naming the file and the fix otherwise; `kind`,
    `command` and `option` say what the directory is, which command writes it and which option passes it."""
    meta_path = join(path, meta_name)
    if not exists(meta_path):
        what = "does not exist" if not exists(path) else f"has no {meta_name}"
        raise ModelError(f"{kind} directory {path} {what}; pass a directory written by `vae-augment {command}` "
                         f"or omit {option} to use the bundled one")
    try:
        meta = json.loads(read_bytes(meta_path))
        for key in required:
            node = meta
            for part in key if isinstance(key, tuple) else (key,):
                node = node[part]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{meta_path} is not a valid {meta_name} ({type(e).__name__}: {e}); "
                         f"retrain with `vae-augment {command}`") from None
    return meta


# ---------------------------------------------------------------------------------------------- provenance

def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def command_line(argv=None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("vae-augment", "cli.py")):
        argv[0] = "vae-augment"
    return shlex.join(argv)


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def checksums(root: str) -> dict[str, str]:
    """sha256 of every file below `root`, keyed by its '/'-separated relative path."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root).replace(os.sep, "/")] = sha256_file(path)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class ArtifactKind:
    """One kind of artifact directory, and how to tell one we wrote: its metadata file `meta`, from which
    `files(meta_dict)` returns every other file the writer put there ('/'-separated; it raises KeyError,
    TypeError or ValueError when the metadata is not of this kind). `dirs` are folders it may leave empty."""

    name: str  # names the temp dirs (.tmp-model-...) so leftovers say whose
    meta: str
    what: str  # "a model directory", for messages
    option: str  # the CLI option naming such a directory
    command: str  # the vae-augment command that writes it
    files: Callable[[dict], Iterable[str]]
    dirs: tuple = ()


def _entries(root: str, rel: str = ""):
    """(relative path, type) of everything below `root`, parents first; never follows a symlink."""
    with os.scandir(os.path.join(root, rel)) as it:
        found = sorted(it, key=lambda e: e.name)
    for e in found:
        path = f"{rel}{e.name}"
        typ = ("link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
               else "file" if e.is_file(follow_symlinks=False) else "other")
        yield path, typ
        if typ == "dir":
            yield from _entries(root, path + "/")


def _owned_names(path: str, kind: ArtifactKind) -> tuple[set, set]:
    """(files, folders) the metadata of `path` says we wrote; ValueError/KeyError/TypeError when it is not ours."""
    with open(os.path.join(path, kind.meta), "rb") as f:
        meta = json.loads(f.read())
    if not isinstance(meta, dict):
        raise TypeError(f"{kind.meta} is not a JSON object")
    files = set(kind.files(meta))
    if not all(isinstance(n, str) for n in files):
        raise TypeError("a file name is not a string")
    folders = {n.rsplit("/", i)[0] for n in files for i in range(1, n.count("/") + 1)} | set(kind.dirs)
    return files | {kind.meta}, folders


def ownership_problem(path: str, kind: ArtifactKind) -> str | None:
    """Why a `kind` directory may not replace `path` and what to do ("<problem>; <fix>"), or None when it may:
    `path` is absent, an empty directory, or holds `kind.meta` (valid, of this kind) and only what that lists.
    Symlinks are never followed."""
    mine = f"`vae-augment {kind.command}`"
    new = "choose a new or empty directory"
    try:
        if not os.path.lexists(path):
            return None
        mode = os.lstat(path).st_mode
        if not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else "not a directory"
            return f"is {what}; remove it yourself or {new}"
        if not os.listdir(path):
            return None
        meta = os.path.join(path, kind.meta)
        if not (os.path.lexists(meta) and stat.S_ISREG(os.lstat(meta).st_mode)):
            return f"exists and is not {kind.what} (no {kind.meta}); {new} (an earlier {mine} output is replaced)"
        try:
            files, folders = _owned_names(path, kind)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return (f"exists and is not {kind.what} (its {kind.meta} is not one {mine} writes); {new}, or remove "
                    "it yourself")
        for rel, typ in _entries(path):
            if not ((typ == "file" and rel in files) or (typ == "dir" and rel in folders)):
                name = rel + ("/" if typ == "dir" else " (a symbolic link)" if typ == "link" else "")
                return f"is {kind.what} but also holds {name}, which {mine} did not write; move it out or {new}"
    except OSError as e:
        return f"cannot be read ({e.strerror}); {new}"
    return None


def _refuse(path: str, kind: ArtifactKind, problem: str):
    raise UsageError(f"{kind.option} {path} {problem}")


def check_out_dir(out_dir: str, kind: ArtifactKind) -> str:
    """`out_dir` made absolute. UsageError (naming it and the fix) unless a `kind` directory may be written there:
    it is new, empty or an earlier `kind` directory (see `ownership_problem`), local, and its parent writable."""
    if "://" in out_dir:
        raise UsageError(f"{kind.option} {out_dir} is not a local path; `vae-augment {kind.command}` writes a "
                         "local directory (copy it to the bucket afterwards)")
    out_dir = os.path.abspath(out_dir)
    problem = ownership_problem(out_dir, kind)
    if problem:
        _refuse(out_dir, kind, problem)
    ancestor = os.path.dirname(out_dir)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        what = "is not a directory" if not os.path.isdir(ancestor) else "is not writable"
        raise UsageError(f"{kind.option} {out_dir} cannot be created: {ancestor} {what}; choose another path")
    return out_dir


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """Yield a file opened on a temp name beside local `path`; on success it replaces `path` (mode 0644), on any
    error it is removed and `path` is untouched."""
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", suffix=os.path.splitext(path)[1],
                               dir=parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(out_dir: str, kind: ArtifactKind):
    """Yield a fresh temp dir beside `out_dir`; on success it replaces `out_dir`, on any error it is removed and
    `out_dir` is untouched. `out_dir` is checked (`check_out_dir`) before the block and again, moved aside where
    nothing can add to it, right before it is deleted: only an empty or earlier `kind` directory is replaced."""
    out_dir = check_out_dir(out_dir, kind)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{kind.name}-", dir=parent)
    try:
        yield tmp
        problem = ownership_problem(tmp, kind)
        if problem:  # a writer that does not record what it writes could never replace its own output
            raise RuntimeError(f"bug: the new {kind.name} directory {tmp} {problem}")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _publish(tmp, out_dir, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: str, out_dir: str, kind: ArtifactKind):
    """Rename `tmp` to `out_dir`. What is there is checked, moved aside (where nothing can add to it by its name),
    checked again and only then deleted; anything not ours goes back and is refused."""
    problem = ownership_problem(out_dir, kind)
    if problem:
        _refuse(out_dir, kind, problem)
    aside = None
    if os.path.lexists(out_dir):
        aside = tempfile.mkdtemp(prefix=f".old-{kind.name}-", dir=os.path.dirname(out_dir))
        try:
            os.rename(out_dir, aside)
        except OSError:
            os.rmdir(aside)
            raise
        problem = ownership_problem(aside, kind)
        if problem:
            os.rename(aside, out_dir)
            _refuse(out_dir, kind, problem)
    try:
        os.rename(tmp, out_dir)  # replaces at most an empty directory that appeared meanwhile
    except OSError:
        if aside:
            os.rename(aside, out_dir)
        problem = ownership_problem(out_dir, kind)
        if problem:
            _refuse(out_dir, kind, problem)
        raise
    if aside:
        shutil.rmtree(aside)


# ---------------------------------------------------------------------------------------------- Keras

def load_keras(path: str, sha256: str | None, recorded_in: str, fix: str):
    """Load a `.keras` file (local or gs://) uncompiled. With `sha256` (the digest `recorded_in` holds) the bytes
    must match it first. Any failure is one ModelError naming the file and `fix`."""
    import keras

    from vae_model import layers, models  # noqa: F401 - registers Sampling and VAE before any load

    if not exists(path):
        raise ModelError(f"{path} is missing; the directory is incomplete, {fix}")
    data = read_bytes(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"{path} does not match the sha256 in {recorded_in} (changed or damaged); {fix}")
    tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
    try:
        tmp.write(data)
        tmp.close()
        return keras.models.load_model(tmp.name, compile=False)
    except Exception as e:  # keras raises many types for a damaged zip/h5
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{path} could not be loaded as a Keras model ({first}); the file is truncated or "
                         f"corrupt: {fix}") from None
    finally:
        os.unlink(tmp.name)
