"""Class statistics of a labeled data source, computed inside Beam: encode in batches, then CombinePerKey
with the exact (hence order-independent) moment accumulator; a deterministic per-class pool of
per-example encodings (smallest keyed hashes) feeds the posterior and gmm samplers."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np

from vae_model.latent_stats import POSTERIOR_PER_CLASS, LatentStats, Moments, from_moments

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
        self._model_path, self._source, self._seed = model_path, source, seed

    def setup(self):
        from vae_model.data import load_source
        from vae_model.inference import BatchEncoder
        from vae_model.model_dir import ModelDir

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
    stats.post_labels = np.array(labels, np.int64)
    stats.post_mu = np.array(mus, np.float32)
    stats.post_logvar = np.array(lvs, np.float32)
    return stats


class ComputeClassStats(beam.PTransform):
    """PCollection of chunk indices -> one LatentStats."""

    def __init__(self, model_path: str, source: str, seed: int, dim: int, label=None,
                 pool_per_class: int = POSTERIOR_PER_CLASS):
        super().__init__(label)
        self._model_path, self._source, self._seed, self._dim = model_path, source, seed, dim
        self._pool = pool_per_class

    def expand(self, chunks):
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

    @staticmethod
    def run_local(md, source: str, seed: int, beam_args=(), out_path: str | None = None,
                  pool_per_class: int = POSTERIOR_PER_CLASS) -> LatentStats:
        """Run the stats transform as its own small local Beam job and return (and optionally save) the result.

        `pool_per_class`: encodings kept per class for the posterior and gmm samplers (a keyed-hash sample)."""
        from apache_beam.options.pipeline_options import PipelineOptions

        from pipeline.generate.runners import make_runner
        from vae_model.data import load_source
        from vae_model.errors import DataError, UsageError

        if not isinstance(pool_per_class, int) or pool_per_class < 1:
            raise UsageError(f"--pool-per-class must be an integer >= 1, got {pool_per_class!r}")

        data = load_source(source, seed=seed).train.labeled  # validates the source before Beam starts
        if not len(data):
            raise DataError(f"{source} has no labeled rows; class statistics need labels")
        n_chunks = -(-len(data) // CHUNK)
        options = PipelineOptions([a for a in beam_args if a.startswith("--direct")])
        tmp_dir = tempfile.mkdtemp(prefix="vae-augment-stats-")
        tmp = os.path.join(tmp_dir, "stats.npz")
        try:
            with beam.Pipeline(runner=make_runner(options), options=options) as p:
                (p
                 | "Chunks" >> beam.Create(list(range(n_chunks)))
                 | "Shuffle" >> beam.Reshuffle()
                 | "ClassStats" >> ComputeClassStats(md.path, source, seed, md.latent_dim,
                                                   pool_per_class=pool_per_class)
                 | "Save" >> beam.Map(save_stats, tmp))
            with open(tmp, "rb") as f:
                blob = f.read()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if out_path:
            from apache_beam.io.filesystems import FileSystems
            with FileSystems.create(out_path) as f:
                f.write(blob)
        return LatentStats.from_bytes(blob, source)


def save_stats(stats: LatentStats, path: str) -> None:
    from apache_beam.io.filesystems import FileSystems
    with FileSystems.create(path) as f:
        f.write(stats.to_bytes())
