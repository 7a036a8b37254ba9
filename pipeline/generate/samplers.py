"""Latent samplers. Each draws a work unit's codes from np.random.default_rng([seed, unit_id]) only, so a
unit's latents are a pure function of (sampler params, seed, unit id, class, count)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vae_model.errors import ModelError, UsageError
from vae_model.latent_stats import LatentStats

SAMPLERS = ("prior", "centroid", "classgauss", "posterior", "gmm", "conditional")
NEEDS_STATS = ("centroid", "classgauss", "posterior", "gmm")



@dataclass
class LatentSampler:
    """Picklable sampler: small numpy parameters per class, no model, no TF."""

    name: str
    latent_dim: int
    spread: float = 1.0
    means: dict = field(default_factory=dict)        # class -> (d,)
    chols: dict = field(default_factory=dict)        # class -> (d, d) Cholesky of the class covariance
    pool_mu: dict = field(default_factory=dict)      # class -> (m, d) encoded means of the pool's examples
    pool_sigma: dict = field(default_factory=dict)   # class -> (m, d)
    gmm: dict = field(default_factory=dict)          # class -> (weights (k,), means (k, d), chols (k, d, d))

    def classes(self) -> list[int] | None:
        """Classes this sampler can draw, or None when any class goes (prior/conditional)."""
        if self.name in ("prior", "conditional"):
            return None
        source = {"centroid": self.means, "classgauss": self.chols, "posterior": self.pool_mu, "gmm": self.gmm}
        return sorted(source[self.name])

    def sample(self, rng: np.random.Generator, cls: int, n: int) -> np.ndarray:
        d, s = self.latent_dim, self.spread
        if self.name in ("prior", "conditional"):
            z = rng.standard_normal((n, d)) * (s if self.name == "conditional" else 1.0)
        elif self.name == "centroid":
            z = self.means[cls] + s * rng.standard_normal((n, d))
        elif self.name == "classgauss":
            z = self.means[cls] + s * rng.standard_normal((n, d)) @ self.chols[cls].T
        elif self.name == "posterior":
            mu, sigma = self.pool_mu[cls], self.pool_sigma[cls]
            pick = rng.integers(0, len(mu), size=n)
            z = mu[pick] + s * sigma[pick] * rng.standard_normal((n, d))
        elif self.name == "gmm":
            w, mus, chols = self.gmm[cls]
            comp = rng.choice(len(w), size=n, p=w)
            eps = rng.standard_normal((n, d))
            z = mus[comp] + s * np.einsum("nij,nj->ni", chols[comp], eps)
        else:
            raise AssertionError(self.name)
        return z.astype(np.float32)


def _chol(cov: np.ndarray) -> np.ndarray:
    """Cholesky with a tiny ridge so a rank-deficient class covariance still samples."""
    d = cov.shape[0]
    ridge = 1e-6 * max(float(np.trace(cov)) / d, 1e-12)
    return np.linalg.cholesky(cov + ridge * np.eye(d))


def check_sampler(name: str, spread: float, conditional_model: bool, gmm_components: int = 3) -> None:
    """The sampler options on their own and against the model; UsageError naming the flag."""
    if name not in SAMPLERS:
        raise UsageError(f"--sampler {name!r} is not one of {', '.join(SAMPLERS)}")
    if not (spread > 0 and math.isfinite(spread)):
        raise UsageError(f"--spread must be a positive number, got {spread}")
    if name == "conditional" and not conditional_model:
        raise UsageError("--sampler conditional needs a conditional VAE (train one with configs/conditional.yaml); "
                         "this model is unconditional: use centroid, classgauss, posterior, gmm or prior")
    if name == "gmm" and gmm_components <= 0:
        raise UsageError(f"--gmm-components must be > 0, got {gmm_components}")


def build_sampler(name: str, latent_dim: int, conditional_model: bool, stats: LatentStats | None,
                  spread: float = 1.0, gmm_components: int = 3, seed: int = 0, stats_origin: str = "") -> LatentSampler:
    check_sampler(name, spread, conditional_model, gmm_components)
    sampler = LatentSampler(name, latent_dim, spread)
    if name not in NEEDS_STATS:
        return sampler
    # class statistics of a conditional model are valid too: its samples decode with the label
    if stats is None:
        raise UsageError(f"--sampler {name} needs class statistics, but the model directory has no "
                         "latent_stats.npz; pass --labeled-data SOURCE (or --stats FILE from `vae-augment stats`)")
    if stats.latent_dim != latent_dim:
        raise ModelError(f"class statistics {stats_origin} have latent size {stats.latent_dim}, the model has "
                         f"{latent_dim}; recompute them with `vae-augment stats` for this model")
    for i, c in enumerate(stats.classes.tolist()):
        sampler.means[c] = stats.means[i]
        sampler.chols[c] = _chol(stats.covs[i])
    if name in ("posterior", "gmm"):
        if stats.pool_mu is None or not len(stats.pool_mu):
            raise UsageError(f"--sampler {name} needs per-example encodings, which {stats_origin or 'the stats'} "
                             "lack; recompute them with `vae-augment stats`")
        for c in stats.classes.tolist():
            rows = stats.pool_labels == c
            sampler.pool_mu[c] = stats.pool_mu[rows].astype(np.float64)
            sampler.pool_sigma[c] = np.exp(0.5 * stats.pool_logvar[rows].astype(np.float64))
    if name == "gmm":
        sampler.gmm = fit_gmms(sampler.pool_mu, gmm_components, seed)
    return sampler


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler whose class statistics the job computes itself (`--labeled-data`): small and picklable, it is
    built on each worker from the statistics side input, the same way `build_sampler` builds it on the driver."""

    name: str
    latent_dim: int
    conditional_model: bool
    spread: float
    gmm_components: int
    seed: int
    stats_origin: str

    def build(self, stats: LatentStats) -> LatentSampler:
        return build_sampler(self.name, self.latent_dim, self.conditional_model, stats, self.spread,
                             self.gmm_components, self.seed, self.stats_origin)


