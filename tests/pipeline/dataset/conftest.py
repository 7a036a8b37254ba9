"""Fixtures of the dataset tests: a finished generate output written without Beam, with the same codecs, names
and `publish.finalize` a real job uses (so verify, readers and the source plugin are tested in seconds)."""
import os
import shutil

import numpy as np
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

H, W, LATENT = 6, 5, 3
CLASSES, PER_CLASS, SHARDS = (0, 1, 2), 100, 2
FINGERPRINT = "fp-test"


def record_batches(shard: int):
    """The records of one shard: ids = shard (mod SHARDS), split into runs of different seeds."""
    from pipeline.dataset.batch import RecordBatch

    ids = np.arange(shard, len(CLASSES) * PER_CLASS, SHARDS)
    rng = np.random.default_rng(shard)
    labels = ids % len(CLASSES)
    images = rng.integers(0, 256, (len(ids), H, W), dtype=np.uint8)
    latents = rng.standard_normal((len(ids), LATENT)).astype(np.float32)
    cut = len(ids) // 3
    return [RecordBatch(ids[sl], labels[sl], images[sl], latents[sl], "classgauss", "vae-test", seed)
            for seed, sl in ((1, slice(0, cut)), (2, slice(cut, None)))]


def write_shard_file(path: str, fmt: str, batches) -> bytes:
    """One shard file as the sinks lay it out (a Parquet row group / a run of TFRecord frames per batch); its bytes."""
    import pyarrow.parquet as pq

    from pipeline.dataset.arrow import arrow_schema, to_arrow
    from pipeline.dataset.example import encode_tfrecords

    if fmt == "parquet":
        with pq.ParquetWriter(path, arrow_schema(batches[0].height, batches[0].width),
                              use_compliant_nested_type=True) as writer:
            for b in batches:
                writer.write_table(to_arrow(b), row_group_size=len(b))
    else:
        with open(path, "wb") as f:
            f.write(b"".join(encode_tfrecords(b) for b in batches))
    with open(path, "rb") as f:
        return f.read()


def write_generate_output(out: str, stats_for=("parquet",), finalize=True) -> dict | None:
    """What a job leaves: shards of both formats, its summary and (for the formats in `stats_for`) the sinks'
    shard stats; then, unless not `finalize`, `publish.finalize`, which hashes the other formats' shards by
    reading them back. Returns the manifest."""
    import hashlib
    import json
    import os

    from apache_beam.io.filesystems import FileSystems

    from pipeline.dataset import layout, publish
    from pipeline.dataset.digest import batch_digest, combine_digests, digest_hex

    publish.prepare(out, FINGERPRINT, overwrite=False)
    digest = 0
    for fmt in layout.FORMATS:
        os.makedirs(layout.shard_dir(out, fmt), exist_ok=True)
    os.makedirs(layout.shard_stats_dir(out))
    for shard in range(SHARDS):
        batches = record_batches(shard)
        for b in batches:
            digest = combine_digests(digest, batch_digest(b))
        for fmt in layout.FORMATS:
            path = layout.join(layout.shard_dir(out, fmt), layout.shard_name(layout.FILE_PREFIX, shard, SHARDS,
                                                                              layout.SUFFIX[fmt]))
            data = write_shard_file(path, fmt, batches)
            if fmt in stats_for:
                layout.write_shard_stats(layout.shard_stats_dir(out), {
                    "format": fmt, "shard": shard, "num_shards": SHARDS, "rows": sum(map(len, batches)),
                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    summary = {"total": len(CLASSES) * PER_CLASS, "per_class": {str(c): PER_CLASS for c in CLASSES},
               "digest": digest_hex(digest)}
    with FileSystems.create(layout.summary_prefix(out)) as f:
        f.write(json.dumps(summary).encode() + b"\n")
    if not finalize:
        return None
    info = {"model_id": "vae-test", "seed": 1, "sampler": "classgauss", "fingerprint": FINGERPRINT,
            "height": H, "width": W, "latent_dim": LATENT, "elapsed_seconds": 1.0}
    return publish.finalize(out, list(layout.FORMATS), SHARDS, {c: PER_CLASS for c in CLASSES}, info)


@pytest.fixture(scope="session")
def shard_writer():
    return write_shard_file


@pytest.fixture(scope="session")
def write_job_output():
    """write_job_output(out, stats_for=("parquet",), finalize=True): see write_generate_output."""
    return write_generate_output


@pytest.fixture(scope="session")
def job_fingerprint():
    return FINGERPRINT


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """(out_dir, manifest) of a finished output: 300 records of classes 0..2, 2 shards per format, 6x5 images."""
    out = str(tmp_path_factory.mktemp("generated") / "o")
    return out, write_generate_output(out)


@pytest.fixture
def damaged(tmp_path, generated):
    """A copy of `generated` a test may damage."""
    out = tmp_path / "o"
    shutil.copytree(generated[0], out)
    return out


@pytest.fixture(scope="session")
def generated_records():
    """(ids, labels, images) of `generated`, in shard order."""
    batches = [b for shard in range(SHARDS) for b in record_batches(shard)]
    return tuple(np.concatenate([getattr(b, k) for b in batches]) for k in ("ids", "labels", "images"))


class _ObjectStore(LocalFileSystem):
    """`dsremote://PATH`: the local PATH served as gs:// serves a bucket (flat object names, prefix listings with
    sizes, no folders), so remote outputs are tested without a network; only Beam's FileSystems can open it."""

    PREFIX = "dsremote://"

    @classmethod
    def scheme(cls):
        return "dsremote"

    @classmethod
    def _local(cls, path):
        return "/" + path[len(cls.PREFIX):]

    def has_dirs(self):
        return False

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def _list(self, prefix):
        local = self._local(prefix)
        root = local if local.endswith("/") else os.path.dirname(local)
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                if path.startswith(local):
                    yield FileMetadata(self.PREFIX + path.lstrip("/"), os.path.getsize(path))


@pytest.fixture(scope="session")
def remote():
    """remote(local_path) -> the same folder as a `dsremote://` URL (see _ObjectStore)."""
    return lambda path: _ObjectStore.PREFIX + str(path).lstrip("/")
