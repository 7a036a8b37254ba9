"""The on-disk layout of a `vae-augment generate` output, local or gs://: every file and folder name, shard
naming, the per-shard stats files the sinks leave, and the one manifest reader and writer.

    OUT/manifest.json                         written last, by publish.finalize: readers trust only it
    OUT/parquet/part-SSSSS-of-NNNNN.parquet   one folder per format
    OUT/tfrecord/part-SSSSS-of-NNNNN.tfrecord
    OUT/.vae-augment-job                      the running job's fingerprint (so a re-run may reuse OUT)
    OUT/.vae-augment-summary/                 the job's counts and shard stats, until finalize removes it
    OUT/.vae-augment-lock                     while a job runs: who holds OUT (publish.acquire/release)

Containment: a manifest can name only FORMAT/part-SSSSS-of-NNNNN[-TOKEN].FORMAT files of its own folder
(read_manifest checks the names), and readers reach a shard only through shard_files, which checks it is really
inside OUT (symlinks resolved), a regular file, and of the manifest's size, before a byte of it is read.
"""
from __future__ import annotations

import json
import os
import re
import stat
import sys
import uuid
from typing import NamedTuple

from vae_model.errors import DataError


class _FileSystems:
    """Beam's FileSystems, imported on first use by a URL (gs://...); local paths are joined, tested and opened for
    reading with os and open(), as Beam's LocalFileSystem does, so reading a local output (readers, verify) never
    imports Beam, whose import loads its runner machinery (~2 s)."""

    @staticmethod
    def beam():
        from apache_beam.io.filesystems import FileSystems

        return FileSystems

    def join(self, base: str, *parts: str) -> str:
        return self.beam().join(base, *parts) if "://" in base else os.path.join(base, *parts)

    def exists(self, path: str) -> bool:
        return self.beam().exists(path) if "://" in path else os.path.exists(path)

    def open(self, path: str):
        return self.beam().open(path) if "://" in path else open(path, "rb")  # noqa: SIM115 - caller closes

    def __getattr__(self, name):  # match, create, rename, delete, ...: Beam's
        return getattr(self.beam(), name)


FileSystems = _FileSystems()


def beam_io_errors() -> tuple:
    """(BeamIOError,) once Beam's filesystems are loaded, else (): `except beam_io_errors():` catches Beam's error
    without importing Beam (no Beam call, no BeamIOError)."""
    mod = sys.modules.get("apache_beam.io.filesystem")
    return (mod.BeamIOError,) if mod is not None else ()

MANIFEST = "manifest.json"
JOB_MARKER = ".vae-augment-job"
SUMMARY_DIR = ".vae-augment-summary"
LOCK = ".vae-augment-lock"
FORMATS = ("parquet", "tfrecord")
SHARD_DIRS = {fmt: fmt for fmt in FORMATS}  # OUT/parquet/, OUT/tfrecord/
SUFFIX = {fmt: "." + fmt for fmt in FORMATS}
FILE_PREFIX = "part"
TEMP_PREFIXES = ("beam-temp-", ".temp-")  # Beam's and the sinks' temp folders inside a shard folder
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------- names

def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def manifest_path(out: str) -> str:
    return join(out, MANIFEST)


def locate_manifest(path: str) -> tuple[str, str]:
    """(output folder, manifest path) of an output given as its folder or as its manifest.json."""
    if path.rstrip("/").endswith("/" + MANIFEST) or path == MANIFEST:
        folder = path.rstrip("/")[: -len(MANIFEST)].rstrip("/") or "."
        return folder, manifest_path(folder)
    return path, manifest_path(path)


def job_marker_path(out: str) -> str:
    return join(out, JOB_MARKER)


def lock_path(out: str) -> str:
    return join(out, LOCK)


def shard_dir(out: str, fmt: str) -> str:
    return join(out, SHARD_DIRS[fmt])


def shard_dirs(out: str) -> list[str]:
    return [join(out, d) for d in SHARD_DIRS.values()]


