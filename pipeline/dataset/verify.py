"""`vae-augment verify`: check every shard against the manifest (size, crc32c, sha256 when recorded) and every
record against the schema, and recompute the dataset digest from what is actually on disk, per format.

On gs:// each shard's crc32c is first compared with the one GCS keeps in the object's metadata (no download);
`records=False` stops there (locally it streams each shard through crc32c instead of parsing it).
Light at import: pyarrow and TensorFlow are imported when a shard is read."""
from __future__ import annotations

import base64
import io

import numpy as np

from pipeline.dataset import layout
from pipeline.dataset.batch import RecordBatch
from pipeline.dataset.digest import batch_digest, bytes_checksums, combine_digests, digest_hex, stream_checksums
from pipeline.dataset.tfrecord import iter_tfrecord_file
from vae_model.artifacts import read_bytes

_PARSE_CHUNK = 8192  # TFRecord records per tf.io.parse_example call
_PARQUET_CHUNK = 65536


def read_shard(path: str, fmt: str, height: int, width: int, data: bytes | None = None, template=None):
    """Yield RecordBatches of one shard (one per run of sampler/model_id/seed in each chunk read); ValueError on
    corrupt files. `template` = (latent_dim, sampler, model_id, seed) of the job: TFRecord chunks in exactly the
    layout generate writes are then parsed with numpy (example.parse_templated), the rest with TensorFlow."""
    data = read_bytes(path) if data is None else data
    if fmt == "parquet":
        import pyarrow as pa

        from pipeline.dataset.arrow import arrow_batches, read_parquet_table

        try:
            table = read_parquet_table(data)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"not a readable Parquet file ({e})") from None
        for i in range(0, table.num_rows, _PARQUET_CHUNK):
            yield from arrow_batches(table.slice(i, _PARQUET_CHUNK), height, width)
        return
    from pipeline.dataset.example import parse_example_batches, parse_templated

    def parse(chunk):
        batch = None if template is None or not chunk else parse_templated(chunk, height, width, *template)
        return parse_example_batches(chunk, height, width) if batch is None else [batch]

    chunk = []
    for rec in iter_tfrecord_file(io.BytesIO(data)):
        chunk.append(rec)
        if len(chunk) == _PARSE_CHUNK:
            yield from parse(chunk)
            chunk = []
    yield from parse(chunk)


def _check_batch(b: RecordBatch, manifest: dict, where: str) -> list[str]:
    problems = []
    if (b.height, b.width) != (manifest["height"], manifest["width"]):
        problems.append(f"{where}: images are {b.height}x{b.width}, manifest says "
                        f"{manifest['height']}x{manifest['width']}")
    if b.latent_dim != manifest.get("latent_dim", b.latent_dim):
        problems.append(f"{where}: latent size {b.latent_dim}, manifest says {manifest['latent_dim']}")
    labels = set(np.unique(b.labels).tolist())
    allowed = {int(c) for c in manifest["per_class"]}
    if not labels <= allowed:
        problems.append(f"{where}: labels {sorted(labels - allowed)} are outside the job's classes {sorted(allowed)}")
    if not np.isfinite(b.latents).all():
        problems.append(f"{where}: latent vectors contain NaN/Inf")
    return problems


def stored_crc32c(path: str) -> str | None:
    """The crc32c GCS keeps for a gs:// object (8 hex digits), read from its metadata; None elsewhere."""
    if not path.startswith("gs://"):
        return None
    from apache_beam.io.filesystems import FileSystems

    value = FileSystems.get_filesystem(path).checksum(path)  # GCS: base64 of the big-endian crc32c
    try:
        return base64.b64decode(value).hex() if value else None
    except (ValueError, TypeError):
        return None


def _checksum_problems(s: dict, sums: dict) -> list[str]:
    return [f"{s['path']}: {k} differs from the manifest (the file was changed or damaged)"
            for k in layout.SHARD_CHECKSUMS if k in s and k in sums and sums[k] != s[k]]


def _metadata_problems(shard: layout.ShardFile) -> list[str]:
    """gs:// only: the object's stored crc32c against the manifest's, before any byte is downloaded."""
    s = shard.entry
    if "crc32c" not in s:
        return []
    stored = stored_crc32c(shard.path)
    if stored is None or stored == s["crc32c"]:
        return []
    return [f"{s['path']}: crc32c in the object's metadata ({stored}) differs from the manifest's ({s['crc32c']})"]


def _checksums_only(shard: layout.ShardFile) -> list[str]:
    """records=False: the metadata check on gs://, else one streamed crc32c (and sha256) pass."""
    s = shard.entry
    if shard.path.startswith("gs://") and "crc32c" in s:
        return _metadata_problems(shard)
    with layout.FileSystems.open(shard.path) as f:  # local: no Beam import
        return _checksum_problems(s, stream_checksums(f, tuple(k for k in layout.SHARD_CHECKSUMS if k in s)))


