"""The output directory's life cycle: refuse to mix jobs, clean leftovers, and write manifest.json only
after every shard is finalized (so readers, which go through the manifest, never see partial data)."""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

from apache_beam.io.filesystems import FileSystems

from pipeline.dataset.readers import count_tfrecords
from vae_model.errors import DataError, UsageError, UserError
from vae_model.artifacts import sha256_file

MANIFEST = "manifest.json"
JOB_MARKER = ".vae-augment-job"
SUMMARY_DIR = ".vae-augment-summary"
SHARD_DIRS = {"parquet": "parquet", "tfrecord": "tfrecord"}
SUFFIX = {"parquet": ".parquet", "tfrecord": ".tfrecord"}
FORMAT_VERSION = 1


class JobFailed(UserError):
    """The Beam job failed for good: one line with the root cause; nothing is left for readers."""

    exit_code = 1

    def __init__(self, cause: BaseException):
        root = cause
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__
        lines = [ln for ln in str(root).strip().splitlines() if ln.strip()]
        msg = lines[-1] if lines else type(root).__name__
        super().__init__(f"generation job failed: {type(root).__name__}: {msg[:300]}; no manifest was written, "
                         "fix the cause and re-run the same command")


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def shard_dir(out: str, fmt: str) -> str:
    return join(out, SHARD_DIRS[fmt])


def summary_prefix(out: str) -> str:
    return join(out, SUMMARY_DIR, "summary.json")


def default_shards(total: int) -> int:
    return max(1, min(256, math.ceil(total / 50_000)))


def _read_json(path: str):
    with FileSystems.open(path) as f:
        return json.loads(f.read())


def _write_text(path: str, text: str):
    tmp = path + ".tmp"
    with FileSystems.create(tmp) as f:
        f.write(text.encode())
    FileSystems.rename([tmp], [path])


def _delete(paths):
    paths = [p for p in paths if FileSystems.exists(p)]
    if paths:
        FileSystems.delete(paths)


def _shard_dirs(out):
    return [join(out, d) for d in SHARD_DIRS.values()]


def prepare(out: str, fingerprint: str, overwrite: bool) -> None:
    """Make `out` ready for this job, or refuse (UsageError) when it holds another job's data."""
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a directory path")
    manifest, marker = join(out, MANIFEST), join(out, JOB_MARKER)
    has_data = FileSystems.exists(manifest) or any(FileSystems.exists(d) for d in _shard_dirs(out))
    if has_data and not overwrite:
        owner = None
        for path, key in ((manifest, "fingerprint"), (marker, "fingerprint")):
            if FileSystems.exists(path):
                try:
                    owner = _read_json(path).get(key)
                except ValueError:
                    owner = None
                break
        if owner != fingerprint:
            raise UsageError(f"--out {out} already holds another job's manifest or shards; "
                             "pass --overwrite to replace them or choose an empty directory")
    # The old manifest goes first: a crash after this point never leaves it describing new files.
    _delete([manifest])
    _delete(_shard_dirs(out) + [join(out, SUMMARY_DIR)])
    try:
        FileSystems.mkdirs(out)
    except (IOError, OSError):
        pass  # exists already
    try:
        _write_text(marker, json.dumps({"fingerprint": fingerprint}))
    except (IOError, OSError) as e:
        raise UsageError(f"--out {out} is not writable ({type(e).__name__}: {e}); "
                         "choose a directory you can write to") from None


def abandon(out: str) -> None:
    """After a failed run: drop shards, Beam temp dirs and the summary so nothing partial is left."""
    try:
        _delete(_shard_dirs(out) + [join(out, SUMMARY_DIR), join(out, MANIFEST)])
    except (IOError, OSError):
        pass


TEMP_PREFIXES = ("beam-temp-", ".temp-")


def list_entries(directory: str) -> list[str]:
    """Top-level entries (files and folders, empty ones included) of a local or remote directory."""
    if "://" not in directory:
        return sorted(os.path.join(directory, n) for n in os.listdir(directory)) if os.path.isdir(directory) else []
    tops = set()
    for m in FileSystems.match([join(directory, "**")])[0].metadata_list:
        rest = m.path[len(directory.rstrip("/")) + 1:]
        tops.add(join(directory, rest.split("/")[0]))
    return sorted(tops)


def remove_temp_leftovers(out: str) -> list[str]:
    """Delete Beam temp dirs still present after a successful job (replayed bundles can leave some)."""
    temps = [p for d in _shard_dirs(out) for p in list_entries(d)
             if os.path.basename(p.rstrip("/")).startswith(TEMP_PREFIXES)]
    _delete(temps)
    return temps


