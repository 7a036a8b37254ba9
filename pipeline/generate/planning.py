"""How a job's per-class counts become Beam elements: work units (one decoder batch each, seeded by id) dealt
to shard tasks (one element per output shard)."""
from __future__ import annotations

import math
from dataclasses import dataclass

RECORDS_PER_SHARD = 50_000
MAX_DEFAULT_SHARDS = 256


@dataclass(frozen=True)
class WorkUnit:
    """`count` records of class `label` (-1 = unlabeled); ids are unit_id * capacity + index."""

    unit_id: int
    label: int
    count: int


def split_evenly(total: int, classes: list[int]) -> dict[int, int]:
    """`total` records over `classes`, the first `total % len(classes)` classes getting one more."""
    base, extra = divmod(total, len(classes))
    return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}


def plan_units(counts: dict[int, int], capacity: int) -> list[WorkUnit]:
    """Cut each class's count into units of at most `capacity`, ids assigned in class order."""
    units = []
    for label in sorted(counts):
        left = counts[label]
        while left > 0:
            n = min(capacity, left)
            units.append(WorkUnit(len(units), label, n))
            left -= n
    return units


def default_shards(total: int) -> int:
    """Shards per format when --shards is not given: one per RECORDS_PER_SHARD records, at least one."""
    return max(1, min(MAX_DEFAULT_SHARDS, math.ceil(total / RECORDS_PER_SHARD)))


@dataclass(frozen=True)
class ShardTask:
    """Everything output shard `shard` (of `num_shards`) holds: the work units with unit_id % num_shards == shard.

    One task is one Beam element, so one process() call produces the whole shard in one bundle and the
    sinks can write it with one open file per shard, without shuffling decoded data.
    """

    shard: int
    num_shards: int
    units: tuple[WorkUnit, ...]


def plan_shard_tasks(units: list[WorkUnit], num_shards: int) -> list[ShardTask]:
    """Deal the units round-robin over `num_shards` tasks (classes mix within a shard; sizes differ by <= 1 unit).

    Tasks with no units (more shards than units) still exist, so every shard gets its (empty) file.
    """
    if num_shards <= 0:
        raise ValueError(f"Expected num_shards >= 1, Received: num_shards={num_shards}")
    ordered = sorted(units, key=lambda u: u.unit_id)
    return [ShardTask(s, num_shards, tuple(u for u in ordered if u.unit_id % num_shards == s))
            for s in range(num_shards)]
