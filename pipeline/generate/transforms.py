"""The generation job's Beam transforms: work units in, decoded RecordBatches out.

Only tiny work units (or shard tasks, lists of work units) are shuffled; after sampling every element is a
whole batch (thousands of images) and decoded data is never shuffled. The decoder is loaded once per worker
process (`DoFn.setup` + `Shared`) and called through a fixed-signature `tf.function`.
"""
from __future__ import annotations

import collections
import itertools
import os
import sys
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline.dataset.batch import RecordBatch, empty_batch
from pipeline.dataset.digest import batch_digest, combine_digests
from pipeline.generate import coders  # noqa: F401 - registers RecordBatch's coder
from pipeline.generate import faults
from pipeline.generate.job import MAX_FILTER_ROUNDS
from pipeline.generate.planning import ShardTask, WorkUnit
from pipeline.generate.samplers import StatsFileSampler
from pipeline.generate.worker_env import enable_gpu_memory_growth, portable_model_dir

NAMESPACE = "vae_augment"


class _SingleThreadedBlas:
    """Holds numpy's BLAS at one thread while any sampling DoFn is set up in this process (refcounted).

    The samplers' small matmuls (4096 x d @ d x d) gain nothing from BLAS threads, but OpenBLAS threads
    busy-wait after every call and steal the cores TensorFlow decodes on: measured, sampling right before
    each decode halved decode throughput (44k vs 69k images/s on 2 cores); with one BLAS thread it is back
    to 54-63k. Results are the same bits (BLAS threads split output rows, never a dot product).
    """

    _lock = threading.Lock()
    _users = 0
    _limiter = None

    @classmethod
    def acquire(cls):
        with cls._lock:
            cls._users += 1
            if cls._users == 1:
                try:
                    from threadpoolctl import threadpool_limits

                    cls._limiter = threadpool_limits(limits=1, user_api="blas")
                except Exception:  # noqa: BLE001 - threadpoolctl missing or no BLAS found: only slower
                    cls._limiter = None

    @classmethod
    def release(cls):
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users == 0 and cls._limiter is not None:
                cls._limiter.restore_original_limits()
                cls._limiter = None


def _draw(sampler, rng, labels, counts) -> tuple[np.ndarray, np.ndarray]:
    """Each class's codes in `labels` order from `rng`, concatenated: (z float32 (n, d), labels int64 (n,))."""
    z = np.concatenate([np.asarray(sampler.sample(rng, c, n), np.float32) for c, n in zip(labels, counts)])
    return z, np.repeat(np.asarray(labels, np.int64), counts)


