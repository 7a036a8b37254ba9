"""Reading the local files the built-in formats are made of, with one-line errors naming the file."""
from __future__ import annotations

import gzip
import os
import zlib

from vae_model.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def require_file(path) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: does not exist; check the path")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")


def is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_plain_bytes(path) -> bytes:
    """Whole file, gunzipped when it starts with the gzip magic (names can lie)."""
    require_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)}); check the file is complete") from e


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
