"""How a job's per-class counts become Beam elements: work units (one decoder batch each, seeded by id) dealt
to shard tasks (one element per output shard).

Shard layout rule (what a reader of an output can rely on):

- The job's records, sorted by class, are dealt round-robin to U work units (record r -> unit r % U), where U
  is the smallest multiple of the shard count K with ceil(total / U) <= capacity (the batch size). So unit
  sizes differ by at most 1 record and every unit holds each class in proportion (+-1 record per class).
- Unit u goes to shard u % K: every shard gets U / K units, so **shard sizes differ by at most U / K records**
  (with fewer records than units, the empty units are dropped and some shards get fewer or none).
- Inside a unit the records are in a seeded random order (see transforms.sample_unit), so a shard is a run of
  shuffled, class-interleaved batches: a pure function of (seed, counts, capacity, K). No global shuffle:
  decoded data never moves between workers, so memory stays flat in N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RECORDS_PER_SHARD = 50_000
MAX_DEFAULT_SHARDS = 256


@dataclass(frozen=True)
class WorkUnit:
    """One decoder batch: `counts[i]` records of class `labels[i]` (-1 = unlabeled); ids are
    unit_id * capacity + position. `rows` = (start, stop) rows of a user's latent file (generate --latents)."""

    unit_id: int
    labels: tuple[int, ...]  # classes in this unit, ascending (-1 = unlabeled)
    counts: tuple[int, ...]  # records of each class, same order, all > 0
    rows: tuple[int, int] | None = None

    @property
    def count(self) -> int:
        return sum(self.counts)


def split_evenly(total: int, classes: list[int]) -> dict[int, int]:
    """`total` records over `classes`, the first `total % len(classes)` classes getting one more."""
    base, extra = divmod(total, len(classes))
    return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}


def unit_count(total: int, capacity: int, num_shards: int) -> int:
    """U: the smallest multiple of `num_shards` whose units hold at most `capacity` records, at most `total`."""
    return min(total, math.ceil(math.ceil(total / capacity) / num_shards) * num_shards)


def plan_units(counts: dict[int, int], capacity: int, num_shards: int = 1) -> list[WorkUnit]:
    """Deal the class-sorted records round-robin to U units (U: see the module docstring), ids in order.

    Closed form per (unit, class), O(U * C): unit u gets the records r in [start_c, stop_c) with r % U == u."""
    if capacity <= 0:
        raise ValueError(f"Expected capacity >= 1, Received: capacity={capacity}")
    if num_shards <= 0:
        raise ValueError(f"Expected num_shards >= 1, Received: num_shards={num_shards}")
    labels = [c for c in sorted(counts) if counts[c] > 0]
    sizes = np.array([counts[c] for c in labels], np.int64)
    total = int(sizes.sum())
    if total == 0:
        return []
    n_units = unit_count(total, capacity, num_shards)  # units past `total` would be empty: none are planned
    stop = np.cumsum(sizes)
    start = stop - sizes
    u = np.arange(n_units, dtype=np.int64)[:, None]
    # records r < x with r % U == u: x // U, plus one if u < x % U
    per = (stop // n_units - start // n_units) + (u < stop % n_units) - (u < start % n_units)  # (U, C)
    units = []
    for uid, row in enumerate(per.tolist()):
        units.append(WorkUnit(uid, tuple(c for c, n in zip(labels, row) if n),
                              tuple(n for n in row if n)))
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
    """Deal the units round-robin over `num_shards` tasks (unit u -> shard u % num_shards).

    With units from plan_units(..., num_shards) every task gets U / K units and shard sizes differ by at most
    U / K records. Tasks with no units (more shards than units) still exist, so every shard gets its (empty) file.
    """
    if num_shards <= 0:
        raise ValueError(f"Expected num_shards >= 1, Received: num_shards={num_shards}")
    dealt = [[] for _ in range(num_shards)]
    for u in sorted(units, key=lambda u: u.unit_id):
        dealt[u.unit_id % num_shards].append(u)
    return [ShardTask(s, num_shards, tuple(us)) for s, us in enumerate(dealt)]
