"""Shuffled, equal shards (issue 17): the class-sorted records are dealt round-robin to U work units (U a multiple
of the shard count), each unit is a seeded shuffle of its classes, so shards are class-interleaved and their sizes
differ by at most U / K records (the rule in pipeline/generate/planning.py)."""
import math

import numpy as np
import pytest

from pipeline.generate.planning import WorkUnit, plan_shard_tasks, plan_units
from pipeline.generate.transforms import sample_unit


def _random_counts(rng):
    classes = rng.choice(np.arange(-1, 12), size=rng.integers(1, 8), replace=False)
    return {int(c): int(rng.integers(0, 3000)) for c in classes}


@pytest.mark.parametrize("trial", range(40))
def test_planning_keeps_exact_counts_and_balances_units_classes_and_shards(trial):
    rng = np.random.default_rng([17, trial])
    counts = _random_counts(rng)
    capacity = int(rng.integers(1, 700))
    shards = int(rng.integers(1, 9))
    units = plan_units(counts, capacity, shards)
    total = sum(counts.values())
    if total == 0:
        assert units == []
        return
    planned = math.ceil(math.ceil(total / capacity) / shards) * shards  # smallest multiple of K that fits
    assert planned % shards == 0 and math.ceil(total / planned) <= capacity
    assert planned == shards or math.ceil(total / (planned - shards)) > capacity
    assert len(units) == min(planned, total)
    assert [u.unit_id for u in units] == list(range(len(units)))
    # exact per-class totals; labels ascending, counts positive
    got = {}
    for u in units:
        assert list(u.labels) == sorted(u.labels) and len(u.labels) == len(u.counts) and min(u.counts) > 0
        assert u.rows is None and u.count == sum(u.counts) <= capacity
        for c, n in zip(u.labels, u.counts):
            got[c] = got.get(c, 0) + n
    assert got == {c: n for c, n in counts.items() if n}
    # unit sizes differ by at most 1; each class is spread evenly (+-1) over the units
    sizes = [u.count for u in units]
    assert max(sizes) - min(sizes) <= 1
    for c, n in counts.items():
        per = [dict(zip(u.labels, u.counts)).get(c, 0) for u in units]
        assert max(per) - min(per) <= 1 and sum(per) == n
    # the documented shard rule: sizes differ by at most U / K records
    tasks = plan_shard_tasks(units, shards)
    shard_sizes = [sum(u.count for u in t.units) for t in tasks]
    assert sum(shard_sizes) == total and max(shard_sizes) - min(shard_sizes) <= planned // shards


def test_the_class_mix_of_a_unit_is_proportional():
    units = plan_units({0: 9000, 1: 900, 2: 90, 3: 10}, 1000)  # 10 units of 1000
    assert len(units) == 10
    assert all(u.labels == (0, 1, 2, 3) and u.counts == (900, 90, 9, 1) for u in units)
    units = plan_units({0: 7, 5: 3}, 4, num_shards=4)  # 4 units; record r (0-6 class 0, 7-9 class 5) -> unit r % 4
    assert [(u.labels, u.counts) for u in units] == [((0, 5), (2, 1)), ((0, 5), (2, 1)), ((0,), (2,)),
                                                     ((0, 5), (1, 1))]


def test_planning_is_not_a_loop_per_record():
    # 10^8 records in ~24k units: a fraction of a second (one small step per unit); a loop per record takes minutes
    units = plan_units({c: 10 ** 7 for c in range(10)}, 4096, 256)
    assert len(units) % 256 == 0 and sum(u.count for u in units) == 10 ** 8


