"""The output directory's life cycle, local or gs://.

One job at a time: `exclusive` holds OUT's job lock (created with O_EXCL locally, with an only-if-absent
precondition on GCS) from before `prepare` deletes anything until the manifest is published or the failed job is
cleaned up, so two jobs never write into one OUT and at most one of them reports success.
Only our own files are ever removed, found by explicit listings (never a glob built from OUT, and object-store
"folders" as prefixes): our manifest, our summary and scratch names, and in the shard folders our shard names
and temp folders. Anything else named like ours, or inside our shard folders, is refused with one line.
manifest.json is written last, after every shard is finalized: readers trust only it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import card, layout
from pipeline.dataset.digest import stream_checksums
from pipeline.dataset.tfrecord import count_tfrecords
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


class OutputUnavailable(UserError):
    """OUT cannot be written now: another job holds its lock, or the storage refuses (permission, full disk)."""

    exit_code = 1


_REFUSED = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _remote(path: str) -> bool:
    return "://" in path


def _gcs(path: str) -> bool:
    return path.startswith("gs://")


def _storage_errors() -> tuple:
    """What a failed storage call raises: OSError (BeamIOError is one), and on GCS the API client's errors."""
    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:
        return (OSError,)
    return OSError, GoogleAPIError


# ---------------------------------------------------------------------------------------------- GCS access

def use_anonymous_gcs(no_auth: bool) -> bool:
    """With --no_auth, or STORAGE_EMULATOR_HOST naming a local emulator, make every GCS client of this process
    anonymous with no credential lookup. Beam's own client ignores --no_auth: it looks credentials up with
    retries and back-off (about 20 s per process) before it connects anonymously anyway. Priming its per-process
    cache with "no credentials" skips that; the in-process runner shares the driver's cache. True if primed."""
    if not (no_auth or os.environ.get("STORAGE_EMULATOR_HOST")):
        return False
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without its gcp extra: no gs:// at all
        return False
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials_init = True
        auth._Credentials._credentials = None
    return True


def _gcs_client():
    """A google.cloud.storage client made as Beam's gs:// filesystem makes its own: from the options of the job's
    Pipeline (credentials, impersonation), which Beam keeps on FileSystems."""
    from apache_beam.io.gcp import gcsio
    from apache_beam.options.pipeline_options import PipelineOptions

    return gcsio.create_storage_client(FileSystems._pipeline_options or PipelineOptions())


def _gcs_blob(path: str):
    from apache_beam.io.gcp import gcsio

    bucket, name = gcsio.parse_gcs_path(path)
    return _gcs_client().bucket(bucket).blob(name)


# ---------------------------------------------------------------------------------------------- the job lock

class JobLock(NamedTuple):
    """OUT's lock as this job holds it: our `job_id` is in the lock file; on GCS the lock object's `generation`
    is the proof (a lock deleted by hand and retaken by another job has another one)."""

    path: str
    job_id: str
    generation: int | None = None


def check_target(out: str) -> None:
    """UsageError when `out` cannot be a generate output: an existing file, or a scheme we cannot lock."""
    if _remote(out) and not _gcs(out):
        raise UsageError(f"--out {out}: generate writes to a local folder or gs:// (its job lock needs an atomic "
                         f"create-if-absent, which {out.split('://')[0]}:// does not offer here)")
    if not _remote(out) and os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file; give a directory path")


def _not_writable(out: str, e: BaseException) -> UserError:
    """One line for a failed write to OUT: the storage's refusal (exit 1), or a path that cannot be a folder."""
    refused = isinstance(e, PermissionError) or getattr(e, "errno", None) in _REFUSED or getattr(e, "code", 0) == 403
    return (OutputUnavailable if refused else UsageError)(
        f"--out {out} is not writable ({type(e).__name__}: {layout.first_line(e)}); "
        + ("free space or fix its permissions, or choose another --out" if refused
           else "choose a directory you can write to"))


def _read_lock(path: str) -> dict | None:
    try:
        if _gcs(path):
            data = _gcs_blob(path).download_as_bytes()
        else:
            with open(path, "rb") as f:
                data = f.read(4096)
        owner = json.loads(data)
    except (ValueError, *_storage_errors()):
        return None
    return owner if isinstance(owner, dict) else None


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        pass
    return True


