"""The on-disk layout of a `vae-augment generate` output, local or gs://: every file and folder name, shard
naming, the per-shard stats files the sinks leave, and the one manifest reader and writer.

    OUT/manifest.json                         written last, by publish.finalize: readers trust only it
    OUT/parquet/part-SSSSS-of-NNNNN.parquet   one folder per format
    OUT/tfrecord/part-SSSSS-of-NNNNN.tfrecord
    OUT/.vae-augment-job                      the running job's fingerprint (so a re-run may reuse OUT)
    OUT/.vae-augment-summary/                 the job's counts and shard stats, until finalize removes it
"""
from __future__ import annotations

import json
import os
import uuid

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from vae_model.errors import DataError

MANIFEST = "manifest.json"
JOB_MARKER = ".vae-augment-job"
SUMMARY_DIR = ".vae-augment-summary"
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
    for m in FileSystems.match([join(directory, "**")])[0].metadata_list:
        rest = m.path[len(directory.rstrip("/")) + 1:]
        tops.add(join(directory, rest.split("/")[0]))
    return sorted(tops)


# ---------------------------------------------------------------------------------------------- small JSON files

def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read())


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
        found = FileSystems.match([join(stats_dir, "*.json")])[0].metadata_list
    except BeamIOError:
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

def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shard_entry_ok(s) -> bool:
    return (isinstance(s, dict) and isinstance(s.get("path"), str) and isinstance(s.get("format"), str)
            and isinstance(s.get("rows"), int) and not isinstance(s.get("rows"), bool) and s["rows"] >= 0)


def _manifest_problems(manifest) -> list[str]:
    if not isinstance(manifest, dict):
        return [f"a JSON {type(manifest).__name__}, not an object"]
    problems = []
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(map(_shard_entry_ok, shards)):
        problems.append("'shards' must be a list of {path, format, rows}")
    problems += [f"'{key}' must be a positive integer" for key in ("height", "width")
                 if not _positive_int(manifest.get(key))]
    return problems


def read_manifest(out_dir: str) -> dict:
    """The manifest of a finished generate output (local or gs://), checked for what every reader relies on:
    a JSON object with 'shards' [{path, format, rows}] and positive 'height' and 'width'. DataError otherwise,
    one line naming the file."""
    path = manifest_path(out_dir)
    if "://" not in out_dir and not os.path.isdir(out_dir):
        raise DataError(f"{out_dir} does not exist, so it has no {MANIFEST}; pass a `vae-augment generate` "
                        "output directory")
    if not FileSystems.exists(path):
        raise DataError(f"{out_dir} has no {MANIFEST}: it is not a finished `vae-augment generate` output "
                        "(the job failed or is still running); re-run generate or pass the right directory")
    try:
        manifest = _read_json(path)
    except (OSError, ValueError, BeamIOError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{path}: not valid JSON ({first}); re-run generate to rewrite the output") from None
    problems = _manifest_problems(manifest)
    if problems:
        raise DataError(f"{path}: not a valid manifest ({'; '.join(problems)}); re-run generate to rewrite "
                        "the output")
    return manifest


def write_manifest(out_dir: str, manifest: dict) -> None:
    """Publish `manifest` (written to a temp name, then renamed, so readers never see half a file)."""
    _write_text(manifest_path(out_dir), json.dumps(manifest, indent=1))
