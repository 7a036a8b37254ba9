"""Planning (pipeline/generate/planning.py): counts -> work units -> shard tasks, one task per output shard, so
decoded data is never shuffled (issue 4)."""
import numpy as np
import pytest

from pipeline.generate.planning import (RECORDS_PER_SHARD, WorkUnit, default_shards, plan_shard_tasks, plan_units,
                                        split_evenly)
from pipeline.generate.transforms import sample_unit


def test_plan_units_deals_the_class_sorted_records_round_robin():
    units = plan_units({3: 64, 0: 130, 7: 1}, 64)  # 195 records: 4 units of 48-49
    assert [(u.unit_id, u.labels, u.counts) for u in units] == [
        (0, (0, 3), (33, 16)), (1, (0, 3), (33, 16)), (2, (0, 3, 7), (32, 16, 1)), (3, (0, 3), (32, 16))]
    assert [u.count for u in units] == [49, 49, 49, 48] and all(u.rows is None for u in units)
    assert len(plan_units({3: 64, 0: 130, 7: 1}, 64, num_shards=3)) == 6  # a multiple of the shards
    assert plan_units({}, 64) == [] and plan_units({2: 0}, 64) == []


def test_split_evenly_gives_the_first_classes_the_remainder():
    assert split_evenly(23, [0, 1, 2]) == {0: 8, 1: 8, 2: 7}
    assert split_evenly(2, [4, 5, 6]) == {4: 1, 5: 1, 6: 0}
    assert sum(split_evenly(10_001, list(range(10))).values()) == 10_001


def test_default_shards_grow_with_the_records_and_stay_bounded():
    assert default_shards(1) == 1
    assert default_shards(RECORDS_PER_SHARD) == 1 and default_shards(RECORDS_PER_SHARD + 1) == 2
    assert default_shards(10 ** 12) == default_shards(10 ** 13)  # capped


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
    tasks = plan_shard_tasks(plan_units({1: 5}, 4, 8), 8)  # 8 units planned, the 3 empty ones dropped
    assert [len(t.units) for t in tasks] == [1] * 5 + [0] * 3
    with pytest.raises(ValueError, match="num_shards"):
        plan_shard_tasks([], 0)
    with pytest.raises(ValueError, match="Expected num_shards >= 1"):
        plan_units({1: 5}, 4, 0)


def test_a_units_latents_depend_only_on_the_seed_and_the_unit(classgauss):
    """What makes records independent of workers, shards and retries: a unit is its own seeded draw."""
    unit = WorkUnit(3, (1, 4), (5, 2))
    z, labels = sample_unit(classgauss, 9, unit)
    assert z.shape == (7, classgauss.latent_dim) and z.dtype == np.float32 and labels.dtype == np.int64
    assert sorted(labels.tolist()) == [1] * 5 + [4] * 2
    z2, labels2 = sample_unit(classgauss, 9, WorkUnit(3, (1, 4), (5, 2)))
    assert z2.tobytes() == z.tobytes() and labels2.tolist() == labels.tolist()
    for other_seed, other_unit in ((10, unit), (9, WorkUnit(4, (1, 4), (5, 2)))):
        assert sample_unit(classgauss, other_seed, other_unit)[0].tobytes() != z.tobytes()
