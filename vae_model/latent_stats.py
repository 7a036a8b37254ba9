"""Latent statistics of the encoded labeled data: per-class count, mean, full covariance (and extras the
samplers need), computed with a mergeable, exact (so numerically stable and order-independent) moment accumulator."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from vae_model.errors import ModelError

POOL_PER_CLASS = 1000  # label-preserving variations need real examples; cap keeps the file small
# the pool fields keep their old post_* keys on disk so the bundled latent_stats.npz and files written by
# `stats` before the rename still load
_POOL_KEYS = {"pool_labels": "post_labels", "pool_mu": "post_mu", "pool_logvar": "post_logvar"}


class Moments:
    """Count, sum and sum of outer products of latent vectors, held EXACTLY as integers on a 2**-20 grid.

    Exact integer sums make `merge` associative and commutative, so Beam's CombinePerKey gives the same bits
    whatever the bundle order or worker count (the job's records depend on these statistics), and the
    covariance n*S2 - S1 S1^T is formed without cancellation before the one final division.
    """

    SCALE_BITS = 20
    __slots__ = ("count", "s1", "s2")

    def __init__(self, dim: int):
        self.count = 0
        self.s1 = [0] * dim
        self.s2 = [[0] * dim for _ in range(dim)]

    @property
    def dim(self) -> int:
        return len(self.s1)

    def add_batch(self, z: np.ndarray) -> "Moments":
        q = np.rint(np.asarray(z, dtype=np.float64) * (1 << self.SCALE_BITS))
        if not np.isfinite(q).all():
            raise ModelError("encoded latent means contain NaN or Inf; the encoder is broken, retrain it")
        q = q.astype(np.int64)
        peak = int(np.abs(q).max(initial=1)) or 1
        rows = max(1, (1 << 62) // (peak * peak))  # rows per chunk that cannot overflow int64 products
        for a in range(0, len(q), rows):
            c = q[a:a + rows]
            s1 = c.sum(axis=0, dtype=np.int64).tolist()
            s2 = (c.T @ c).tolist()
            self.count += len(c)
            self.s1 = [x + y for x, y in zip(self.s1, s1)]
            self.s2 = [[x + y for x, y in zip(r1, r2)] for r1, r2 in zip(self.s2, s2)]
        return self

    def merge(self, other: "Moments") -> "Moments":
        self.count += other.count
        self.s1 = [x + y for x, y in zip(self.s1, other.s1)]
        self.s2 = [[x + y for x, y in zip(r1, r2)] for r1, r2 in zip(self.s2, other.s2)]
        return self

    @property
    def mean(self) -> np.ndarray:
        if not self.count:
            return np.zeros(self.dim)
        return np.array([float(x) for x in self.s1]) / (self.count * (1 << self.SCALE_BITS))

    def covariance(self) -> np.ndarray:
        """Sample covariance (ddof=1); zeros for fewer than two points."""
        n = self.count
        if n < 2:
            return np.zeros((self.dim, self.dim))
        exact = [[n * s2 - a * b for s2, b in zip(row, self.s1)] for row, a in zip(self.s2, self.s1)]
        denom = float(n) * (n - 1) * float(1 << (2 * self.SCALE_BITS))
        return np.array([[float(x) for x in row] for row in exact]) / denom


@dataclass
class LatentStats:
    classes: np.ndarray        # int64 (K,)
    counts: np.ndarray         # int64 (K,)
    means: np.ndarray          # float64 (K, d)
    covs: np.ndarray           # float64 (K, d, d)
    global_count: int
    global_mean: np.ndarray
    global_cov: np.ndarray
    # the posterior pool: encodings of up to POOL_PER_CLASS labeled examples per class, for the posterior sampler
    pool_labels: np.ndarray | None = None   # (M,)
    pool_mu: np.ndarray | None = None       # (M, d)
    pool_logvar: np.ndarray | None = None   # (M, d)

    @property
    def latent_dim(self) -> int:
        return self.means.shape[1]

    def index_of(self, cls: int) -> int:
        hits = np.flatnonzero(self.classes == cls)
        if not len(hits):
            raise KeyError(cls)
        return int(hits[0])

    def to_bytes(self) -> bytes:
        arrays = {_POOL_KEYS.get(k, k): np.asarray(v) for k, v in self.__dict__.items() if v is not None}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "latent statistics") -> "LatentStats":
        try:
            field_of = {disk: name for name, disk in _POOL_KEYS.items()}
            with np.load(io.BytesIO(data)) as z:
                kw = {field_of.get(k, k): z[k] for k in z.files}
            kw["global_count"] = int(kw["global_count"])
            return cls(**kw)
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise ModelError(f"{name} is not a latent-statistics .npz ({type(e).__name__}: {e}); "
                             "recompute it with `vae-augment stats`") from None


def from_moments(per_class: dict[int, Moments]) -> LatentStats:
    classes = np.array(sorted(per_class), dtype=np.int64)
    total = Moments(next(iter(per_class.values())).mean.shape[0])
    for c in classes:
        total.merge(per_class[c])
    return LatentStats(
        classes=classes,
        counts=np.array([per_class[c].count for c in classes], dtype=np.int64),
        means=np.stack([per_class[c].mean for c in classes]),
        covs=np.stack([per_class[c].covariance() for c in classes]),
        global_count=total.count, global_mean=total.mean, global_cov=total.covariance())


def compute(mu: np.ndarray, log_var: np.ndarray, labels: np.ndarray, seed: int = 0) -> LatentStats:
    """Stats of encoded means over labeled rows (label >= 0); unlabeled rows never contribute."""
    keep = labels >= 0
    mu, log_var, labels = mu[keep], log_var[keep], labels[keep]
    if not len(labels):
        raise ModelError("no labeled examples: class statistics need some labeled data (labels >= 0)")
    per_class = {int(c): Moments(mu.shape[1]).add_batch(mu[labels == c]) for c in np.unique(labels)}
    stats = from_moments(per_class)
    rng = np.random.default_rng([seed, 0x5747])
    picks = []
    for c in stats.classes:
        idx = np.flatnonzero(labels == c)
        picks.append(np.sort(rng.permutation(idx)[:POOL_PER_CLASS]))
    picks = np.concatenate(picks)
    stats.pool_labels = labels[picks].astype(np.int64)
    stats.pool_mu = mu[picks].astype(np.float32)
    stats.pool_logvar = log_var[picks].astype(np.float32)
    return stats