def _held_error(out: str, path: str) -> OutputUnavailable:
    owner = _read_lock(path)
    if owner is None:
        who = "another generate job (its lock is being written or unreadable)"
    else:
        who = (f"generate job {str(owner.get('job_id'))[:12]} (host {owner.get('host')}, pid {owner.get('pid')}, "
               f"started {owner.get('started')})")
    dead = (owner is not None and not _remote(path) and owner.get("host") == socket.gethostname()
            and not _pid_alive(owner.get("pid")))
    status = "; that process is no longer running, so the job died" if dead else ""
    return OutputUnavailable(f"--out {out} is in use by {who}, which holds {path}{status}; wait for it to finish, "
                        f"or if it is no longer running delete {path} and re-run")


def _create_local(out: str, path: str, data: bytes) -> bool:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise _not_writable(out, e) from None
    # Written whole under a unique name, then hard-linked into place: link() fails if the lock exists, like
    # O_EXCL, but a racing job never sees the lock empty (it would name no owner).
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            return _create_local_excl(path, data)  # a filesystem without hard links
    except OSError as e:
        raise _not_writable(out, e) from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    return True


def _create_local_excl(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError:
        os.remove(path)  # a lock nobody can read would block OUT for nothing
        raise
    return True


def _create_gcs(out: str, path: str, data: bytes, job_id: str) -> int | None:
    """The new lock object's generation, or None when the lock exists."""
    from google.api_core import exceptions as gexc

    blob = _gcs_blob(path)
    try:
        blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
    except gexc.PreconditionFailed:
        # The client retries an upload with a precondition; if the first attempt did land, the lock is ours.
        owner = _read_lock(path)
        if owner is None or owner.get("job_id") != job_id:
            return None
        blob.reload()
    except gexc.NotFound as e:
        raise UsageError(f"--out {out}: {layout.first_line(e)}; check that the bucket exists") from None
    except gexc.GoogleAPIError as e:
        raise _not_writable(out, e) from None
    return blob.generation


def acquire(out: str, fingerprint: str) -> JobLock:
    """Take OUT's job lock, or OutputUnavailable (one line naming the owner and the fix) when another job holds it."""
    check_target(out)
    path = layout.lock_path(out)
    owner = {"job_id": uuid.uuid4().hex, "fingerprint": fingerprint, "host": socket.gethostname(),
             "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data = json.dumps(owner).encode()
    if _gcs(out):
        generation = _create_gcs(out, path, data, owner["job_id"])
        if generation is None:
            raise _held_error(out, path)
        return JobLock(path, owner["job_id"], generation)
    if not _create_local(out, path, data):
        raise _held_error(out, path)
    return JobLock(path, owner["job_id"])


def release(lock: JobLock) -> None:
    """Remove OUT's lock if it is still ours. Errors are swallowed: a lock left behind only makes the next job
    stop with a line naming it."""
    try:
        if _gcs(lock.path):
            from google.api_core import exceptions as gexc
            with contextlib.suppress(gexc.NotFound, gexc.PreconditionFailed):
                _gcs_blob(lock.path).delete(if_generation_match=lock.generation)
            return
        owner = _read_lock(lock.path)
        if owner is not None and owner.get("job_id") == lock.job_id:
            os.remove(lock.path)
    except _storage_errors():
        pass


@contextlib.contextmanager
def exclusive(out: str, fingerprint: str):
    """Hold OUT's job lock for the block (see `acquire`); released however the block ends."""
    lock = acquire(out, fingerprint)
    try:
        yield lock
    finally:
        release(lock)


# ---------------------------------------------------------------------------------------------- what OUT holds

_SCRATCH = (layout.MANIFEST + ".tmp", layout.JOB_MARKER + ".tmp")  # layout's write-then-rename temp names
_FORMAT_OF_DIR = {d: fmt for fmt, d in layout.SHARD_DIRS.items()}


class _Entry(NamedTuple):
    rel: str  # relative to OUT: "manifest.json", "parquet", "parquet/part-00000-of-00002.parquet"
    kind: str  # "file", "dir" or "other" (a symlink, device, ...: never ours)
    paths: tuple  # what removing it deletes: one local path (file or folder), or every object under a prefix


def _kind(path: str) -> str | None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _local_entries(out: str):
    """Our names at OUT's top level and everything directly in the shard folders; never follows a symlink."""
    for name in (layout.MANIFEST, layout.JOB_MARKER, *_SCRATCH, *card.FILES, layout.SUMMARY_DIR, *_FORMAT_OF_DIR):
        path = os.path.join(out, name)
        kind = _kind(path)
        if kind is None:
            continue
        yield _Entry(name, kind, (path,))
        if name in _FORMAT_OF_DIR and kind == "dir":
            for child in sorted(os.listdir(path)):
                yield _Entry(f"{name}/{child}", _kind(os.path.join(path, child)) or "other",
                             (os.path.join(path, child),))


def _remote_entries(out: str):
    """The same from an object store: a file per exact name, and "folders" as prefix listings of their objects."""
    for name in (layout.MANIFEST, layout.JOB_MARKER, *_SCRATCH, *card.FILES):
        path = layout.join(out, name)
        if FileSystems.exists(path):
            yield _Entry(name, "file", (path,))
    for name in (layout.SUMMARY_DIR, *_FORMAT_OF_DIR):
        top = layout.join(out, name).rstrip("/") + "/"
        objects = sorted(layout.list_tree(top))
        if not objects:
            continue
        yield _Entry(name, "dir", tuple(objects))
        if name in _FORMAT_OF_DIR:
            children: dict[tuple, list] = {}
            for path in objects:
                first, sub, _ = path[len(top):].partition("/")
                if first:  # not a zero-byte "folder" placeholder object
                    children.setdefault((first, "dir" if sub else "file"), []).append(path)
            for (first, kind), paths in sorted(children.items()):
                yield _Entry(f"{name}/{first}", kind, tuple(paths))


class _Inventory(NamedTuple):
    manifest: tuple  # our manifest's path(s): removed first, so no manifest ever names a removed file
    ours: list  # every other path we wrote and may remove (the job marker excepted: prepare rewrites it)
    temps: list  # (OUT-relative name, paths) of the temp folders in the shard folders
    foreign: list  # "REL (why)" of what we cannot prove we wrote
    has_data: bool  # a manifest, shards or temp files: another job's data unless the fingerprints agree


def _our_marker(out: str) -> bool:
    try:
        with FileSystems.open(layout.job_marker_path(out)) as f:
            marker = json.loads(f.read(4096))
    except (ValueError, *_storage_errors()):
        return False
    return isinstance(marker, dict) and isinstance(marker.get("fingerprint"), str)


def _downstream_ours(e: _Entry) -> bool:
    try:
        with FileSystems.open(e.paths[0]) as f:
            return card.is_ours(e.rel, f.read(1 << 20).decode("utf-8", "replace"))
    except _storage_errors():
        return False


def _inventory(out: str) -> _Inventory:
    """What OUT holds under our names, sorted into what we wrote (provably: a valid manifest of ours lists it, or
    OUT has our job marker and it has our shard/temp naming) and what we did not."""
    if not _remote(out) and not os.path.isdir(out):
        return _Inventory((), [], [], [], False)
    entries = list(_remote_entries(out) if _remote(out) else _local_entries(out))
    names = {e.rel: e for e in entries}
    listed, why_not = set(), None
    if layout.MANIFEST in names:
        try:
            listed = {s["path"] for s in layout.read_manifest(out)["shards"]}
        except DataError:
            why_not = "not a valid manifest of ours; `vae-augment verify` says why"
    marker = layout.JOB_MARKER in names and names[layout.JOB_MARKER].kind == "file" and _our_marker(out)
    proven = marker or (layout.MANIFEST in names and why_not is None)
    manifest, ours, temps, foreign, has_data = (), [], [], [], False
    for e in entries:
        top, _, child = e.rel.partition("/")
        if e.rel == layout.MANIFEST:
            if why_not or e.kind != "file":
                foreign.append(f"{e.rel} ({why_not or 'not a file'})")
            else:
                manifest, has_data = e.paths, True
        elif e.rel == layout.JOB_MARKER:
            if not marker:
                foreign.append(f"{e.rel} (not a job marker of ours)")
        elif e.rel in card.FILES:  # dataset card, TFDS metadata: ours only with our marker inside
            if proven and e.kind == "file" and _downstream_ours(e):
                ours += e.paths
            else:
                foreign.append(f"{e.rel} (not a dataset card or TFDS metadata written by vae-augment)")
        elif top in _FORMAT_OF_DIR and not child:
            if e.kind != "dir":
                foreign.append(f"{e.rel} (not a folder)")
        elif not child:  # the summary folder and scratch files: ours by name once OUT is provably ours
            if not proven or e.kind != ("dir" if e.rel == layout.SUMMARY_DIR else "file"):
                foreign.append(f"{e.rel} (in a folder with no job marker or manifest of ours)")
            else:
                ours += e.paths
        elif e.kind == "file" and layout.SHARD_FILE[_FORMAT_OF_DIR[top]].fullmatch(child) \
                and (marker or e.rel in listed):
            ours += e.paths
            has_data = True
        elif e.kind == "dir" and child.startswith(layout.TEMP_PREFIXES) and proven:
            ours += e.paths
            temps.append((e.rel, e.paths))
            has_data = True
        else:
            foreign.append(f"{e.rel} (not a shard or temp folder of ours)" if proven
                           else f"{e.rel} (in a folder with no job marker or manifest of ours)")
    return _Inventory(manifest, ours, temps, foreign, has_data)


def _remove(paths) -> None:
    """Delete exactly these paths (local files or folders, remote objects), never a glob; missing ones are fine."""
    local = [p for p in paths if not _remote(p)]
    for p in local:
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.remove(p)
    remote = [p for p in paths if _remote(p)]
    if remote and _gcs(remote[0]):
        from apache_beam.io.gcp import gcsio

        failed = [(p, code) for p, code in gcsio.GcsIO(storage_client=_gcs_client()).delete_batch(remote) if code]
        if failed:
            raise OSError(f"cannot delete {failed[0][0]} (HTTP {failed[0][1]})"
                          + (f" and {len(failed) - 1} more" if len(failed) > 1 else ""))
    elif remote:
        FileSystems.delete(remote)


def delete_tree(path: str) -> None:
    """Remove a folder we wrote (local), or every object under its prefix (remote); nothing if it is gone."""
    if _remote(path):
        _remove(sorted(layout.list_tree(path.rstrip("/") + "/")))
    else:
        _remove([path])


def _prune_shard_dirs(out: str) -> None:
    if not _remote(out):
        for d in layout.shard_dirs(out):
            with contextlib.suppress(OSError):
                os.rmdir(d)  # only when empty


def _describe(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def prepare(out: str, fingerprint: str, overwrite: bool) -> None:
    """Make `out` ready for this job, or refuse with one line: UsageError when it holds anything named like ours
    that we cannot prove we wrote (whatever `overwrite` says), or another job's data without `overwrite`.
    Call it while holding OUT's lock (`exclusive`)."""
    check_target(out)
    inv = _inventory(out)
    if inv.foreign:
        raise UsageError(f"--out {out} holds files vae-augment did not write: {_describe(inv.foreign)}; move them "
                         "away or choose another --out (--overwrite replaces only a generate output's own files)")
    if inv.has_data and not overwrite and layout.owner_fingerprint(out) != fingerprint:
        raise UsageError(f"--out {out} already holds another job's manifest or shards; "
                         "pass --overwrite to replace them or choose an empty directory")
    try:
        _remove(inv.manifest)  # first: a crash after this point never leaves it describing removed files
        _remove(inv.ours)
        _prune_shard_dirs(out)
        if not _remote(out):
            os.makedirs(out, exist_ok=True)
        layout.write_job_marker(out, fingerprint)
    except _storage_errors() as e:
        raise _not_writable(out, e) from None


def abandon(out: str) -> None:
    """After a failed run: remove our manifest, shards, temp folders and summary (keeping the job marker), so
    nothing partial is left. Never raises: the job's own error is the one to report."""
    try:
        inv = _inventory(out)
        _remove(inv.manifest)
        _remove(inv.ours)
        _prune_shard_dirs(out)
    except Exception:  # noqa: BLE001 - best effort, see above
        pass


def remove_temp_leftovers(out: str) -> list[str]:
    """Delete temp folders still present after a successful job (a retried bundle, or an object store where the
    sink cannot remove a folder, leaves some). Returns their paths."""
    temps = _inventory(out).temps
    _remove([p for _, paths in temps for p in paths])
    return [layout.join(out, rel) for rel, _ in temps]


# ---------------------------------------------------------------------------------------------- finalize

def _files_in(directory: str) -> dict[str, int]:
    """{path: bytes} of the regular files directly in a folder, from one listing (no glob built from its name)."""
    if _remote(directory):
        return layout.list_files(directory)
    if not os.path.isdir(directory):
        return {}
    paths = (os.path.join(directory, n) for n in os.listdir(directory))
    return {p: os.path.getsize(p) for p in paths if _kind(p) == "file"}


def _finished_shards(out: str, fmt: str, shards: int) -> list[tuple[str, int]]:
    """(path, bytes) of the shards a job of `shards` shards writes, as far as they exist."""
    files = _files_in(layout.shard_dir(out, fmt))
    by_name = {os.path.basename(p): (p, n) for p, n in files.items()}
    names = (layout.shard_name(layout.FILE_PREFIX, i, shards, layout.SUFFIX[fmt]) for i in range(shards))
    return [by_name[n] for n in names if n in by_name]


def shard_info(path: str, fmt: str, out: str) -> dict:
    """Rows, bytes, crc32c and sha256 of a shard by reading it back (the fallback when the sink left no stats)."""
    size = FileSystems.get_filesystem(path).size(path)  # one lookup, no glob
    try:
        with FileSystems.open(path) as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq
                rows = pq.ParquetFile(f).metadata.num_rows
            else:
                rows = count_tfrecords(f)
    except ValueError as e:  # pyarrow's ArrowInvalid is a ValueError too
        raise DataError(f"{path}: unreadable {fmt} shard ({layout.first_line(e)}); nothing was "
                        "published, re-run the job") from None
    with FileSystems.open(path) as f:
        sums = stream_checksums(f, tuple(layout.SHARD_CHECKSUMS))
    return {"path": layout.relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size), **sums}


def _entry_from_stats(path: str, size: int, fmt: str, out: str, shards: int, stats: list[dict]):
    """The entry the sink recorded while writing this very file, or None when it cannot be trusted.

    A shard's bytes are a pure function of the job, so replayed bundles leave identical stats files; any
    disagreement, or a size that differs from the file's, means we read the file instead.
    """
    shard = layout.shard_number(path)
    found = {(s["rows"], s["bytes"], *((k, s.get(k)) for k in layout.SHARD_CHECKSUMS)) for s in stats
             if s.get("format") == fmt and s.get("shard") == shard and s.get("num_shards") == shards}
    if len(found) != 1:
        return None
    rows, nbytes, *sums = found.pop()
    sums = {k: v for k, v in sums if v is not None}
    if nbytes != size or not sums:
        return None
    return {"path": layout.relative(path, out), "format": fmt, "rows": int(rows), "bytes": int(size), **sums}


def _shard_entries(out: str, formats, shards: int) -> list[dict]:
    stats = layout.read_shard_stats(layout.shard_stats_dir(out))
    entries, unknown = [], []
    for fmt in formats:
        for path, size in _finished_shards(out, fmt, shards):  # existence + size: one listing per format
            entry = _entry_from_stats(path, size, fmt, out, shards, stats)
            entries.append(entry)
            if entry is None:
                unknown.append((len(entries) - 1, fmt, path))
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
    delete_tree(layout.summary_dir(out))
    card.write_downstream_files(out, manifest)  # README.md, TFDS metadata; before the manifest, which stays last
    layout.write_manifest(out, manifest)
    return manifest
