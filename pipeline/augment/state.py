"""Resume: one record per finished step in DIR/state/STEP.json, written last and atomically.

A step's fingerprint hashes what decides its output: its parameters, the identities of the steps it reads, and
the code (`code_identity`: this package's source and the library versions every artifact records).
Its record lists the sha256 of every output file. A step is skipped only when its record exists, its fingerprint
equals the one asked for, and every listed output file is still there with that sha256 (so a removed or
corrupted output reruns the step, and with it, through the identities, every step that read it). A crash
loses only the running step: its output is written to a temp name and moved into place before its record.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile

from vae_model import artifacts
from vae_model.artifacts import atomic_file

STATE_DIR = "state"
OWNER_FILE = "augment.json"  # marks DIR as an augment output (ownership check before anything is written)
CODE_PACKAGES = ("vae_model", "pipeline")


@functools.lru_cache(maxsize=1)
def code_identity() -> str:
    """sha256 (16 hex) of every .py file of this project's packages, by relative path, and the versions every
    artifact records (`artifacts.versions()`): after an upgrade or an edit, a resumed run redoes its steps instead
    of mixing outputs of two code versions."""
    import importlib

    h = hashlib.sha256()
    for pkg in CODE_PACKAGES:
        root = os.path.dirname(importlib.import_module(pkg).__file__)
        files = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root)
                       for n in names if n.endswith(".py"))
        for rel in files:
            h.update(f"{pkg}/{rel}\0{sha256_file(os.path.join(root, rel))}\0".encode())
    h.update(json.dumps(artifacts.versions(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def output_digests(root: str, rels) -> dict[str, str]:
    """sha256 of every file of the outputs `rels` (files or folders below `root`), by '/'-relative path."""
    out = {}
    for rel in rels:
        path = os.path.join(root, rel)
        if os.path.isdir(path):
            for folder, _, names in os.walk(path):
                for name in names:
                    p = os.path.join(folder, name)
                    out[os.path.relpath(p, root).replace(os.sep, "/")] = sha256_file(p)
        elif os.path.isfile(path):
            out[rel] = sha256_file(path)
        else:
            raise FileNotFoundError(path)
    return dict(sorted(out.items()))


class Ledger:
    """The step records of one augment directory."""

    def __init__(self, root: str):
        self.root = root
        self.dir = os.path.join(root, STATE_DIR)

    def _path(self, step: str) -> str:
        return os.path.join(self.dir, f"{step}.json")

    def record(self, step: str) -> dict | None:
        try:
            with open(self._path(step)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) else None

    def complete(self, step: str, fp: str) -> dict | None:
        """The record of `step` when its outputs are complete and match `fp`; else None."""
        rec = self.record(step)
        if rec is None or rec.get("fingerprint") != fp or not isinstance(rec.get("outputs"), dict):
            return None
        for rel, digest in rec["outputs"].items():
            path = os.path.join(self.root, rel)
            if not os.path.isfile(path) or sha256_file(path) != digest:
                return None
        listed = set(rec["outputs"])
        for rel in rec.get("output_roots", []):  # an extra file in an output folder is a change too
            try:
                if set(output_digests(self.root, [rel])) != {k for k in listed if k == rel or k.startswith(rel + "/")}:
                    return None
            except FileNotFoundError:
                return None
        return rec

    def write(self, step: str, fp: str, output_roots: list[str], info: dict) -> dict:
        outputs = output_digests(self.root, output_roots)
        identity = fingerprint({"step": step, "fingerprint": fp, "outputs": outputs})
        rec = {"step": step, "fingerprint": fp, "identity": identity, "output_roots": list(output_roots),
               "outputs": outputs, **info}
        os.makedirs(self.dir, exist_ok=True)
        write_json_atomic(self._path(step), rec)
        return rec

    def forget(self, step: str) -> None:
        if os.path.exists(self._path(step)):
            os.unlink(self._path(step))


def write_json_atomic(path: str, obj) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=float)


def temp_beside(path: str, is_dir: bool) -> str:
    """A fresh temp file or folder name beside `path` (same filesystem, so the final rename is atomic)."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    prefix = f".tmp-{os.path.basename(path)}-"
    if is_dir:
        return tempfile.mkdtemp(prefix=prefix, dir=parent)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=os.path.splitext(path)[1], dir=parent)
    os.close(fd)
    return tmp


def replace(tmp: str, path: str) -> None:
    """Move a finished temp output into place, removing an earlier (stale) output of the same step first."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.replace(tmp, path)


def remove_temps(folder: str) -> None:
    """Leftover temp outputs of a crashed step (ours: `.tmp-` prefix) in `folder`."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(".tmp-"):
            p = os.path.join(folder, name)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
