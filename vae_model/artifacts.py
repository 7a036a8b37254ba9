"""What every artifact directory (model, classifier, report) shares: local-or-remote file access, atomic
directory writes, sha256-checked Keras loading, and the provenance (command, versions, checksums) it records."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
from datetime import datetime, timezone

from vae_model.errors import ModelError

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

@contextlib.contextmanager
def atomic_directory(out_dir: str, kind: str):
    """Yield a fresh temp dir beside `out_dir`; on success it replaces `out_dir` in one rename, on any error it
    is removed and `out_dir` is untouched. `kind` names the temp dir (`.tmp-model-...`) so leftovers say whose."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{kind}-", dir=parent)
    try:
        yield tmp
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- Keras

def load_keras(path: str, sha256: str | None, recorded_in: str, fix: str):
    """Load a `.keras` file (local or gs://) uncompiled. With `sha256` (the digest `recorded_in` holds) the bytes
    must match it first. Any failure is one ModelError naming the file and `fix`."""
    import keras

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