def sample_unit(sampler, seed: int, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
    """A unit's latent codes and labels (z float32 (n, d), labels int64 (n,)), classes interleaved: a pure function
    of (sampler, seed, unit). One generator default_rng([seed, unit_id]) draws each class's codes in unit.labels
    order, then the permutation that shuffles them."""
    if unit.rows is not None:  # a user's own codes (generate --latents): file order, no randomness
        return sampler.codes(unit)
    rng = np.random.default_rng([seed, unit.unit_id])
    z, labels = _draw(sampler, rng, unit.labels, unit.counts)
    perm = rng.permutation(len(labels))
    return z[perm], labels[perm]


class _SampleFn(beam.DoFn):
    def __init__(self, sampler, seed: int):
        self._sampler = sampler
        self._seed = seed

    def setup(self):
        _SingleThreadedBlas.acquire()

    def teardown(self):
        _SingleThreadedBlas.release()

    def process(self, unit: WorkUnit):
        faults.maybe_fail("sample", unit.unit_id)
        yield (unit, *sample_unit(self._sampler, self._seed, unit))


class SampleLatents(beam.PTransform):
    """WorkUnit -> (WorkUnit, z float32 (count, d), labels int64 (count,)): sample_unit, from
    default_rng([seed, unit_id])."""

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


class FilterStarved(RuntimeError):
    """Too few candidates pass the classifier filter to fill a work unit within MAX_FILTER_ROUNDS rounds."""


class _DecodeFn(beam.DoFn):
    def __init__(self, model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile=False):
        self._model_path = portable_model_dir(model_path)  # the bundled model resolves on the worker
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
        self._decode_ms = Metrics.distribution(NAMESPACE, "decode_batch_ms")
        self._load_ms_metric = Metrics.distribution(NAMESPACE, "model_load_ms")
        self._load_ms = None

    def setup(self):
        loaded = []

        def load():
            t0 = time.perf_counter()
            handle = _load()
            loaded.append(int(round((time.perf_counter() - t0) * 1000)))
            return handle

        def _load():
            from vae_model.errors import ModelError
            from vae_model.inference import BatchDecoder
            from vae_model.model_dir import ModelDir

            md = ModelDir.open(self._model_path)
            if md.model_id != self._model_id:  # e.g. a container that bakes in another version's bundled model
                raise ModelError(f"this worker's model {md.path} is {md.model_id}, the job's is {self._model_id}: "
                                 "stage or install the same vae-augment version on the workers")
            return _DecoderHandle(BatchDecoder(md.decoder, self._batch_size, md.conditional, md.num_classes,
                                               jit_compile=self._jit))

        from pipeline.generate.worker_env import anonymous_gcs_on_worker

        enable_gpu_memory_growth()
        anonymous_gcs_on_worker()  # before the model is read from gs://
        self._handle = self._shared.acquire(load, tag=f"{self._model_path}:{self._batch_size}:{self._jit}")
        # Reported from the first bundle: setup may run where no metrics container is active.
        self._load_ms = loaded[0] if loaded else None
        self._done = 0
        self._started = time.time()
        self._last_report = 0.0

    def process(self, element):
        unit, z, labels = element
        yield self._decode(unit, z, labels)

    def _decode(self, unit: WorkUnit, z: np.ndarray, labels: np.ndarray) -> RecordBatch:
        return self._account(unit, *self._decode_raw(unit, z, labels))

    def _decode_raw(self, unit: WorkUnit, z: np.ndarray, labels: np.ndarray) -> tuple[RecordBatch, int, list[int]]:
        """Pure computation (safe on a helper thread): the batch, its count of non-finite pixels and the decoder
        call's time in ms (as a list, one entry per call)."""
        faults.maybe_fail("decode", unit.unit_id)
        t0 = time.perf_counter()
        images, bad = self._handle.decoder(z, labels)
        ms = int(round((time.perf_counter() - t0) * 1000))
        # a --latents record's id is its row in the user's file; a sampled one's is unit_id * capacity + position
        first = unit.rows[0] if unit.rows is not None else unit.unit_id * self._capacity
        ids = first + np.arange(len(labels), dtype=np.int64)
        return RecordBatch(ids, labels, images, z, self._sampler_name, self._model_id, self._seed), bad, [ms]

    def _flush_load_metric(self):
        if self._load_ms is not None:
            self._load_ms_metric.update(self._load_ms)
            self._load_ms = None

    def _account(self, unit: WorkUnit, batch: RecordBatch, bad: int, decode_ms=()) -> RecordBatch:
        """Checks, metrics and progress, on the bundle's own thread (Beam metrics are thread-local)."""
        self._flush_load_metric()
        for ms in decode_ms:
            self._decode_ms.update(ms)
        if bad:
            self._nonfinite.inc(bad)
            raise NonFiniteOutput(f"work unit {unit.unit_id}: decoder produced {bad} NaN/Inf pixels; "
                                  "the model is broken, retrain it")
        self._records.inc(len(batch))
        self._report(len(batch))
        return batch

    def _report(self, n):
        self._done += n
        now = time.time()
        if now - self._last_report >= 2.0 or self._done >= self._total:
            self._last_report = now
            rate = self._done / max(now - self._started, 1e-9)
            print(f"  decoded {self._done:,} / {self._total:,} records in this worker "
                  f"(pid {os.getpid()}, {rate:,.0f}/s)", file=sys.stderr, flush=True)


class DecodeLatents(beam.PTransform):
    """(WorkUnit, z, labels) -> RecordBatch with uint8 images, ids and provenance fields."""

    def __init__(self, model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile=False,
                 label=None):
        super().__init__(label)
        self._fn = _DecodeFn(model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile)

    def expand(self, latents):
        return latents | "Decode" >> beam.ParDo(self._fn).with_output_types(RecordBatch)


class _GenerateShardFn(_DecodeFn):
    """ShardTask -> (shard, RecordBatch) for each of its units: sample, then decode, in this one element.

    Units are sampled and decoded on `decode_threads` helper threads, up to that many units ahead, while the
    bundle's own thread sends finished batches downstream (encoding, hashing and writing, fused into this
    stage). TensorFlow releases the GIL, so decoding and writing overlap; with two or more calls in flight
    TensorFlow's intra-op pool stays busy while the writer holds a core. Batches still leave in unit order,
    and records do not depend on the number of threads (0 = decode inline).

    `sampler` is a LatentSampler, or a SamplerSpec that process() builds once per DoFn instance from the
    class statistics side input `stats`.
    """

    def __init__(self, sampler, seed, model_path, batch_size, model_id, sampler_name, capacity, total,
                 jit_compile=False, decode_threads=2, record_filter=None, max_rounds=MAX_FILTER_ROUNDS):
        super().__init__(model_path, batch_size, model_id, sampler_name, seed, capacity, total, jit_compile)
        self._sampler = sampler
        self._built = None  # the sampler built from the statistics side input
        self._threads = decode_threads
        self._filter = record_filter
        self._max_rounds = max_rounds
        self._pool = None

    def setup(self):
        super().setup()
        if self._filter is not None:
            self._filter.setup()
        _SingleThreadedBlas.acquire()
        self._blas_held = True
        if self._threads > 0:
            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="vae-augment-decode")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if getattr(self, "_blas_held", False):
            self._blas_held = False
            _SingleThreadedBlas.release()

    def _sampler_for(self, stats):
        if self._built is None:  # one sampler for the whole job: build once per DoFn instance
            if stats is not None:  # a SamplerSpec and the statistics side input
                self._built = self._sampler.build(stats)
            elif isinstance(self._sampler, StatsFileSampler):  # read the statistics file on this worker
                self._built = self._sampler.build()
            else:
                return self._sampler
        return self._built

    def _make(self, unit: WorkUnit, sampler) -> tuple[RecordBatch, int, list[int]]:
        faults.maybe_fail("sample", unit.unit_id)
        if self._filter is None:
            return self._decode_raw(unit, *sample_unit(sampler, self._seed, unit))
        return self._make_filtered(unit, sampler)

    def _make_filtered(self, unit: WorkUnit, sampler) -> tuple[RecordBatch, int, list[int]]:
        """Filtered generation, all from the unit's one generator default_rng([seed, unit_id]).

        Each round draws, for every class still short (in unit.labels order), that class's full count of
        candidates, decodes them in one call and classifies them; each class keeps its first passing candidates in
        draw order. Round 0 is exactly sample_unit's draw before its permutation. Once every class is full, the
        kept records (class blocks in unit.labels order) are permuted with the same generator, as in sample_unit;
        so when round 0 suffices the batch equals the unfiltered one. Depends only on (seed, unit)."""
        rng = np.random.default_rng([self._seed, unit.unit_id])
        need = dict(zip(unit.labels, unit.counts))
        kept = {c: ([], []) for c in unit.labels}  # class -> (latent parts, image parts)
        got = dict.fromkeys(unit.labels, 0)
        drawn = dict.fromkeys(unit.labels, 0)
        passed = dict.fromkeys(unit.labels, 0)
        bad, times = 0, []
        for _ in range(self._max_rounds):
            short = [c for c in unit.labels if got[c] < need[c]]
            if not short:
                break
            sizes = [need[c] for c in short]
            candidates, nonfinite, ms = self._decode_raw(unit, *_draw(sampler, rng, short, sizes))
            bad += nonfinite
            times += ms
            mask, _ = self._filter.accept(candidates.images, candidates.labels)
            offset = 0
            for c, n in zip(short, sizes):  # per class, not per record: each class is one block of the round
                block = mask[offset:offset + n]
                drawn[c] += n
                passed[c] += int(block.sum())
                take = offset + np.flatnonzero(block)[: need[c] - got[c]]
                kept[c][0].append(candidates.latents[take])
                kept[c][1].append(candidates.images[take])
                got[c] += len(take)
                offset += n
        short = [c for c in unit.labels if got[c] < need[c]]
        if short:
            c = short[0]
            where = f"class {c}" if c >= 0 else "unlabeled records"
            raise FilterStarved(
                f"work unit {unit.unit_id} ({where}): only {passed[c]:,} of {drawn[c]:,} decoded candidates "
                f"({passed[c] / drawn[c]:.2%}) pass the classifier filter at --min-confidence "
                f"{self._filter.min_confidence}; lower --min-confidence, raise --max-filter-rounds "
                f"(now {self._max_rounds}), or use a better model or sampler")
        z = np.concatenate([part for c in unit.labels for part in kept[c][0]])
        images = np.concatenate([part for c in unit.labels for part in kept[c][1]])
        labels = np.repeat(np.asarray(unit.labels, np.int64), unit.counts)
        perm = rng.permutation(len(labels))
        ids = unit.unit_id * self._capacity + np.arange(len(labels), dtype=np.int64)
        batch = RecordBatch(ids, labels[perm], images[perm], z[perm], self._sampler_name, self._model_id,
                            self._seed, drawn=drawn, passed=passed)
        return batch, bad, times

    def _empty(self) -> RecordBatch:
        dec = self._handle.decoder
        empty = empty_batch(dec.image_shape[0], dec.image_shape[1], dec.latent_dim)
        return RecordBatch(empty.ids, empty.labels, empty.images, empty.latents, self._sampler_name,
                           self._model_id, self._seed)

    def process(self, task: ShardTask, stats=None):
        self._flush_load_metric()
        if not task.units:
            # Gives the shard its (valid, empty) file, written in this bundle like every other shard.
            yield task.shard, self._empty()
            return
        sampler = self._sampler_for(stats)
        if self._pool is None:
            for unit in task.units:
                yield task.shard, self._account(unit, *self._make(unit, sampler))
            return
        todo = iter(task.units)
        pending = collections.deque((u, self._pool.submit(self._make, u, sampler))
                                    for u in itertools.islice(todo, self._threads))
        try:
            while pending:
                unit, future = pending.popleft()
                done = future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, self._pool.submit(self._make, nxt, sampler)))
                yield task.shard, self._account(unit, *done)
        finally:
            # On failure (or an abandoned bundle) leave no helper thread working for this bundle.
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                if not future.cancelled():
                    try:
                        future.result()
                    except Exception:  # noqa: BLE001 - the first error is already propagating
                        pass