def summary_dir(out: str) -> str:
    return join(out, SUMMARY_DIR)


def summary_prefix(out: str) -> str:
    """Where the job writes its one-line JSON summary (counts, digest) for finalize."""
    return join(out, SUMMARY_DIR, "summary.json")


def shard_stats_dir(out: str) -> str:
    """Where the sinks leave one small JSON per written shard (rows, bytes, sha256); removed by finalize."""
    return join(out, SUMMARY_DIR, "shards")


def shard_name(file_prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    """`part-00003-of-00016.tfrecord`: the same pattern Beam's FileBasedSink uses."""
    return f"{file_prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def shard_pattern(out: str, fmt: str, num_shards: int) -> str:
    """Glob matching every shard file of one format of a job with `num_shards` shards."""
    return join(shard_dir(out, fmt), f"{FILE_PREFIX}-*-of-{num_shards:05d}{SUFFIX[fmt]}")


def shard_number(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


def relative(path: str, out: str) -> str:
    """`path` relative to the output folder, as the manifest lists shards."""
    return path[len(out):].lstrip("/") if path.startswith(out) else path


def list_entries(directory: str) -> list[str]:
    """Top-level entries (files and folders, empty ones included) of a local or remote directory."""
    if "://" not in directory:
        return sorted(os.path.join(directory, n) for n in os.listdir(directory)) if os.path.isdir(directory) else []
    tops = set()
    for m in _listing(directory, "**"):
        rest = m.path[len(directory.rstrip("/")) + 1:]
        tops.add(join(directory, rest.split("/")[0]))
    return sorted(tops)


def _listing(directory: str, glob: str) -> list:
    """Beam's metadata of every file under `directory` matching `glob` ("*": directly in it, "**": anywhere),
    for any folder name: Beam's globs have no escape, so its glob characters become one-character classes
    (`[` as `[\\[]`, which also matches a backslash) and the result is cut to paths really under `directory`."""
    top = directory.rstrip("/") + "/"
    escaped = re.sub(r"([*?])", r"[\1]", top.replace("[", "[\\[]"))
    return [m for m in FileSystems.match([escaped + glob])[0].metadata_list if m.path.startswith(top)]


def list_tree(directory: str) -> dict[str, int]:
    """{path: size in bytes} of every file at any depth under a remote directory, from one prefix listing."""
    return {m.path: m.size_in_bytes for m in _listing(directory, "**")}


def list_files(directory: str) -> dict[str, int]:
    """{path: size in bytes} of the files directly in a local or remote directory, from one listing."""
    top = directory.rstrip("/") + "/"
    return {m.path: m.size_in_bytes for m in _listing(directory, "*") if "/" not in m.path[len(top):]}


# ---------------------------------------------------------------------------------------------- small JSON files

def _file_kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


JSON_MAX_BYTES = 64 << 20  # far above any manifest we write; so a huge or endless file is never read whole


def _read_json(path: str):
    """A small JSON file of ours; ValueError when it is not a regular file (a FIFO would block, /dev/zero never
    end), is too big, or is not JSON."""
    if "://" not in path and os.path.exists(path):
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"it is {_file_kind(mode)}, not a regular file")
    with FileSystems.open(path) as f:
        data = f.read(JSON_MAX_BYTES + 1)
    if len(data) > JSON_MAX_BYTES:
        raise ValueError(f"larger than {JSON_MAX_BYTES >> 20} MiB")
    return json.loads(data)


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as f:
        f.write(text.encode())
    FileSystems.rename([tmp], [path])


def write_shard_stats(stats_dir: str, stats: dict) -> None:
    """One sink's record of the shard it wrote: {format, shard, num_shards, rows, bytes, sha256}. Named uniquely,
    so a replayed bundle adds a file instead of racing the first attempt's."""
    name = f"{stats['format']}-{stats['shard']:05d}-of-{stats['num_shards']:05d}-{uuid.uuid4().hex}.json"
    with FileSystems.create(join(stats_dir, name)) as f:
        f.write(json.dumps(stats).encode())


def read_shard_stats(stats_dir: str) -> list[dict]:
    """Every stats file the sinks left in `stats_dir` (replayed bundles may leave identical duplicates)."""
    try:
        found = [m for m in _listing(stats_dir, "*") if m.path.endswith(".json")]
    except beam_io_errors():
        return []
    stats = []
    for m in found:
        with FileSystems.open(m.path) as f:
            try:
                stats.append(json.loads(f.read()))
            except ValueError:
                continue  # a write cut short by a failed attempt; finalize falls back to reading the shard
    return stats


def read_summary(out: str) -> dict:
    return _read_json(summary_prefix(out))


def write_job_marker(out: str, fingerprint: str) -> None:
    _write_text(job_marker_path(out), json.dumps({"fingerprint": fingerprint}))


def owner_fingerprint(out: str) -> str | None:
    """Fingerprint of the job whose data `out` holds: the manifest's, else the job marker's; None if unknown."""
    for path in (manifest_path(out), job_marker_path(out)):
        if FileSystems.exists(path):
            try:
                owner = _read_json(path)
            except ValueError:
                return None
            return owner.get("fingerprint") if isinstance(owner, dict) else None
    return None


# ---------------------------------------------------------------------------------------------- the manifest

class InvalidManifest(DataError):
    """manifest.json is there but damaged: not JSON, or not the structure below (verify lists it as a problem)."""


_REQUIRED = ("format_version", "total", "per_class", "dataset_digest", "formats", "shards", "height", "width")
_ENTRY_KEYS = ("path", "format", "rows", "bytes")
# A shard's checksums: crc32c (8 hex digits, big-endian; what GCS stores per object) and/or sha256 (opt-in).
_CHECKSUM_HEX = {"crc32c": 8, "sha256": 64}
SHARD_CHECKSUMS = {k: re.compile(f"[0-9a-f]{{{n}}}") for k, n in _CHECKSUM_HEX.items()}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CLASS_KEY = re.compile(r"-?[0-9]+")
# The containment rule: a shard is FORMAT/NAME, NAME our shard naming (an optional job token before the suffix),
# so a manifest can only name files that a job writes inside its own output folder.
SHARD_FILE = {fmt: re.compile(rf"{FILE_PREFIX}-[0-9]{{5,}}-of-[0-9]{{5,}}(?:-[0-9A-Za-z]{{1,64}})?"
                              + re.escape(SUFFIX[fmt])) for fmt in FORMATS}


def first_line(e: BaseException) -> str:
    """The first line of an error's message (its type when empty), for one-line user errors."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_int(value) -> bool:
    return _count(value) and value > 0


def _hex64(value) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _per_class_ok(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _CLASS_KEY.fullmatch(k) and _count(n)
                                           for k, n in value.items())


def _formats_ok(value) -> bool:
    return isinstance(value, list) and bool(value) and len(set(map(str, value))) == len(value) \
        and all(f in FORMATS for f in value)


_FIELDS = {
    "format_version": (_positive_int, "a positive integer"),
    "total": (_count, "a non-negative integer"),
    "per_class": (_per_class_ok, "an object mapping class numbers ('0', '-1') to non-negative integers"),
    "dataset_digest": (_hex64, "64 lowercase hex digits"),
    "formats": (_formats_ok, f"a list of distinct formats out of {', '.join(FORMATS)}"),
    "shards": (lambda v: isinstance(v, list), "a list"),
    "height": (_positive_int, "a positive integer"),
    "width": (_positive_int, "a positive integer"),
}


def shard_path_problem(path, fmt: str) -> str | None:
    """Why `path`, a manifest's shard path of format `fmt`, may not be followed; None when it is ours."""
    if not isinstance(path, str) or not path:
        return "is not a path"
    if "\x00" in path or "\\" in path:
        return "contains a NUL or a backslash"
    if ":" in path:
        return "has a URL scheme or drive letter"
    if path.startswith("/"):
        return "is absolute"
    if ".." in path.split("/"):
        return "has a '..' segment and leaves the output folder"
    folder, _, name = path.partition("/")
    if folder != SHARD_DIRS[fmt] or not SHARD_FILE[fmt].fullmatch(name):
        return f"is not {SHARD_DIRS[fmt]}/{FILE_PREFIX}-SSSSS-of-NNNNN{SUFFIX[fmt]}"
    return None


def _entry_problems(i: int, s) -> list[str]:
    where = f"shard {i}"
    if not isinstance(s, dict):
        return [f"{where} is not an object"]
    missing = [k for k in _ENTRY_KEYS if k not in s]
    if missing:
        return [f"{where} lacks {', '.join(missing)}"]
    if s["format"] not in FORMATS:
        return [f"{where} format {repr(s['format'])[:40]} is not one of {', '.join(FORMATS)}"]
    problems = [f"{where} '{k}' must be a non-negative integer" for k in ("rows", "bytes") if not _count(s[k])]
    if not any(k in s for k in SHARD_CHECKSUMS):
        problems.append(f"{where} lacks a checksum (crc32c or sha256)")
    for k, pattern in SHARD_CHECKSUMS.items():
        if k in s and not (isinstance(s[k], str) and pattern.fullmatch(s[k])):
            problems.append(f"{where} '{k}' must be {_CHECKSUM_HEX[k]} lowercase hex digits")
    why = shard_path_problem(s["path"], s["format"])
    if why:
        problems.append(f"{where} path {repr(s['path'])[:120]} {why}")
    return problems


def manifest_problems(manifest) -> list[str]:
    """Everything structurally wrong with a parsed manifest (types, required keys, containment), one phrase each."""
    if not isinstance(manifest, dict):
        return [f"a JSON {type(manifest).__name__}, not an object"]
    problems = [f"'{key}' is missing" for key in _REQUIRED if key not in manifest]
    problems += [f"'{key}' must be {what}" for key, (ok, what) in _FIELDS.items()
                 if key in manifest and not ok(manifest[key])]
    if "latent_dim" in manifest and not _count(manifest["latent_dim"]):
        problems.append("'latent_dim' must be a non-negative integer")
    shards = manifest.get("shards")
    if problems or not isinstance(shards, list):
        return problems
    for i, s in enumerate(shards):
        problems += _entry_problems(i, s)
    if problems:
        return problems
    paths = [s["path"] for s in shards]
    if len(set(paths)) != len(paths):
        problems.append("a shard path is listed twice")
    listed = {s["format"] for s in shards}
    problems += [f"shards of format {fmt} are listed but 'formats' lacks it" for fmt in sorted(listed)
                 if fmt not in manifest["formats"]]
    problems += [f"'formats' has {fmt} but no {fmt} shard is listed" for fmt in manifest["formats"]
                 if fmt not in listed]
    return problems


def read_manifest(out_dir: str) -> dict:
    """The manifest of a finished generate output (local or gs://), checked for everything readers rely on: the
    keys and types above and, for every shard, the containment rule. DataError otherwise (InvalidManifest for a
    damaged one), one line naming the file."""
    path = manifest_path(out_dir)
    if "://" not in out_dir and not os.path.isdir(out_dir):
        raise DataError(f"{out_dir} does not exist, so it has no {MANIFEST}; pass a `vae-augment generate` "
                        "output directory")
    if not FileSystems.exists(path):
        raise DataError(f"{out_dir} has no {MANIFEST}: it is not a finished `vae-augment generate` output "
                        "(the job failed or is still running); re-run generate or pass the right directory")
    try:
        manifest = _read_json(path)
    except ValueError as e:
        raise InvalidManifest(f"{path}: not valid JSON ({first_line(e)}); re-run generate to rewrite the output") \
            from None
    except (OSError, *beam_io_errors()) as e:
        raise DataError(f"{path}: cannot be read ({first_line(e)}); check its permissions") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if _count(version) and version > FORMAT_VERSION:  # first: a newer format may differ in any other field
        raise DataError(f"{path}: format_version {version} was written by a newer vae-augment (this one reads "
                        f"version {FORMAT_VERSION}); upgrade vae-augment to read it")
    problems = manifest_problems(manifest)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InvalidManifest(f"{path}: not a valid manifest ({'; '.join(problems[:3])}{more}); re-run generate "
                              "to rewrite the output")
    return manifest


def write_manifest(out_dir: str, manifest: dict) -> None:
    """Publish `manifest` (written to a temp name, then renamed, so readers never see half a file)."""
    _write_text(manifest_path(out_dir), json.dumps(manifest, indent=1))


# ---------------------------------------------------------------------------------------------- checked shards

class ShardFile(NamedTuple):
    path: str  # the output folder joined with entry["path"]
    entry: dict  # the manifest's entry: path, format, rows, bytes, sha256


def _listed_sizes(out_dir: str, fmt: str) -> dict[str, int] | str:
    """list_files of a remote shard folder, or why it cannot be listed."""
    try:
        return list_files(shard_dir(out_dir, fmt))
    except beam_io_errors() as e:
        return f"cannot list {shard_dir(out_dir, fmt)} ({first_line(e)})"


def _local_problem(path: str, root: str, size: int) -> str | None:
    real = os.path.realpath(path)
    if real == root or os.path.commonpath([root, real]) != root:
        return f"resolves to {real}, outside the output folder (a symlink leaving it)"
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot be read ({type(e).__name__}: {e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"is {_file_kind(st.st_mode)}, not a regular file"
    return _size_problem(st.st_size, size)


def _size_problem(size: int | None, expected: int) -> str | None:
    return "missing" if size is None else None if size == expected else f"{size} bytes, manifest says {expected}"


def check_shards(out_dir: str, manifest: dict, fmt: str | None = None) -> list[tuple[ShardFile, str | None]]:
    """Every shard of the manifest (of `fmt`, or all), each with why it may not be read or None, without reading
    a byte of it: the containment rule, then (local) its real path inside the real output folder, a regular file
    of the manifest's size, or (remote) a file of that size in one listing per format."""
    entries = [(i, s) for i, s in enumerate(manifest["shards"]) if fmt is None or s.get("format") == fmt]
    remote = "://" in out_dir
    root = None if remote else os.path.realpath(out_dir)
    listings: dict[str, dict | str] = {}
    checked = []
    for i, s in entries:
        why = "; ".join(_entry_problems(i, s))
        if why:
            checked.append((ShardFile(str(s.get("path") if isinstance(s, dict) else s)[:120], s), why))
            continue
        shard = ShardFile(join(out_dir, s["path"]), s)
        if not remote:
            checked.append((shard, _local_problem(shard.path, root, s["bytes"])))
            continue
        if s["format"] not in listings:
            listings[s["format"]] = _listed_sizes(out_dir, s["format"])
        listing = listings[s["format"]]
        checked.append((shard, listing if isinstance(listing, str)
                        else _size_problem(listing.get(shard.path), s["bytes"])))
    return checked


def shard_files(out_dir: str, manifest: dict, fmt: str) -> list[ShardFile]:
    """The `fmt` shards of the manifest, each checked by `check_shards`; DataError naming the first bad one (or
    saying no `fmt` shards were written). The one way a reader finds the files it reads."""
    checked = check_shards(out_dir, manifest, fmt)
    if not checked:
        raise DataError(f"{out_dir} has no {fmt} shards (formats written: {', '.join(manifest.get('formats', []))});"
                        f" re-run generate with --formats {fmt}")
    for shard, problem in checked:
        if problem:
            raise DataError(f"{shard.path}: {problem}; nothing was read from {out_dir}, run `vae-augment verify` "
                            "on it and regenerate it")
    return [shard for shard, _ in checked]