def fit_gmms(per_class: dict, n_components: int, seed: int) -> dict:
    """A full-covariance Gaussian mixture per class (scikit-learn), fitted deterministically."""
    from sklearn.mixture import GaussianMixture

    out = {}
    for c, z in sorted(per_class.items()):
        k = max(1, min(n_components, len(z) // 10))
        gm = GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-6).fit(z)
        out[c] = (gm.weights_ / gm.weights_.sum(), gm.means_, np.stack([_chol(cv) for cv in gm.covariances_]))
    return out


@dataclass(frozen=True)
class StatsFileSampler:
    """A sampler the workers build themselves from the class statistics file the driver built it from (the model
    directory's latent_stats.npz, or --stats FILE), checked by sha256.

    What the sampling DoFn pickles instead of a LatentSampler: MNIST's posterior pool makes that 3 MB, which Beam
    bz2-compresses at submission and decompresses for every bundle processor (measured: ~3.5 core-seconds a
    job). `model_path` is portable (worker_env.portable_model_dir); `stats_path` None means the model's own."""

    spec: SamplerSpec
    model_path: str
    stats_path: str | None
    sha256: str

    def build(self) -> LatentSampler:
        import hashlib

        from vae_model.artifacts import read_bytes
        from vae_model.model_dir import STATS, ModelDir

        md = ModelDir.open(self.model_path)
        src = self.stats_path or md.file(STATS)
        data = read_bytes(src)
        got = hashlib.sha256(data).hexdigest()
        if got != self.sha256:
            raise ModelError(f"this worker's class statistics {src} (sha256 {got[:16]}) differ from the ones the job "
                             f"was planned with ({self.sha256[:16]}); stage or install the same files on the workers")
        return self.spec.build(LatentStats.from_bytes(data, src))