class GenerateShards(beam.PTransform):
    """ShardTask -> (shard, RecordBatch) per work unit (sampled from default_rng([seed, unit_id]), then decoded).

    The records equal SampleLatents | DecodeLatents on the same units; every shard's batches come from one
    element, hence one bundle, and an empty task yields one empty batch so its shard still gets a file.
    With `record_filter` (a pipeline.generate.filter.ClassifierFilter) each unit keeps only candidates that pass
    it and tops up from the unit's own generator (see _GenerateShardFn._make_filtered). With `stats` (a
    singleton side input of LatentStats, e.g. from ComputeClassStats in the same pipeline) `sampler` is a
    SamplerSpec, built on the workers from those statistics.
    """

    def __init__(self, sampler, seed, model_path, batch_size, model_id, sampler_name, capacity, total,
                 jit_compile=False, decode_threads=2, record_filter=None, max_rounds=MAX_FILTER_ROUNDS, stats=None,
                 label=None):
        super().__init__(label)
        self._fn = _GenerateShardFn(sampler, seed, model_path, batch_size, model_id, sampler_name, capacity,
                                    total, jit_compile, decode_threads, record_filter, max_rounds)
        self._stats = stats

    def expand(self, tasks):
        side = {} if self._stats is None else {"stats": self._stats}
        return tasks | "SampleAndDecode" >> beam.ParDo(self._fn, **side).with_output_types(
            typing.Tuple[int, RecordBatch])


