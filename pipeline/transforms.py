"""The generation job's Beam transforms: work units in, decoded RecordBatches out.

Only tiny work units are shuffled; after sampling every element is a whole batch (thousands of images).
The decoder is loaded once per worker process (`DoFn.setup` + `Shared`) and called through a
fixed-signature `tf.function`.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import faults
from pipeline.records import RecordBatch, batch_digest, combine_digests

_LOG = logging.getLogger(__name__)
NAMESPACE = "vae_augment"


@dataclass(frozen=True)
class WorkUnit:
    """`count` records of class `label` (-1 = unlabeled); ids are unit_id * capacity + index."""

    unit_id: int
    label: int
    count: int


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


def spread_evenly(total: int, classes: list[int]) -> dict[int, int]:
    base, extra = divmod(total, len(classes))
    return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}


class _SampleFn(beam.DoFn):
    def __init__(self, sampler, seed: int):
        self._sampler = sampler
        self._seed = seed

    def process(self, unit: WorkUnit):
        faults.maybe_fail("sample", unit.unit_id)
        rng = np.random.default_rng([self._seed, unit.unit_id])
        yield unit, self._sampler.sample(rng, unit.label, unit.count)


class SampleLatents(beam.PTransform):
    """WorkUnit -> (WorkUnit, z float32 (count, d)), drawn from default_rng([seed, unit_id])."""

    def __init__(self, sampler, seed: int, label=None):
        super().__init__(label)
        self._sampler = sampler
        self._seed = seed

    def expand(self, units):
        return units | "Sample" >> beam.ParDo(_SampleFn(self._sampler, self._seed))


class _DecoderHandle:
    """Weak-referenceable holder so `Shared` can cache one decoder per process."""

    def __init__(self, decoder):
        self.decoder = decoder


class NonFiniteOutput(RuntimeError):
    pass


class _DecodeFn(beam.DoFn):
    def __init__(self, model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile=False):
        self._model_path = model_path
        self._batch_size = batch_size
        self._model_id = model_id
        self._sampler_name = sampler_name
        self._seed = seed
        self._capacity = capacity
        self._total = total
        self._jit = jit_compile
        self._shared = shared.Shared()
        self._records = Metrics.counter(NAMESPACE, "records")
        self._nonfinite = Metrics.counter(NAMESPACE, "nonfinite_pixels")

    def setup(self):
        def load():
            from vae_model.inference import BatchDecoder
            from vae_model.model_dir import ModelDir

            md = ModelDir.open(self._model_path)
            return _DecoderHandle(BatchDecoder(md.decoder, self._batch_size, md.conditional, md.num_classes,
                                               jit_compile=self._jit))

        self._handle = self._shared.acquire(load, tag=f"{self._model_path}:{self._batch_size}:{self._jit}")
        self._done = 0
        self._started = time.time()
        self._last_report = 0.0

    def process(self, element):
        unit, z = element
        faults.maybe_fail("decode", unit.unit_id)
        labels = np.full(unit.count, unit.label, np.int64)
        images, bad = self._handle.decoder(z, labels)
        if bad:
            self._nonfinite.inc(bad)
            raise NonFiniteOutput(f"work unit {unit.unit_id}: decoder produced {bad} NaN/Inf pixels; "
                                  "the model is broken, retrain it")
        ids = unit.unit_id * self._capacity + np.arange(unit.count, dtype=np.int64)
        self._records.inc(unit.count)
        self._report(unit.count)
        yield RecordBatch(ids, labels, images, z, self._sampler_name, self._model_id, self._seed)

    def _report(self, n):
        self._done += n
        now = time.time()
        if now - self._last_report >= 2.0 or self._done >= self._total:
            self._last_report = now
            rate = self._done / max(now - self._started, 1e-9)
            print(f"  decoded {self._done:,} / {self._total:,} records in this worker ({rate:,.0f}/s)",
                  file=sys.stderr, flush=True)


class DecodeLatents(beam.PTransform):
    """(WorkUnit, z) -> RecordBatch with uint8 images, ids and provenance fields."""

    def __init__(self, model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile=False,
                 label=None):
        super().__init__(label)
        self._fn = _DecodeFn(model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile)

    def expand(self, latents):
        return latents | "Decode" >> beam.ParDo(self._fn)


class _SummaryFn(beam.CombineFn):
    """Total, per-class counts and the order-independent dataset digest; exact, so merge order is moot."""

    def create_accumulator(self):
        return (0, {}, 0)

    def add_input(self, acc, batch: RecordBatch):
        total, per_class, digest = acc
        labels, counts = np.unique(batch.labels, return_counts=True)
        per_class = dict(per_class)
        for c, n in zip(labels.tolist(), counts.tolist()):
            per_class[c] = per_class.get(c, 0) + n
        return total + len(batch), per_class, combine_digests(digest, batch_digest(batch))

    def merge_accumulators(self, accs):
        total, per_class, digest = 0, {}, 0
        for t, pc, d in accs:
            total += t
            digest = combine_digests(digest, d)
            for c, n in pc.items():
                per_class[c] = per_class.get(c, 0) + n
        return total, per_class, digest

    def extract_output(self, acc):
        total, per_class, digest = acc
        return {"total": total, "per_class": {str(c): n for c, n in sorted(per_class.items())},
                "digest": f"{digest:064x}"}


class SummarizeRecords(beam.PTransform):
    def expand(self, batches):
        return batches | "Combine" >> beam.CombineGlobally(_SummaryFn())