def shard_stats_dir(out: str) -> str:
    """Where the sinks leave one small JSON per written shard (rows, bytes, sha256); removed by finalize."""
    return join(out, SUMMARY_DIR, "shards")


def _match_shards(out: str, fmt: str, shards: int):
    pattern = join(out, SHARD_DIRS[fmt], f"part-*-of-{shards:05d}{SUFFIX[fmt]}")
    return sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path)


def list_shards(out: str, fmt: str, shards: int) -> list[str]:
    return [m.path for m in _match_shards(out, fmt, shards)]


def _relative(path: str, out: str) -> str:
    return path[len(out):].lstrip("/") if path.startswith(out) else path


def shard_info(path: str, fmt: str, out: str) -> dict:
    """Rows, bytes and sha256 of a shard by reading it back (the fallback when the sink left no stats)."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    if fmt == "parquet":
        import pyarrow.parquet as pq
        with FileSystems.open(path) as f:
            rows = pq.ParquetFile(f).metadata.num_rows
    else:
        with FileSystems.open(path) as f:
            rows = count_tfrecords(f)
    return {"path": _relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size),
            "sha256": sha256_file(path)}


def _shard_number(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


def _entry_from_stats(path: str, size: int, fmt: str, out: str, shards: int, stats: list[dict]):
    """The entry the sink recorded while writing this very file, or None when it cannot be trusted.

    A shard's bytes are a pure function of the job, so replayed bundles leave identical stats files; any
    disagreement, or a size that differs from the file's, means we read the file instead.
    """
    shard = _shard_number(path)
    found = {(s["rows"], s["bytes"], s["sha256"]) for s in stats
             if s.get("format") == fmt and s.get("shard") == shard and s.get("num_shards") == shards}
    if len(found) != 1:
        return None
    rows, nbytes, sha = found.pop()
    if nbytes != size:
        return None
    return {"path": _relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size), "sha256": sha}


def _shard_entries(out: str, formats, shards: int) -> list[dict]:
    from pipeline.generate.sinks import read_shard_stats

    stats = read_shard_stats(shard_stats_dir(out))
    entries, unknown = [], []
    for fmt in formats:
        for m in _match_shards(out, fmt, shards):  # existence + size: one listing per format
            entry = _entry_from_stats(m.path, m.size_in_bytes, fmt, out, shards, stats)
            entries.append(entry)
            if entry is None:
                unknown.append((len(entries) - 1, fmt, m.path))
    if unknown:
        with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL on big buffers
            read = list(pool.map(lambda u: shard_info(u[2], u[1], out), unknown))
        for (i, _, _), entry in zip(unknown, read):
            entries[i] = entry
    return entries


def finalize(out: str, formats, shards: int, counts: dict[int, int], info: dict) -> dict:
    summary = _read_json(summary_prefix(out))
    expected = {str(c): n for c, n in sorted(counts.items())}
    total = sum(counts.values())
    if summary["total"] != total or summary["per_class"] != expected:
        abandon(out)
        raise DataError(f"job produced {summary['total']} records {summary['per_class']} but {total} {expected} "
                        "were planned; nothing was published, re-run the job")
    entries = _shard_entries(out, formats, shards)
    for fmt in formats:
        rows = sum(e["rows"] for e in entries if e["format"] == fmt)
        n = sum(1 for e in entries if e["format"] == fmt)
        if n != shards or rows != total:
            abandon(out)
            raise DataError(f"{fmt} shards in {out} hold {rows} records in {n} files, expected {total} in "
                            f"{shards}; nothing was published, re-run the job")
    manifest = {
        "format_version": FORMAT_VERSION,
        "total": total,
        "per_class": expected,
        "dataset_digest": summary["digest"],
        "formats": list(formats),
        "num_shards": shards,
        "shards": entries,
        **info,
    }
    if "filter" in summary:
        per = {c: {**v, "acceptance": round(v["passed"] / v["drawn"], 6)} for c, v in summary["filter"].items()}
        drawn = sum(v["drawn"] for v in per.values())
        manifest["filter"] = {**manifest.get("filter", {}), "drawn": drawn,
                              "acceptance": round(sum(v["passed"] for v in per.values()) / drawn, 6),
                              "per_class": per}
    manifest["images_per_second"] = round(total / max(info["elapsed_seconds"], 1e-9), 1)
    _delete([join(out, SUMMARY_DIR)])
    _write_text(join(out, MANIFEST), json.dumps(manifest, indent=1))
    return manifest