class _SummaryFn(beam.CombineFn):
    """Total, per-class counts and the order-independent dataset digest; exact, so merge order is moot."""

    def create_accumulator(self):
        return (0, {}, 0, {})

    def add_input(self, acc, batch: RecordBatch):
        total, per_class, digest, filtered = acc
        labels, counts = np.unique(batch.labels, return_counts=True)
        per_class = dict(per_class)
        for c, n in zip(labels.tolist(), counts.tolist()):
            per_class[c] = per_class.get(c, 0) + n
        if batch.drawn is not None:  # a filtered batch: per-class candidates drawn and passed
            filtered = dict(filtered)
            for c, dr in batch.drawn.items():
                d, p = filtered.get(int(c), (0, 0))
                filtered[int(c)] = (d + dr, p + batch.passed.get(c, 0))
        return total + len(batch), per_class, combine_digests(digest, batch_digest(batch)), filtered

    def merge_accumulators(self, accs):
        total, per_class, digest, filtered = 0, {}, 0, {}
        for t, pc, d, f in accs:
            total += t
            digest = combine_digests(digest, d)
            for c, n in pc.items():
                per_class[c] = per_class.get(c, 0) + n
            for c, (dr, pa_) in f.items():
                d0, p0 = filtered.get(c, (0, 0))
                filtered[c] = (d0 + dr, p0 + pa_)
        return total, per_class, digest, filtered

    def extract_output(self, acc):
        total, per_class, digest, filtered = acc
        out = {"total": total, "per_class": {str(c): n for c, n in sorted(per_class.items())},
               "digest": f"{digest:064x}"}
        if filtered:
            out["filter"] = {str(c): {"drawn": d, "passed": p} for c, (d, p) in sorted(filtered.items())}
        return out


class SummarizeRecords(beam.PTransform):
    def expand(self, batches):
        return batches | "Combine" >> beam.CombineGlobally(_SummaryFn())