def _template(manifest: dict):
    """(latent_dim, sampler, model_id, seed) when the manifest has them with the right types, else None."""
    t = tuple(manifest.get(k) for k in ("latent_dim", "sampler", "model_id", "seed"))
    types = (int, str, str, int)
    return t if all(isinstance(v, ty) and not isinstance(v, bool) for v, ty in zip(t, types)) else None


def _read_back(shard: layout.ShardFile, manifest: dict, acc: dict) -> list[str]:
    """Problems of one checked shard, its checksums and every record; adds its records to its format's `acc`."""
    s = shard.entry
    problems = _metadata_problems(shard)
    data = read_bytes(shard.path)
    if len(data) != s["bytes"]:  # changed since check_shards looked
        problems.append(f"{s['path']}: {len(data)} bytes, manifest says {s['bytes']}")
    problems += _checksum_problems(s, bytes_checksums(data, tuple(k for k in layout.SHARD_CHECKSUMS if k in s)))
    rows = 0
    try:
        for b in read_shard(shard.path, s["format"], manifest["height"], manifest["width"], data,
                            _template(manifest)):
            rows += len(b)
            acc["digest"] = combine_digests(acc["digest"], batch_digest(b))
            acc["ids"].append(b.ids)
            for c, n in zip(*np.unique(b.labels, return_counts=True)):
                acc["per_class"][str(int(c))] = acc["per_class"].get(str(int(c)), 0) + int(n)
            problems += _check_batch(b, manifest, s["path"])
    except Exception as e:  # any parse failure is a finding, not a crash
        acc["complete"] = False
        return problems + [f"{s['path']}: unreadable {s['format']} "
                           f"({type(e).__name__}: {layout.first_line(e)})"]
    acc["rows"] += rows
    if rows != s["rows"]:
        problems.append(f"{s['path']}: {rows} records, manifest says {s['rows']}")
    return problems


def verify_output(out_dir: str, records: bool = True) -> list[str]:
    """Every problem found, one line each; empty when the output is intact. A damaged manifest is one problem;
    DataError only when there is nothing to verify (no manifest, or one of a newer format). `records=False` checks
    shard files (sizes, checksums; on gs:// from object metadata, without downloading) but not records."""
    try:
        manifest = layout.read_manifest(out_dir)
    except layout.InvalidManifest as e:
        return [str(e)]
    problems: list[str] = []
    listed = set()
    per_format: dict[str, dict] = {}
    for shard, problem in layout.check_shards(out_dir, manifest):
        s = shard.entry
        listed.add(shard.path)
        acc = per_format.setdefault(s["format"], {"digest": 0, "rows": 0, "ids": [], "per_class": {},
                                                  "complete": True})
        if problem:  # never read: outside the folder, not a file, or not the manifest's size
            problems.append(f"{s['path']}: {problem}")
            acc["complete"] = False
            continue
        problems += _read_back(shard, manifest, acc) if records else _checksums_only(shard)
    for fmt in manifest["formats"]:
        for path in layout.list_entries(layout.shard_dir(out_dir, fmt)):
            if path not in listed:
                problems.append(f"{layout.relative(path, out_dir)}: extra file not in the manifest")
    for fmt, acc in per_format.items() if records else ():
        ids = np.concatenate(acc["ids"]) if acc["ids"] else np.zeros(0, np.int64)
        dupes = len(ids) - len(np.unique(ids))
        if dupes:
            problems.append(f"{fmt}: {dupes} duplicate ids")
        if not acc["complete"]:
            continue  # totals of a format with a shard unread would only repeat that shard's problem
        if acc["rows"] != manifest["total"]:
            problems.append(f"{fmt}: {acc['rows']} records in total, manifest says {manifest['total']}")
        if acc["per_class"] != manifest["per_class"]:
            problems.append(f"{fmt}: per-class counts {acc['per_class']} differ from the manifest's "
                            f"{manifest['per_class']}")
        if digest_hex(acc["digest"]) != manifest["dataset_digest"]:
            problems.append(f"{fmt}: dataset digest recomputed from the records differs from the manifest")
    return problems


def format_digests(out_dir: str) -> dict[str, str]:
    """Digest of each format's records as read back (for tests and comparisons)."""
    manifest = layout.read_manifest(out_dir)
    out = {}
    for fmt in manifest["formats"]:
        d = 0
        for shard in layout.shard_files(out_dir, manifest, fmt):
            for b in read_shard(shard.path, fmt, manifest["height"], manifest["width"]):
                d = combine_digests(d, batch_digest(b))
        out[fmt] = digest_hex(d)
    return out
