"""Reading the files the built-in formats are made of, local or on any Beam filesystem (gs://...), with one-line
errors naming the file. Remote files go through Beam's FileSystems (imported only for a URL), so a data source
reads the same on the driver and on a Dataflow or portable-runner worker that cannot see the driver's disk."""
from __future__ import annotations

import gzip
import io
import os
import re
import zlib

from vae_model.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def is_url(path) -> bool:
    return "://" in str(path)


def _fs():
    from apache_beam.io.filesystems import FileSystems  # heavy; only for a URL
    return FileSystems


def _storage_errors() -> tuple:
    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:
        return (OSError,)
    return OSError, GoogleAPIError


def require_file(path) -> None:
    if is_url(path):
        try:
            found = _fs().exists(str(path))
        except (*_storage_errors(), ValueError) as e:
            raise DataError(f"{path}: cannot be reached ({one_line(e)}); check the URL and its access") from e
        if not found:
            raise DataError(f"{path}: does not exist; check the path")
        return
    if not os.path.exists(path):
        raise DataError(f"{path}: does not exist; check the path")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")


def fetch(path) -> bytes:
    """The whole of a remote file, raw (no decompression by extension: callers look at the magic)."""
    from apache_beam.io.filesystem import CompressionTypes

    require_file(path)
    try:
        with _fs().open(str(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except _storage_errors() as e:
        raise DataError(f"{path}: cannot read ({one_line(e)}); check the file is complete") from e


def opener(path):
    """A zero-argument callable giving a fresh binary file object of `path` each time: the local file, or the
    remote file's bytes, fetched once."""
    if not is_url(path):
        require_file(path)
        return lambda: open(path, "rb")
    data = fetch(path)
    return lambda: io.BytesIO(data)


def is_gzip(path) -> bool:
    with opener(path)() as f:
        return f.read(2) == GZIP_MAGIC


def read_plain_bytes(path) -> bytes:
    """Whole file, gunzipped when it starts with the gzip magic (names can lie)."""
    require_file(path)
    try:
        if is_url(path):
            raw = fetch(path)
        else:
            with open(path, "rb") as f:
                raw = f.read()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({one_line(e)}); check the file is complete") from e


def is_dir(path) -> bool:
    """A local directory, or a remote prefix holding at least one object."""
    if not is_url(path):
        return os.path.isdir(path)
    try:
        return bool(list_dir(path))
    except (*_storage_errors(), ValueError):
        return False


def list_dir(path) -> list[str]:
    """Names of the files directly in a local directory or under a remote prefix (no deeper)."""
    if not is_url(path):
        return os.listdir(path)
    top = str(path).rstrip("/") + "/"
    # Beam's globs have no escape: glob characters become one-character classes, results cut to the prefix
    escaped = re.sub(r"([*?])", r"[\1]", top.replace("[", "[\\[]"))
    names = [m.path[len(top):] for m in _fs().match([escaped + "*"])[0].metadata_list if m.path.startswith(top)]
    return [n for n in names if n and "/" not in n]


def join(folder, name: str) -> str:
    return _fs().join(str(folder), name) if is_url(folder) else os.path.join(folder, name)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
