"""Class statistics of a labeled data source, computed inside Beam: encode in batches, then CombinePerKey
with the exact (hence order-independent) moment accumulator; a deterministic per-class pool of
per-example encodings (smallest keyed hashes) feeds the posterior and gmm samplers.

`ComputeClassStats` is one stage of a pipeline: `generate --labeled-data` feeds it to the samplers as a side
input of the same job, and `write_stats_file` (the `stats` command) runs it as a job of its own that writes
the .npz file."""
from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
from apache_beam.coders import coders
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes

from pipeline.generate.worker_env import anonymous_gcs_on_worker, enable_gpu_memory_growth, portable_model_dir
from vae_model.errors import DataError, UsageError
from vae_model.latent_stats import POOL_PER_CLASS, LatentStats, Moments, from_moments

CHUNK = 2048


class _MomentsFn(beam.CombineFn):
    def __init__(self, dim):
        self._dim = dim

    def create_accumulator(self):
        return Moments(self._dim)

    def add_input(self, acc, m):
        return acc.merge(m)

    def merge_accumulators(self, accs):
        out = Moments(self._dim)
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc):
        return acc


def _rank(seed: int, index: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()


class _EncodeChunkFn(beam.DoFn):
    """Chunk index -> per class (Moments, pool rows); loads encoder and data once per worker."""

    def __init__(self, model_path, source, seed):
        self._model_path, self._source, self._seed = portable_model_dir(model_path), source, seed

    def setup(self):
        from vae_model.data import load_source
        from vae_model.inference import BatchEncoder
        from vae_model.model_dir import ModelDir

        enable_gpu_memory_growth()
        anonymous_gcs_on_worker()  # before the model and the data are read from gs://
        md = ModelDir.open(self._model_path)
        self._data = load_source(self._source, seed=self._seed).train.labeled
        self._encode = BatchEncoder(md.encoder, CHUNK, md.conditional, md.num_classes)
        self._dim = md.latent_dim

    def process(self, chunk: int):
        a, b = chunk * CHUNK, min((chunk + 1) * CHUNK, len(self._data))
        images, labels = self._data.images[a:b], self._data.labels[a:b]
        mu, lv = self._encode(images, labels)
        for c in np.unique(labels).tolist():
            rows = np.flatnonzero(labels == c)
            yield beam.pvalue.TaggedOutput("moments", (c, Moments(self._dim).add_batch(mu[rows])))
            for r in rows.tolist():
                yield beam.pvalue.TaggedOutput("pool", (c, (_rank(self._seed, a + r), mu[r], lv[r])))


def _assemble(moments: dict, pools: dict) -> LatentStats:
    stats = from_moments(moments)
    labels, mus, lvs = [], [], []
    for c in stats.classes.tolist():
        rows = sorted(pools[c], key=lambda t: t[0])
        labels += [c] * len(rows)
        mus += [r[1] for r in rows]
        lvs += [r[2] for r in rows]
    stats.pool_labels = np.array(labels, np.int64)
    stats.pool_mu = np.array(mus, np.float32)
    stats.pool_logvar = np.array(lvs, np.float32)
    return stats


class ComputeClassStats(beam.PTransform):
    """Pipeline root -> a PCollection of one LatentStats of `source`'s labeled rows (`rows` of them, in classes
    `classes`). `for_source` makes it after checking the source on the driver."""

    def __init__(self, model_path: str, source: str, seed: int, dim: int, rows: int, classes: tuple[int, ...] = (),
                 pool_per_class: int = POOL_PER_CLASS, label=None):
        super().__init__(label)
        self._model_path, self._source, self._seed, self._dim = model_path, source, seed, dim
        self.rows, self.classes = rows, tuple(classes)
        self._pool = pool_per_class

    @classmethod
    def for_source(cls, md, source: str, seed: int, pool_per_class: int = POOL_PER_CLASS) -> "ComputeClassStats":
        """The stage for `source` encoded by model directory `md`. Reads the source's labels on the driver, so a bad
        source or option fails before any job starts. `pool_per_class`: encodings kept per class for the
        posterior and gmm samplers (a keyed-hash sample)."""
        from vae_model.data import load_source

        if isinstance(pool_per_class, bool) or not isinstance(pool_per_class, int) or pool_per_class < 1:
            raise UsageError(f"--pool-per-class must be an integer >= 1, got {pool_per_class!r}")
        labels = load_source(source, seed=seed).train.labeled.labels
        if not len(labels):
            raise DataError(f"{source} has no labeled rows; class statistics need labels")
        return cls(md.path, source, seed, md.latent_dim, len(labels), tuple(np.unique(labels).tolist()),
                   pool_per_class)

    def expand(self, root):
        chunks = (root
                  | "Chunks" >> beam.Create(list(range(-(-self.rows // CHUNK))), reshuffle=False)
                  | "ShuffleChunks" >> beam.Reshuffle())
        enc = chunks | "EncodeChunks" >> beam.ParDo(
            _EncodeChunkFn(self._model_path, self._source, self._seed)).with_outputs("moments", "pool")
        moments = enc.moments | "CombineMoments" >> beam.CombinePerKey(_MomentsFn(self._dim))
        pools = enc.pool | "PoolPerClass" >> beam.combiners.Top.PerKey(
            self._pool, key=lambda t: t[0], reverse=True)
        return (
            moments
            | "MomentsDict" >> beam.combiners.ToDict()
            | "Assemble" >> beam.Map(lambda m, pools: _assemble(m, pools), pools=beam.pvalue.AsDict(pools))
        )


class _SingleFileSink(FileBasedSink):
    """Writes each element's bytes to exactly `path` (one element expected); temp file + rename by Beam."""

    def __init__(self, path: str):
        super().__init__(path, coders.BytesCoder(), shard_name_template="",
                         compression_type=CompressionTypes.UNCOMPRESSED)

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.write(encoded_value)


def write_stats_file(model: str | None, data: str, out: str, seed: int = 0, pool_per_class: int = POOL_PER_CLASS,
                     near_dup_threshold: str | float | None = None, beam_args=()) -> dict:
    """`vae-augment stats`: one Beam job that computes the class statistics of `data`'s labeled rows with `model`
    (None or "bundled": the bundled model), optionally drops the pool anchors whose reconstruction lies within
    `near_dup_threshold` ("auto" or a distance) of a training image, and writes the .npz to `out`.

    Returns {"out", "labeled_images", "classes", "pool", "threshold" (None without pruning), "anchors"
    (per class {"kept", "dropped"}, None without pruning)}."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.generate import anchor_novelty
    from pipeline.generate.runners import make_runner
    from vae_model.artifacts import read_bytes
    from vae_model.model_dir import ModelDir

    prune = near_dup_threshold is not None
    threshold = anchor_novelty.parse_threshold(str(near_dup_threshold)) if prune else None  # before any work
    md = ModelDir.open(model)
    stage = ComputeClassStats.for_source(md, data, seed, pool_per_class)
    if prune and threshold is None:
        threshold = anchor_novelty.auto_threshold_of_source(data, seed)
    options = PipelineOptions(list(beam_args))
    p = beam.Pipeline(runner=make_runner(options), options=options)
    stats = p | "ClassStats" >> stage
    if prune:
        stats = stats | "PruneAnchors" >> anchor_novelty.PruneAnchors(md.path, data, seed, threshold)
    _ = (stats
         | "Serialize" >> beam.Map(LatentStats.to_bytes)
         | "WriteStats" >> beam.io.Write(_SingleFileSink(out)))
    result = p.run()
    result.wait_until_finish()
    written = LatentStats.from_bytes(read_bytes(out), out)
    return {"out": out, "labeled_images": int(written.counts.sum()), "classes": len(written.classes),
            "pool": len(written.pool_labels), "threshold": threshold,
            "anchors": anchor_novelty.anchor_counts(result) if prune else None}
