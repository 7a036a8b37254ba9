import functools
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam import Create
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.records import (
    arrow_batches,
    arrow_schema,
    batch_digest,
    combine_digests,
    encode_examples,
    iter_tfrecord_file,
    parse_example_batches,
    to_arrow,
)
from pipeline.sinks import WriteParquetShards, WriteTFRecordShards, shard_name
from tests.test_records import make_batch

H, W, D = 8, 6, 3


def pipeline():
    options = PipelineOptions(["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    return test_pipeline.TestPipeline(options=options)


def make_batches(sizes, h=H, w=W, d=D):
    rng = np.random.default_rng(sum(sizes))
    batches, start = [], 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n) * 7 + 100  # ids cross the 1/2-byte varint boundary
        batches.append(make_batch(rng, n, h, w, d, ids=ids, sampler=f"s{i % 2}", model_id="vae-x", seed=1000 + i))
        start += n
    return batches


def expected_table(batches):
    return pa.concat_tables([to_arrow(b) for b in batches]).sort_by("id").combine_chunks()


def write_both(tmp_path, batches, num_shards, h=H, w=W):
    out = str(tmp_path / "out")
    names = [shard_name("part", i, num_shards, "") for i in range(num_shards)]
    with pipeline() as p:
        pcoll = p | Create(batches)
        parquet = pcoll | WriteParquetShards(out, num_shards, height=h, width=w)
        tfrecord = pcoll | WriteTFRecordShards(out, num_shards)
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
    out, names = write_both(tmp_path, batches, 3)
    assert_only_shards(out, names)
    expected = expected_table(batches)

    assert read_parquet(out, names).equals(expected)

    records = read_tfrecords(out, names)
    assert sorted(records) == sorted(r for b in batches for r in encode_examples(b))
    parsed = parse_example_batches(records, H, W)
    got = pa.concat_tables([to_arrow(b) for b in parsed])
    assert got.sort_by("id").combine_chunks().equals(expected)


def test_sinks_digest_matches_input(tmp_path):
    batches = make_batches([50, 60])
    out, names = write_both(tmp_path, batches, 2)
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
    out, names = write_both(tmp_path, batches, 4)
    assert_only_shards(out, names)
    assert read_parquet(out, names).equals(expected_table(batches))
    assert sorted(read_tfrecords(out, names)) == sorted(encode_examples(batches[0]))
    sizes = sorted(os.path.getsize(os.path.join(out, n + ".tfrecord")) for n in names)
    assert sizes[:3] == [0, 0, 0]


def test_sinks_mnist_sized_with_pandas(tmp_path):
    batches = make_batches([64, 64, 64], 28, 28, 20)
    out, names = write_both(tmp_path, batches, 2, 28, 28)
    frame = read_parquet(out, names, 28, 28).to_pandas()
    assert len(frame) == 192
    assert frame["image"].map(len).eq(784).all()
    assert len(read_tfrecords(out, names)) == 192


def test_sinks_empty_input_still_writes_all_shards(tmp_path):
    out, names = write_both(tmp_path, [], 2)
    assert_only_shards(out, names)
    assert read_parquet(out, names).num_rows == 0
    assert read_tfrecords(out, names) == []


def paths_exist(suffix, paths):
    assert paths and all(p.endswith(suffix) and os.path.isfile(p) for p in paths), paths


def test_sinks_unsharded_mode(tmp_path):
    batches = make_batches([20, 30, 10])
    out = str(tmp_path / "out")
    with pipeline() as p:
        pcoll = p | Create(batches)
        parquet = pcoll | WriteParquetShards(out, 0, height=H, width=W)
        tfrecord = pcoll | WriteTFRecordShards(out, 0)
        assert_that(parquet, functools.partial(paths_exist, ".parquet"), label="ParquetPaths")
        assert_that(tfrecord, functools.partial(paths_exist, ".tfrecord"), label="TFRecordPaths")
    files = sorted(os.listdir(out))
    pattern = re.compile(r"part-(\d{5})-of-(\d{5})\.(parquet|tfrecord)")
    assert files and all(pattern.fullmatch(f) for f in files), files
    for suffix in ("parquet", "tfrecord"):
        shards = [pattern.fullmatch(f).groups()[:2] for f in files if f.endswith(suffix)]
        total = len(shards)
        assert sorted(shards) == [(f"{i:05d}", f"{total:05d}") for i in range(total)]
    names = sorted({f.rsplit(".", 1)[0] for f in files if f.endswith(".parquet")})
    assert read_parquet(out, names).equals(expected_table(batches))
    tf_paths = [os.path.join(out, f) for f in files if f.endswith(".tfrecord")]
    got = [r.numpy() for r in tf.data.TFRecordDataset(tf_paths)]
    assert sorted(got) == sorted(r for b in batches for r in encode_examples(b))


def test_num_shards_validated():
    with pytest.raises(ValueError):
        WriteTFRecordShards("/tmp/x", -1)
    with pytest.raises(ValueError):
        WriteParquetShards("/tmp/x", -1, height=2, width=2)
