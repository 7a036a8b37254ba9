"""The shard sinks (pipeline/generate/sinks.py) on small in-memory batches: exact records, one file per shard,
hashes taken while writing."""
import hashlib
import json
import os

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam import Create, FlatMap
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dataset.arrow import arrow_batches, arrow_schema, to_arrow
from pipeline.dataset.batch import empty_batch
from pipeline.dataset.digest import batch_digest, combine_digests
from pipeline.dataset.example import encode_examples, parse_example_batches
from pipeline.dataset.tfrecord import iter_tfrecord_file
from pipeline.dataset.layout import read_shard_stats, shard_name
from pipeline.generate.sinks import ShardSplitAcrossBundles, WriteParquetShards, WriteTFRecordShards, _ShardNaming
from tests.pipeline.dataset.test_dataset_codecs import make_batch

H, W, D = 8, 6, 3


def make_batches(sizes):
    rng = np.random.default_rng(sum(sizes))
    batches, start = [], 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n) * 7 + 100  # ids cross the 1/2-byte varint boundary
        batches.append(make_batch(rng, n, H, W, D, ids=ids, sampler=f"s{i % 2}", model_id="vae-x", seed=1000 + i))
        start += n
    return batches


def deal(batches, num_shards):
    """Batch i goes to shard i % K, as generate deals work units; every shard is one element (one bundle)."""
    return {s: batches[s::num_shards] for s in range(num_shards)}


def _expand(task):
    shard, batches = task
    # An empty shard still sends one (empty) batch, as GenerateShards does, so it gets its file.
    return [(shard, b) for b in batches] or [(shard, empty_batch(H, W, D))]


def expected_table(batches):
    return pa.concat_tables([to_arrow(b) for b in batches]).sort_by("id").combine_chunks()


# Every case is written by both sinks in ONE pipeline (a pipeline costs seconds): name -> (batch sizes, shards)
CASES = {
    "main": ([40, 1, 25, 17, 30, 9, 12], 3),
    "fewer": ([10], 4),  # fewer batches than shards
    "empty": ([], 2),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory, local_pipeline):
    """name -> (out, shard names, batches, dealt, stats_dir) of each case in CASES."""
    root = tmp_path_factory.mktemp("sinks")
    cases = {}
    with local_pipeline() as p:
        for name, (sizes, num_shards) in CASES.items():
            batches = make_batches(sizes)
            dealt = deal(batches, num_shards)
            out, stats_dir = str(root / name), str(root / f"{name}-stats")
            names = [shard_name("part", i, num_shards, "") for i in range(num_shards)]
            keyed = (p | f"Create{name}" >> Create(sorted(dealt.items(), key=lambda kv: kv[0]))
                     | f"Expand{name}" >> FlatMap(_expand))
            parquet = keyed | f"Parquet{name}" >> WriteParquetShards(out, num_shards, height=H, width=W,
                                                                    stats_dir=stats_dir)
            # sha256 is opt-in: asked for on the TFRecord shards only, so both variants are checked.
            tfrecord = keyed | f"TFRecord{name}" >> WriteTFRecordShards(out, num_shards, stats_dir=stats_dir,
                                                                        checksums=("sha256",))
            assert_that(parquet, equal_to([os.path.join(out, n + ".parquet") for n in names]),
                        label=f"ParquetPaths{name}")
            assert_that(tfrecord, equal_to([os.path.join(out, n + ".tfrecord") for n in names]),
                        label=f"TFRecordPaths{name}")
            cases[name] = out, names, batches, dealt, stats_dir
    return cases


def assert_only_shards(out, names):
    expected = sorted([n + ".parquet" for n in names] + [n + ".tfrecord" for n in names])
    assert sorted(os.listdir(out)) == expected  # no beam-temp-*/.temp* leftovers


def read_parquet(out, names):
    tables = [pq.read_table(os.path.join(out, n + ".parquet")) for n in names]
    for t in tables:
        assert t.schema.equals(arrow_schema(H, W), check_metadata=True)
    return pa.concat_tables(tables).sort_by("id").combine_chunks()


def read_tfrecords(out, names):
    paths = [os.path.join(out, n + ".tfrecord") for n in names]
    return [r.numpy() for r in tf.data.TFRecordDataset(paths)]


