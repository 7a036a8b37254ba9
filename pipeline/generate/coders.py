"""A Beam coder for RecordBatch, registered on import, so batches have a cheap size estimate.

Beam's runners estimate every PCollection's element sizes by encoding sampled elements; with the default
pickle fallback that meant pickling whole 3.8 MB batches just to measure them (measured: ~1.2 core-seconds per
1M records). Encoding, when a batch does cross a stage boundary, is pickle protocol 5 of the fields.
"""
from __future__ import annotations

import pickle

import apache_beam as beam

from pipeline.dataset.batch import RecordBatch

_FIELDS = ("ids", "labels", "images", "latents", "sampler", "model_id", "seed", "drawn", "passed")
_OVERHEAD = 200  # bytes of pickle framing and the small fields, about


class RecordBatchCoder(beam.coders.Coder):
    def encode(self, value: RecordBatch) -> bytes:
        return pickle.dumps(tuple(getattr(value, f) for f in _FIELDS), protocol=5)

    def decode(self, encoded: bytes) -> RecordBatch:
        return RecordBatch(*pickle.loads(encoded))

    def estimate_size(self, value: RecordBatch) -> int:
        return value.ids.nbytes + value.labels.nbytes + value.images.nbytes + value.latents.nbytes + _OVERHEAD

    def is_deterministic(self) -> bool:
        return False  # dict fields (filter bookkeeping): never used as a key

    def to_type_hint(self):
        return RecordBatch


beam.coders.registry.register_coder(RecordBatch, RecordBatchCoder)
