import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam import Create, FlatMap
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dataset.records import (
    _empty_batch,
    arrow_batches,
    arrow_schema,
    batch_digest,
    combine_digests,
    encode_examples,
    iter_tfrecord_file,
    parse_example_batches,
    to_arrow,
)
from pipeline.generate.sinks import (
    ShardSplitAcrossBundles,
    WriteParquetShards,
    WriteTFRecordShards,
    _ShardNaming,
    read_shard_stats,
    shard_name,
)
from pipeline.generate.runners import make_runner
from tests.test_records import make_batch

H, W, D = 8, 6, 3


def pipeline():
    # An explicit runner: the default DirectRunner would first try (and, offline, fail to fetch) Prism.
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    return test_pipeline.TestPipeline(runner=make_runner(options), options=options)


def make_batches(sizes, h=H, w=W, d=D):
    rng = np.random.default_rng(sum(sizes))
    batches, start = [], 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n) * 7 + 100  # ids cross the 1/2-byte varint boundary
        batches.append(make_batch(rng, n, h, w, d, ids=ids, sampler=f"s{i % 2}", model_id="vae-x", seed=1000 + i))
        start += n
    return batches


def deal(batches, num_shards):
    """Batch i goes to shard i % K, as generate deals work units; every shard is one element (one bundle)."""
    return {s: batches[s::num_shards] for s in range(num_shards)}


def _expand(task, h, w, d):
    shard, batches = task
    # An empty shard still sends one (empty) batch, as GenerateShards does, so it gets its file.
    return [(shard, b) for b in batches] or [(shard, _empty_batch(h, w, d))]


def expected_table(batches):
    return pa.concat_tables([to_arrow(b) for b in batches]).sort_by("id").combine_chunks()


def write_both(tmp_path, dealt, h=H, w=W, d=D, stats_dir=None):
    num_shards = len(dealt)
    out = str(tmp_path / "out")
    names = [shard_name("part", i, num_shards, "") for i in range(num_shards)]
    with pipeline() as p:
        keyed = p | Create(sorted(dealt.items(), key=lambda kv: kv[0])) | FlatMap(_expand, h, w, d)
        parquet = keyed | WriteParquetShards(out, num_shards, height=h, width=w, stats_dir=stats_dir)
        tfrecord = keyed | WriteTFRecordShards(out, num_shards, stats_dir=stats_dir)
        assert_that(parquet, equal_to([os.path.join(out, n + ".parquet") for n in names]), label="ParquetPaths")
        assert_that(tfrecord, equal_to([os.path.join(out, n + ".tfrecord") for n in names]), label="TFRecordPaths")
    return out, names


def assert_only_shards(out, names):
    expected = sorted([n + ".parquet" for n in names] + [n + ".tfrecord" for n in names])
    assert sorted(os.listdir(out)) == expected  # no beam-temp-*/.temp* leftovers


def read_parquet(out, names, h=H, w=W):
    tables = [pq.read_table(os.path.join(out, n + ".parquet")) for n in names]
    for t in tables:
        assert t.schema.equals(arrow_schema(h, w), check_metadata=True)
    return pa.concat_tables(tables).sort_by("id").combine_chunks()


def read_tfrecords(out, names):
    paths = [os.path.join(out, n + ".tfrecord") for n in names]
    return [r.numpy() for r in tf.data.TFRecordDataset(paths)]


def test_sinks_write_exact_records(tmp_path):
    batches = make_batches([40, 1, 25, 17, 30])
    out, names = write_both(tmp_path, deal(batches, 3))
    assert_only_shards(out, names)
    expected = expected_table(batches)

    assert read_parquet(out, names).equals(expected)

    records = read_tfrecords(out, names)
    assert sorted(records) == sorted(r for b in batches for r in encode_examples(b))
    parsed = parse_example_batches(records, H, W)
    got = pa.concat_tables([to_arrow(b) for b in parsed])
    assert got.sort_by("id").combine_chunks().equals(expected)


def test_each_shard_holds_exactly_its_batches_in_order(tmp_path):
    batches = make_batches([40, 1, 25, 17, 30, 9, 12])
    dealt = deal(batches, 3)
    out, names = write_both(tmp_path, dealt)
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


def test_sinks_digest_matches_input(tmp_path):
    batches = make_batches([50, 60])
    out, names = write_both(tmp_path, deal(batches, 2))
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


def test_sinks_fewer_batches_than_shards(tmp_path):
    batches = make_batches([10])
    out, names = write_both(tmp_path, deal(batches, 4))
    assert_only_shards(out, names)
    assert read_parquet(out, names).equals(expected_table(batches))
    assert sorted(read_tfrecords(out, names)) == sorted(encode_examples(batches[0]))
    sizes = sorted(os.path.getsize(os.path.join(out, n + ".tfrecord")) for n in names)
    assert sizes[:3] == [0, 0, 0]
    for n in names[1:]:  # the empty shards are valid, empty Parquet files with the full schema
        assert pq.ParquetFile(os.path.join(out, n + ".parquet")).metadata.num_rows == 0


def test_sinks_mnist_sized_with_pandas(tmp_path):
    batches = make_batches([64, 64, 64], 28, 28, 20)
    out, names = write_both(tmp_path, deal(batches, 2), 28, 28, 20)
    frame = read_parquet(out, names, 28, 28).to_pandas()
    assert len(frame) == 192
    assert frame["image"].map(len).eq(784).all()
    assert len(read_tfrecords(out, names)) == 192


def test_sinks_empty_input_still_writes_all_shards(tmp_path):
    out, names = write_both(tmp_path, deal([], 2))
    assert_only_shards(out, names)
    assert read_parquet(out, names).num_rows == 0
    assert read_tfrecords(out, names) == []


def test_stats_files_describe_the_final_files(tmp_path):
    batches = make_batches([40, 1, 25, 17, 30])
    stats_dir = str(tmp_path / "stats")
    out, names = write_both(tmp_path, deal(batches, 3), stats_dir=stats_dir)
    assert_only_shards(out, names)
    stats = read_shard_stats(stats_dir)
    assert len(stats) == 6
    for s in stats:
        path = os.path.join(out, shard_name("part", s["shard"], 3, "." + s["format"]))
        data = open(path, "rb").read()
        assert s["num_shards"] == 3
        assert (s["bytes"], s["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
        assert s["rows"] == sum(len(b) for b in batches[s["shard"]::3])
    json.dumps(stats)  # plain JSON values only


def test_read_shard_stats_skips_missing_dir_and_cut_files(tmp_path):
    assert read_shard_stats(str(tmp_path / "none")) == []
    (tmp_path / "a.json").write_text('{"format": "parquet"')  # cut short
    (tmp_path / "b.json").write_text('{"format": "parquet", "shard": 0}')
    assert read_shard_stats(str(tmp_path)) == [{"format": "parquet", "shard": 0}]


def test_a_shard_written_by_two_bundles_is_refused():
    naming = _ShardNaming("part", 4, ".parquet")
    assert naming(None, None, 0, 1, "", 2) == "part-00002-of-00004.parquet"
    with pytest.raises(ShardSplitAcrossBundles, match="shard 2 of 4"):
        naming(None, None, 0, 2, "", 2)


def test_num_shards_validated():
    for bad in (0, -1):
        with pytest.raises(ValueError):
            WriteTFRecordShards("/tmp/x", bad)
        with pytest.raises(ValueError):
            WriteParquetShards("/tmp/x", bad, height=2, width=2)
