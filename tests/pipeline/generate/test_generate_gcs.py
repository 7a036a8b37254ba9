"""The Guarantees on gs://, through Beam's own gs:// filesystem and a real GCS API (the emulator, see
tests/pipeline/conftest.py): overwrite and re-runs with other --shards keep no old object, a permanent failure
publishes nothing and leaves no temp object, a retried write leaves the same records and no temp object; data
sources on gs:// read as their local copies."""
import gc
import logging

import pytest

from pipeline.dataset import card, layout
from pipeline.dataset.readers import load_parquet
from pipeline.dataset.verify import verify_output
from pipeline.generate.graph import run_job
from pipeline.generate.job import GenerateJob
from vae_model.errors import UserError

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--no_auth"]
JOB = dict(per_class=100, classes=[0, 1, 2], batch_size=64, seed=3)  # 5 work units for 1 shard

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faults_log")]


@pytest.fixture(autouse=True)
def no_beam_log_records():
    """As the CLI does: Beam logs a failed bundle with its traceback, and the record pytest keeps of it would keep
    that bundle's open GCS writers alive until teardown, when they upload (to the emulator already gone)."""
    logger = logging.getLogger("apache_beam")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    yield
    logger.setLevel(level)


def objects(out: str) -> set[str]:
    """Every object under `out`/, relative to it."""
    from google.cloud import storage
    bucket, _, prefix = out[len("gs://"):].partition("/")
    return {b.name[len(prefix) + 1:] for b in
            storage.Client.create_anonymous_client().list_blobs(bucket, prefix=prefix + "/")}


def published(out: str, shards: int) -> set[str]:
    # the dataset card and TFDS metadata are published beside the manifest
    return {layout.MANIFEST, layout.JOB_MARKER, *card.FILES} | {
        f"{fmt}/part-{i:05d}-of-{shards:05d}.{fmt}" for fmt in layout.FORMATS for i in range(shards)}


def test_overwrite_and_reruns_with_other_shards_keep_no_old_object(gcs_bucket):
    out = gcs_bucket + "/o"
    first = run_job(GenerateJob(out=out, shards=1, **JOB), LOCAL)
    assert objects(out) == published(out, 1)  # no summary, no temp, no lock left
    # 300 records in units of <= 64: 5 units for 1 shard and for 5, so the same records, laid out otherwise
    rerun = run_job(GenerateJob(out=out, shards=5, **JOB), LOCAL)  # no --overwrite needed
    assert objects(out) == published(out, 5) and rerun["dataset_digest"] == first["dataset_digest"]
    assert verify_output(out) == []
    with pytest.raises(UserError, match="already holds another job's manifest or shards; pass --overwrite"):
        run_job(GenerateJob(out=out, shards=2, **JOB), LOCAL)  # 6 units: other records
    with pytest.raises(UserError, match="already holds another job's manifest or shards; pass --overwrite"):
        run_job(GenerateJob(out=out, shards=1, **{**JOB, "seed": 4}), LOCAL)
    assert objects(out) == published(out, 5)  # refused: untouched
    other = run_job(GenerateJob(out=out, shards=3, overwrite=True, **{**JOB, "seed": 4}), LOCAL)
    assert objects(out) == published(out, 3)
    assert verify_output(out) == [] and layout.read_manifest(out)["dataset_digest"] == other["dataset_digest"]
    images, labels = load_parquet(out)
    assert len(labels) == 300
    # tf.data on gs:// reads through Beam's FileSystems too: the Parquet shards' records
    from pipeline.readers import load_table, tfrecord_dataset

    got = sorted((int(i), int(lab), img.tobytes())
                 for img, lab, i in tfrecord_dataset(out, with_ids=True).as_numpy_iterator())
    table = load_table(out).to_pydict()
    assert got == sorted(zip(table["id"], table["label"], table["image"]))


def test_permanent_failure_publishes_nothing_and_leaves_no_temp_object(gcs_bucket, monkeypatch):
    out = gcs_bucket + "/o"
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "write:1:always")  # after shard 1's first batch: a partial temp file
    with pytest.raises(UserError, match="InjectedFault: injected always fault in write of shard 1") as e:
        run_job(GenerateJob(out=out, shards=2, **JOB), LOCAL)
    assert "\n" not in str(e.value)
    del e
    gc.collect()  # a failed bundle's GCS writer uploads its partial temp object when freed: none may be left
    assert objects(out) == {layout.JOB_MARKER}
    monkeypatch.delenv("VAE_AUGMENT_FAULTS")
    run_job(GenerateJob(out=out, shards=2, **JOB), LOCAL)
    assert objects(out) == published(out, 2) and verify_output(out) == []


def test_a_retried_write_leaves_the_same_records_and_no_temp_object(gcs_bucket, monkeypatch, faults_log):
    """BundleBasedDirectRunner retries a failed bundle as Dataflow does; the fault log proves the write failed."""
    out = gcs_bucket + "/o"
    monkeypatch.setenv("VAE_AUGMENT_FAULTS", "write:0")
    m = run_job(GenerateJob(out=out, shards=2, runner="BundleBasedDirectRunner", **JOB), ["--no_auth"])
    assert faults_log.read_text().split() == ["write:0:once"]
    assert objects(out) == published(out, 2)
    assert verify_output(out) == [] and m["per_class"] == {"0": 100, "1": 100, "2": 100}


def test_data_sources_on_gcs_read_as_their_local_copies(gcs_bucket, tmp_path):
    """npz, gzipped csv and an IDX folder, uploaded to gs://, read through Beam's FileSystems (as a worker reads
    --labeled-data) give the arrays of the local files; a missing object is one line naming it."""
    import gzip

    import numpy as np
    from apache_beam.io.filesystems import FileSystems

    from vae_model.data import load_source
    from vae_model.errors import DataError

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 4, 4), dtype=np.uint8), rng.integers(0, 3, 12)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:3], y_test=y[:3])
    rows = ["label," + ",".join(f"p{i}" for i in range(16))] + [
        ",".join(map(str, [label, *img.ravel()])) for img, label in zip(x, y)]
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress("\n".join(rows).encode()))
    (tmp_path / "idx").mkdir()
    for name, arr, magic in (("train-images-idx3-ubyte.gz", x, 0x803), ("train-labels-idx1-ubyte", y, 0x801)):
        raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape) + arr.astype(
            np.uint8).tobytes()
        (tmp_path / "idx" / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    for p in [tmp_path / "d.npz", tmp_path / "d.csv.gz", *(tmp_path / "idx").iterdir()]:
        dest = f"{gcs_bucket}/{p.relative_to(tmp_path).as_posix()}"
        with FileSystems.create(dest, compression_type="uncompressed") as f:  # the bytes as they are, even *.gz
            f.write(p.read_bytes())
    pairs = ((tmp_path / "d.npz", f"{gcs_bucket}/d.npz"), (tmp_path / "d.csv.gz", f"{gcs_bucket}/d.csv.gz"),
             (f"idx:{tmp_path / 'idx'}", f"idx:{gcs_bucket}/idx"))
    for local, remote in pairs:
        a, b = load_source(str(local)), load_source(remote)
        assert np.array_equal(a.train.images, b.train.images) and np.array_equal(a.train.labels, b.train.labels)
        assert np.array_equal(b.train.images, x) and np.array_equal(b.train.labels, y)
    assert load_source(f"{gcs_bucket}/d.npz").test.images.shape == (3, 4, 4)
    with pytest.raises(DataError, match=r"gs://.*/nope\.npz: does not exist") as e:
        load_source(f"{gcs_bucket}/nope.npz")
    assert "\n" not in str(e.value)
