"""What made an artifact: command line, library versions, checksums. Recorded in every model/output dir."""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import shlex
import sys
from datetime import datetime, timezone

_PACKAGES = ("vae-augment", "tensorflow", "keras", "apache-beam", "numpy", "pyarrow", "click")


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


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a local or remote (gs://) file, streamed."""
    from apache_beam.io.filesystems import FileSystems

    h = hashlib.sha256()
    with FileSystems.open(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