def test_sinks_write_exact_records(written):
    out, names, batches, _, _ = written["main"]
    assert_only_shards(out, names)
    expected = expected_table(batches)

    assert read_parquet(out, names).equals(expected)

    records = read_tfrecords(out, names)
    assert sorted(records) == sorted(r for b in batches for r in encode_examples(b))
    parsed = parse_example_batches(records, H, W)
    got = pa.concat_tables([to_arrow(b) for b in parsed])
    assert got.sort_by("id").combine_chunks().equals(expected)


def test_each_shard_holds_exactly_its_batches_in_order(written):
    out, names, _, dealt, _ = written["main"]
    for shard, name in enumerate(names):
        mine = dealt[shard]
        meta = pq.ParquetFile(os.path.join(out, name + ".parquet")).metadata
        assert meta.num_row_groups == len(mine)  # one row group per batch
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [len(b) for b in mine]
        encodings = {e for i in range(meta.num_row_groups) for e in meta.row_group(i).column(2).encodings}
        assert not {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & encodings  # images are never dictionary-encoded
        table = pq.read_table(os.path.join(out, name + ".parquet"))
        assert table.column("id").to_pylist() == [int(i) for b in mine for i in b.ids]
        with open(os.path.join(out, name + ".tfrecord"), "rb") as f:
            assert list(iter_tfrecord_file(f)) == [r for b in mine for r in encode_examples(b)]


def test_sinks_digest_matches_input(written):
    out, names, batches, _, _ = written["main"]
    want = 0
    for b in batches:
        want = combine_digests(want, batch_digest(b))

    parquet_digest = 0
    for n in names:
        for b in arrow_batches(pq.read_table(os.path.join(out, n + ".parquet")), H, W):
            parquet_digest = combine_digests(parquet_digest, batch_digest(b))
    assert parquet_digest == want

    tfrecord_digest = 0
    for n in names:
        with FileSystems.open(os.path.join(out, n + ".tfrecord")) as f:
            for b in parse_example_batches(list(iter_tfrecord_file(f)), H, W):
                tfrecord_digest = combine_digests(tfrecord_digest, batch_digest(b))
    assert tfrecord_digest == want


def test_sinks_fewer_batches_than_shards(written):
    out, names, batches, _, _ = written["fewer"]
    assert_only_shards(out, names)
    assert read_parquet(out, names).equals(expected_table(batches))
    assert sorted(read_tfrecords(out, names)) == sorted(encode_examples(batches[0]))
    sizes = sorted(os.path.getsize(os.path.join(out, n + ".tfrecord")) for n in names)
    assert sizes[:3] == [0, 0, 0]
    for n in names[1:]:  # the empty shards are valid, empty Parquet files with the full schema
        assert pq.ParquetFile(os.path.join(out, n + ".parquet")).metadata.num_rows == 0


def test_sinks_output_reads_with_pandas(written):
    out, names, batches, _, _ = written["main"]
    frame = read_parquet(out, names).to_pandas()
    assert len(frame) == sum(len(b) for b in batches)
    assert frame["image"].map(len).eq(H * W).all()


def test_sinks_empty_input_still_writes_all_shards(written):
    out, names, _, _, _ = written["empty"]
    assert_only_shards(out, names)
    assert read_parquet(out, names).num_rows == 0
    assert read_tfrecords(out, names) == []


def test_stats_files_describe_the_final_files(written):
    out, names, batches, _, stats_dir = written["main"]
    assert_only_shards(out, names)
    stats = read_shard_stats(stats_dir)
    assert len(stats) == 6
    for s in stats:
        path = os.path.join(out, shard_name("part", s["shard"], 3, "." + s["format"]))
        data = open(path, "rb").read()
        assert s["num_shards"] == 3
        assert (s["bytes"], s["crc32c"]) == (len(data), f"{google_crc32c.value(data):08x}")
        assert s.get("sha256") == (hashlib.sha256(data).hexdigest() if s["format"] == "tfrecord" else None)
        assert s["rows"] == sum(len(b) for b in batches[s["shard"]::3])
    json.dumps(stats)  # plain JSON values only


def test_a_shard_written_by_two_bundles_is_refused():
    naming = _ShardNaming("part", 4, ".parquet")
    assert naming(None, None, 0, 1, "", 2) == "part-00002-of-00004.parquet"
    with pytest.raises(ShardSplitAcrossBundles, match="shard 2 of 4"):
        naming(None, None, 0, 2, "", 2)


def test_unknown_checksums_are_refused():
    with pytest.raises(ValueError, match="Expected checksums among"):
        WriteParquetShards("/tmp/x", 1, height=2, width=2, checksums=("md5",))


def test_a_writer_thread_failure_fails_the_write_and_flush():
    from pipeline.generate.sinks import TFRecordBatchSink

    class Broken:
        def write(self, data):
            raise OSError("disk full")

        def flush(self):
            pass

    sink = TFRecordBatchSink(0, 1, None)
    sink.open(Broken())
    batch = make_batches([5])[0]
    with pytest.raises(OSError, match="disk full"):
        sink.write((0, batch))
        sink.write((0, batch))
        sink.flush()


def test_num_shards_validated():
    for bad in (0, -1):
        with pytest.raises(ValueError):
            WriteTFRecordShards("/tmp/x", bad)
        with pytest.raises(ValueError):
            WriteParquetShards("/tmp/x", bad, height=2, width=2)


@pytest.mark.e2e
def test_manifest_hashes_come_from_the_sinks_not_from_reading_shards(tmp_path, monkeypatch, generate):
    from pipeline.dataset import layout, publish

    def no_reading(*a, **k):
        raise AssertionError("finalize read a shard back although the sink recorded its stats")

    monkeypatch.setattr(publish, "shard_info", no_reading)
    out = tmp_path / "o"
    m = generate(out, per_class=20, classes=[1, 2], batch_size=16, shards=3)
    assert len(m["shards"]) == 6
    for s in m["shards"]:
        data = (out / s["path"]).read_bytes()
        assert (s["bytes"], s["crc32c"]) == (len(data), f"{google_crc32c.value(data):08x}")
        assert "sha256" not in s  # opt-in
    assert sum(s["rows"] for s in m["shards"] if s["format"] == "tfrecord") == 40
    assert not (out / layout.SUMMARY_DIR).exists()


@pytest.mark.parametrize("threaded", [False, True])
def test_a_shard_is_finished_at_its_planned_rows_not_at_bundle_end(threaded):
    """With the planned row count the Parquet file is complete (footer written, writer thread ended) after its
    last batch, before fileio's flush at the end of the bundle; more rows than planned are refused."""
    import io

    from pipeline.generate.sinks import ParquetBatchSink

    batches = make_batches([5, 7])
    sink = ParquetBatchSink(0, 1, None, arrow_schema(H, W), "none", threaded=threaded, expected_rows=12)
    fh = io.BytesIO()
    sink.open(fh)
    sink.write((0, batches[0]))
    assert sink._thread is not None or not threaded  # noqa: SLF001 - still open mid-shard
    sink.write((0, batches[1]))
    if threaded:  # the writer thread finishes the file (footer, sync) and ends without waiting for flush()
        sink._thread.join(timeout=30)  # noqa: SLF001
        assert not sink._thread.is_alive()  # noqa: SLF001
    done = fh.getvalue()
    table = pq.read_table(io.BytesIO(done))  # readable before flush: the footer is there
    assert table.column("id").to_pylist() == [*batches[0].ids.tolist(), *batches[1].ids.tolist()]
    with pytest.raises(ValueError, match="more than its planned 12"):
        sink.write((0, batches[0]))
    sink.flush()
    assert fh.getvalue() == done  # flush at bundle end adds nothing


def test_a_shard_short_of_its_planned_rows_fails_at_flush():
    import io

    from pipeline.generate.sinks import TFRecordBatchSink

    sink = TFRecordBatchSink(0, 1, None, expected_rows=9)
    sink.open(io.BytesIO())
    sink.write((0, make_batches([5])[0]))
    with pytest.raises(ValueError, match="got 5 records, 9 were planned"):
        sink.flush()


def test_a_local_shard_is_synced_and_intact_after_its_page_cache_is_released(tmp_path):
    """release_page_cache (fdatasync + POSIX_FADV_DONTNEED on a local file) leaves the bytes readable as written."""
    from pipeline.generate.sinks import ParquetBatchSink

    batches = make_batches([5, 7])
    path = tmp_path / "shard.parquet"
    sink = ParquetBatchSink(0, 1, None, arrow_schema(H, W), "none", expected_rows=12)
    with open(path, "wb") as fh:
        sink.open(fh)
        for b in batches:
            sink.write((0, b))
        sink.flush()
        size = sink._file.size  # noqa: SLF001
    assert path.stat().st_size == size > 0
    table = pq.read_table(path)
    assert table.column("id").to_pylist() == [*batches[0].ids.tolist(), *batches[1].ids.tolist()]


def test_a_local_file_is_written_around_the_page_cache_with_the_exact_bytes(tmp_path):
    """_HashingFile on a local file stages bytes for O_DIRECT (whole aligned blocks, the tail in a plain write at
    release): whatever the sizes and types of the writes, the file holds exactly those bytes and their crc32c."""
    import fcntl

    import google_crc32c
    import numpy as np

    from pipeline.generate.sinks import _DIRECT_CHUNK, _HashingFile

    rng = np.random.default_rng(0)
    sizes = [0, 1, 4095, 4096, 4097, _DIRECT_CHUNK - 3, _DIRECT_CHUNK + 5, 2 * _DIRECT_CHUNK, 12345]
    pieces = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
    path = tmp_path / "shard.bin"
    with open(path, "wb") as fh:
        f = _HashingFile(fh)
        direct = f._direct is not None  # noqa: SLF001 - False only where the filesystem refuses O_DIRECT
        for i, p in enumerate(pieces):
            f.write(p.tobytes() if i % 2 else p)  # bytes and numpy views, as the two sinks write
        if direct:
            assert fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT
        f.release_page_cache()
        assert not fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT
        size = f.size
        sums = f.checksums()
    data = path.read_bytes()
    expected = b"".join(p.tobytes() for p in pieces)
    assert (len(data), size) == (len(expected), len(expected))
    assert data == expected
    assert sums["crc32c"] == f"{google_crc32c.value(expected):08x}"


def test_without_a_file_descriptor_the_bytes_go_through_the_handle():
    import io

    from pipeline.generate.sinks import _HashingFile

    fh = io.BytesIO()
    f = _HashingFile(fh)
    assert f._direct is None  # noqa: SLF001
    f.write(b"abc")
    f.release_page_cache()
    assert fh.getvalue() == b"abc"


def test_a_filesystem_that_refuses_direct_writes_gets_plain_ones(tmp_path, monkeypatch):
    """A mount that takes O_DIRECT but fails the writes with EINVAL (FUSE, some network filesystems): the writer
    turns the flag off and writes the same bytes plainly."""
    import errno
    import fcntl

    import numpy as np

    from pipeline.generate import sinks

    real_write = os.write
    refused = []

    def write(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(sinks.os, "write", write)
    data = np.random.default_rng(1).integers(0, 256, 3 * sinks._DIRECT_CHUNK + 77, dtype=np.uint8)
    path = tmp_path / "shard.bin"
    with open(path, "wb") as fh:
        f = sinks._HashingFile(fh)
        if f._direct is None:  # noqa: SLF001
            pytest.skip("this filesystem refuses O_DIRECT at open already")
        f.write(data)
        f.release_page_cache()
        assert not fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) & os.O_DIRECT
    assert refused == [sinks._DIRECT_CHUNK]  # the first block only; the rest went plain
    assert path.read_bytes() == data.tobytes()


def test_a_shard_that_fails_to_finish_on_its_writer_thread_fails_flush_instead_of_hanging():
    """Disk full at the last write (the footer, or the staged O_DIRECT tail): the writer thread ends with the error
    and the bundle's flush() raises it."""
    import io
    import threading

    from pipeline.generate.sinks import TFRecordBatchSink

    class Full(TFRecordBatchSink):
        def _finish(self):
            raise OSError(28, "No space left on device")

    sink = Full(0, 1, None, expected_rows=5)
    sink.open(io.BytesIO())
    sink.write((0, make_batches([5])[0]))  # the planned last batch: the writer thread finishes the file
    raised = []

    def flush():
        try:
            sink.flush()
        except OSError as e:
            raised.append(e.errno)

    t = threading.Thread(target=flush, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive() and raised == [28]
