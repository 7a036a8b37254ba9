"""The throughput design (issue 4): shard tasks instead of a shuffle of decoded data, and shard hashes taken while
writing instead of by reading every shard back. Small and untimed; the numbers live in benchmarks/."""
import hashlib
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dataset import publish as outdir
from pipeline.generate.graph import GenerateJob, run_job
from pipeline.generate.runners import make_runner
from pipeline.generate.samplers import build_sampler
from pipeline.generate.transforms import GenerateShards, ShardTask, WorkUnit, plan_shard_tasks, plan_units

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_shard_tasks_deal_every_unit_once_round_robin():
    units = plan_units({0: 130, 3: 64, 7: 1}, 16)
    tasks = plan_shard_tasks(units, 4)
    assert [t.shard for t in tasks] == [0, 1, 2, 3] and all(t.num_shards == 4 for t in tasks)
    dealt = [u for t in tasks for u in t.units]
    assert sorted(dealt, key=lambda u: u.unit_id) == units
    assert all(u.unit_id % 4 == t.shard for t in tasks for u in t.units)
    assert all(list(t.units) == sorted(t.units, key=lambda u: u.unit_id) for t in tasks)
    sizes = [len(t.units) for t in tasks]
    assert max(sizes) - min(sizes) <= 1


def test_more_shards_than_units_gives_empty_tasks():
    tasks = plan_shard_tasks(plan_units({1: 5}, 4), 5)
    assert [len(t.units) for t in tasks] == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError):
        plan_shard_tasks([], 0)


def _records(batches):
    return sorted((int(i), int(lab), img.tobytes(), z.tobytes()) for b in batches
                  for i, lab, img, z in zip(b.ids, b.labels, b.images, b.latents))


def _decoded_by_hand(bundled, sampler, units, seed, capacity):
    from pipeline.dataset.records import RecordBatch
    from vae_model.inference import BatchDecoder

    dec = BatchDecoder(bundled.decoder, capacity)
    for u in units:
        z = sampler.sample(np.random.default_rng([seed, u.unit_id]), u.label, u.count)
        images, _ = dec(z, np.full(u.count, u.label))
        yield RecordBatch(u.unit_id * capacity + np.arange(u.count), np.full(u.count, u.label), images, z,
                          "classgauss", bundled.model_id, seed)


@pytest.mark.parametrize("threads", [0, 2])
def test_generate_shards_yields_each_units_records_keyed_by_shard(bundled, threads):
    sampler = build_sampler("classgauss", bundled.latent_dim, False, bundled.stats(), spread=1.0)
    units = plan_units({2: 40, 5: 9}, 16)  # 16, 16, 8 | 9
    tasks = plan_shard_tasks(units, 3) + [ShardTask(3, 4, ())]  # plus an empty task
    want = _records(_decoded_by_hand(bundled, sampler, units, 4, 16))
    options = PipelineOptions(LOCAL)
    with TestPipeline(runner=make_runner(options), options=options) as p:
        keyed = p | beam.Create(tasks) | GenerateShards(sampler, 4, bundled.path, 16, bundled.model_id,
                                                        "classgauss", 16, 49, decode_threads=threads)
        # per task: its units' ids, in unit order; the empty task yields one empty batch
        ids = keyed | beam.Map(lambda kv: (kv[0], [int(i) for i in kv[1].ids]))
        assert_that(ids, equal_to([(u.unit_id % 3, [u.unit_id * 16 + i for i in range(u.count)]) for u in units]
                                  + [(3, [])]), label="ShardsAndIds")
        records = keyed | beam.Values() | beam.combiners.ToList() | beam.Map(_records)
        assert_that(records, equal_to([want]), label="Records")


def test_manifest_hashes_come_from_the_sinks_not_from_reading_shards(tmp_path, monkeypatch):
    def no_reading(*a, **k):
        raise AssertionError("finalize read a shard back although the sink recorded its stats")

    monkeypatch.setattr(outdir, "shard_info", no_reading)
    out = tmp_path / "o"
    m = run_job(GenerateJob(out=str(out), per_class=20, classes=[1, 2], batch_size=16, shards=3), LOCAL)
    assert len(m["shards"]) == 6
    for s in m["shards"]:
        data = (out / s["path"]).read_bytes()
        assert (s["bytes"], s["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert sum(s["rows"] for s in m["shards"] if s["format"] == "tfrecord") == 40
    assert not (out / outdir.SUMMARY_DIR).exists()


def _fake_out(tmp_path, stats):
    out = tmp_path / "o"
    (out / "parquet").mkdir(parents=True)
    paths = []
    for shard in range(2):
        p = out / "parquet" / f"part-{shard:05d}-of-00002.parquet"
        p.write_bytes(b"x" * (10 + shard))
        paths.append(p)
    stats_dir = out / outdir.SUMMARY_DIR / "shards"
    stats_dir.mkdir(parents=True)
    for i, s in enumerate(stats):
        (stats_dir / f"{i}.json").write_text(json.dumps(s))
    return str(out), paths


def _stat(shard, nbytes, sha, rows=3):
    return {"format": "parquet", "shard": shard, "num_shards": 2, "rows": rows, "bytes": nbytes, "sha256": sha}


def test_finalize_entries_trust_only_consistent_stats(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(outdir, "shard_info", lambda path, fmt, out: read.append(os.path.basename(path)) or
                        {"path": path, "format": fmt, "rows": -1, "bytes": -1, "sha256": "read"})
    out, paths = _fake_out(tmp_path, [_stat(0, 10, "a"), _stat(0, 10, "a"),  # identical replay: fine
                                      _stat(1, 11, "b"), _stat(1, 11, "c")])  # disagreeing: read the file
    entries = outdir._shard_entries(out, ["parquet"], 2)
    assert entries[0] == {"path": "parquet/part-00000-of-00002.parquet", "format": "parquet", "rows": 3,
                          "bytes": 10, "sha256": "a"}
    assert entries[1]["sha256"] == "read" and read == ["part-00001-of-00002.parquet"]


def test_finalize_entries_read_the_file_when_sizes_differ_or_stats_are_missing(tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(outdir, "shard_info", lambda path, fmt, out: read.append(os.path.basename(path)) or
                        {"path": path, "format": fmt, "rows": 0, "bytes": 0, "sha256": "read"})
    out, _ = _fake_out(tmp_path, [_stat(0, 99, "a")])  # size differs from the file's 10 bytes; shard 1 has none
    entries = outdir._shard_entries(out, ["parquet"], 2)
    assert [e["sha256"] for e in entries] == ["read", "read"]
    assert sorted(read) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]


def test_work_unit_still_takes_three_fields():
    assert WorkUnit(0, 1, 5) == WorkUnit(unit_id=0, label=1, count=5)
