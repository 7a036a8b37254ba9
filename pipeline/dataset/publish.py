"""The output directory's life cycle: refuse to mix jobs, clean leftovers, and write manifest.json only
after every shard is finalized (so readers, which go through the manifest, never see partial data)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import layout
from pipeline.dataset.tfrecord import count_tfrecords
from vae_model.artifacts import sha256_file
from vae_model.errors import DataError, UsageError, UserError


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


def _delete(paths):
    paths = [p for p in paths if FileSystems.exists(p)]
    if paths:
        FileSystems.delete(paths)


def prepare(out: str, fingerprint: str, overwrite: bool) -> None:
    """Make `out` ready for this job, or refuse (UsageError) when it holds another job's data."""
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a directory path")
    manifest = layout.manifest_path(out)
    has_data = FileSystems.exists(manifest) or any(FileSystems.exists(d) for d in layout.shard_dirs(out))
    if has_data and not overwrite and layout.owner_fingerprint(out) != fingerprint:
        raise UsageError(f"--out {out} already holds another job's manifest or shards; "
                         "pass --overwrite to replace them or choose an empty directory")
    # The old manifest goes first: a crash after this point never leaves it describing new files.
    _delete([manifest])
    _delete(layout.shard_dirs(out) + [layout.summary_dir(out)])
    try:
        FileSystems.mkdirs(out)
    except (IOError, OSError):
        pass  # exists already
    try:
        layout.write_job_marker(out, fingerprint)
    except (IOError, OSError) as e:
        raise UsageError(f"--out {out} is not writable ({type(e).__name__}: {e}); "
                         "choose a directory you can write to") from None


def abandon(out: str) -> None:
    """After a failed run: drop shards, Beam temp dirs and the summary so nothing partial is left."""
    try:
        _delete(layout.shard_dirs(out) + [layout.summary_dir(out), layout.manifest_path(out)])
    except (IOError, OSError):
        pass


def remove_temp_leftovers(out: str) -> list[str]:
    """Delete Beam temp dirs still present after a successful job (replayed bundles can leave some)."""
    temps = [p for d in layout.shard_dirs(out) for p in layout.list_entries(d)
             if os.path.basename(p.rstrip("/")).startswith(layout.TEMP_PREFIXES)]
    _delete(temps)
    return temps


def _match_shards(out: str, fmt: str, shards: int):
    return sorted(FileSystems.match([layout.shard_pattern(out, fmt, shards)])[0].metadata_list,
                  key=lambda m: m.path)


def shard_info(path: str, fmt: str, out: str) -> dict:
    """Rows, bytes and sha256 of a shard by reading it back (the fallback when the sink left no stats)."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    try:
        with FileSystems.open(path) as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq
                rows = pq.ParquetFile(f).metadata.num_rows
            else:
                rows = count_tfrecords(f)
    except ValueError as e:  # pyarrow's ArrowInvalid is a ValueError too
        raise DataError(f"{path}: unreadable {fmt} shard ({str(e).splitlines()[0][:200]}); nothing was "
                        "published, re-run the job") from None
    return {"path": layout.relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size),
            "sha256": sha256_file(path)}


def _entry_from_stats(path: str, size: int, fmt: str, out: str, shards: int, stats: list[dict]):
    """The entry the sink recorded while writing this very file, or None when it cannot be trusted.

    A shard's bytes are a pure function of the job, so replayed bundles leave identical stats files; any
    disagreement, or a size that differs from the file's, means we read the file instead.
    """
    shard = layout.shard_number(path)
    found = {(s["rows"], s["bytes"], s["sha256"]) for s in stats
             if s.get("format") == fmt and s.get("shard") == shard and s.get("num_shards") == shards}
    if len(found) != 1:
        return None
    rows, nbytes, sha = found.pop()
    if nbytes != size:
        return None
    return {"path": layout.relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size),
            "sha256": sha}


def _shard_entries(out: str, formats, shards: int) -> list[dict]:
    stats = layout.read_shard_stats(layout.shard_stats_dir(out))
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
    """Check the job's summary and shards against the plan, then publish the manifest; DataError (and nothing
    published) when they disagree."""
    summary = layout.read_summary(out)
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
        "format_version": layout.FORMAT_VERSION,
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
    _delete([layout.summary_dir(out)])
    layout.write_manifest(out, manifest)
    return manifest