def test_sample_unit_interleaves_the_classes_deterministically(classgauss):
    unit = WorkUnit(7, tuple(range(10)), (20,) * 10)
    z, labels = sample_unit(classgauss, 3, unit)
    assert z.shape == (200, classgauss.latent_dim) and z.dtype == np.float32 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [20] * 10
    assert len(set(labels[:40].tolist())) >= 8  # not blocked by class
    assert (np.diff(labels) != 0).sum() > 100
    z2, labels2 = sample_unit(classgauss, 3, unit)
    assert z2.tobytes() == z.tobytes() and labels2.tolist() == labels.tolist()
    # the same codes as drawing the classes in order from the unit's generator, then permuting both
    rng = np.random.default_rng([3, 7])
    blocks = np.concatenate([classgauss.sample(rng, c, 20) for c in range(10)])
    perm = rng.permutation(200)
    assert blocks[perm].astype(np.float32).tobytes() == z.tobytes()
    assert (np.repeat(np.arange(10), 20)[perm] == labels).all()
    other = sample_unit(classgauss, 3, WorkUnit(8, tuple(range(10)), (20,) * 10))
    assert other[0].tobytes() != z.tobytes()


def test_sample_unit_of_a_users_latent_rows_is_their_codes_in_file_order():
    class Codes:
        def codes(self, unit):
            a, b = unit.rows
            return np.arange(a, b, dtype=np.float32)[:, None], np.full(b - a, -1, np.int64)

    z, labels = sample_unit(Codes(), 1, WorkUnit(0, (-1,), (3,), rows=(5, 8)))
    assert z[:, 0].tolist() == [5, 6, 7] and labels.tolist() == [-1] * 3


@pytest.mark.e2e
def test_a_shard_read_without_shuffle_mixes_all_classes_and_shard_sizes_follow_the_rule(tmp_path, generate):
    from pipeline.readers import tfrecord_dataset

    out = tmp_path / "o"
    capacity, shards = 96, 2  # 2000 records: 21 units of <= 96 would do; 22, a multiple of 2, are planned
    m = generate(out, per_class=200, batch_size=capacity, shards=shards, formats=["tfrecord", "parquet"])
    assert m["total"] == 2000
    units = plan_units({c: 200 for c in range(10)}, capacity, shards)
    assert len(units) == 22
    for fmt in ("tfrecord", "parquet"):
        rows = [s["rows"] for s in sorted(m["shards"], key=lambda s: s["path"]) if s["format"] == fmt]
        assert len(rows) == shards and sum(rows) == 2000
        assert max(rows) - min(rows) <= len(units) // shards
        assert rows == [sum(u.count for u in t.units) for t in plan_shard_tasks(units, shards)]
    # shard 0's records, in file order: tfrecord_dataset interleaves the shards deterministically
    ids, labels = [], []
    for _, lab, i in tfrecord_dataset(str(out), batch_size=1024, with_ids=True).as_numpy_iterator():
        ids.append(i)
        labels.append(lab)
    ids, labels = np.concatenate(ids), np.concatenate(labels)
    shard0 = labels[(ids // capacity) % shards == 0]
    assert len(shard0) == rows[0]
    assert set(shard0[:128].tolist()) == set(range(10))
    first, = tfrecord_dataset(str(out), batch_size=128).take(1).as_numpy_iterator()
    assert set(first[1].tolist()) == set(range(10))  # what a tf.data user without shuffle() sees first


def test_generate_shards_exports_records_decode_latency_and_model_load(bundled, classgauss, local_pipeline):
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from pipeline.generate.transforms import NAMESPACE, GenerateShards

    units = plan_units({2: 20, 5: 9}, 16, 2)
    p = local_pipeline()
    _ = p | beam.Create(plan_shard_tasks(units, 2)) | GenerateShards(
        classgauss, 4, bundled.path, 16, bundled.model_id, "classgauss", 16, 29, decode_threads=2)
    metrics = p.run().metrics()
    mine = metrics.query(MetricsFilter().with_namespace(NAMESPACE))
    counters = {r.key.metric.name: r.committed for r in mine["counters"]}
    dists = {r.key.metric.name: r.committed for r in mine["distributions"]}
    assert counters["records"] == 29
    assert dists["decode_batch_ms"].count == len(units) and dists["decode_batch_ms"].min >= 0
    # this transform's own Shared key: its DoFn loads the decoder (once per process) and reports that load
    assert dists["model_load_ms"].count >= 1 and dists["model_load_ms"].min > 0
