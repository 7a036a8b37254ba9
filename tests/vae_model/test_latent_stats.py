"""Latent statistics (vae_model/latent_stats.py): exact moments, the posterior pool, the .npz file."""
import io

import numpy as np

from vae_model import latent_stats


def test_latent_stats_match_numpy():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(500, 3)).astype(np.float32) + np.repeat(np.arange(5), 100)[:, None]
    labels = np.repeat(np.arange(5), 100)
    labels[::7] = -1  # unlabeled rows never contribute
    stats = latent_stats.compute(mu, np.zeros_like(mu), labels)
    for i, c in enumerate(stats.classes):
        rows = mu[labels == c].astype(np.float64)
        assert stats.counts[i] == len(rows)
        np.testing.assert_allclose(stats.means[i], rows.mean(0), atol=1e-6)
        np.testing.assert_allclose(stats.covs[i], np.cov(rows.T), atol=1e-5)
    kept = mu[labels >= 0].astype(np.float64)
    np.testing.assert_allclose(stats.global_cov, np.cov(kept.T), atol=1e-5)
    assert stats.global_count == len(kept)
    back = latent_stats.LatentStats.from_bytes(stats.to_bytes())
    np.testing.assert_array_equal(back.covs, stats.covs)


def test_moments_merge_is_exact_in_any_order():
    z = np.random.default_rng(2).normal(3, 2, size=(1000, 4))
    parts = [latent_stats.Moments(4).add_batch(z[a:a + 250]) for a in range(0, 1000, 250)]
    fwd, rev = latent_stats.Moments(4), latent_stats.Moments(4)
    for p in parts:
        fwd.merge(p)
    for p in reversed(parts):
        rev.merge(p)
    assert fwd.mean.tobytes() == rev.mean.tobytes() and fwd.covariance().tobytes() == rev.covariance().tobytes()


def test_the_pool_keeps_up_to_pool_per_class_labeled_encodings_per_class(monkeypatch):
    monkeypatch.setattr(latent_stats, "POOL_PER_CLASS", 30)
    rng = np.random.default_rng(3)
    mu, logvar = rng.normal(size=(200, 2)), rng.normal(size=(200, 2))
    labels = np.repeat([0, 1, -1, 2], [100, 20, 50, 30])
    s = latent_stats.compute(mu, logvar, labels)
    assert np.bincount(s.pool_labels).tolist() == [30, 20, 30]  # capped; unlabeled rows never enter
    for i, c in enumerate(s.pool_labels):  # each pooled row is one of its class's encodings, mean and log-variance
        rows = np.flatnonzero((labels == c) & (np.abs(mu - s.pool_mu[i]).max(axis=1) < 1e-6))
        assert len(rows) == 1 and np.allclose(logvar[rows[0]], s.pool_logvar[i], atol=1e-6)


def test_pool_fields_are_stored_under_the_keys_older_files_use(bundled):
    """Files from before the pool had one name (the bundled latent_stats.npz among them) keep loading."""
    s = bundled.stats()
    assert len(s.pool_labels) == len(s.pool_mu) == len(s.pool_logvar) > 0
    with np.load(io.BytesIO(s.to_bytes())) as z:
        assert {"post_labels", "post_mu", "post_logvar"} <= set(z.files)
        np.testing.assert_array_equal(z["post_mu"], s.pool_mu)
    with np.load(bundled.file("latent_stats.npz")) as z:
        np.testing.assert_array_equal(z["post_labels"], s.pool_labels)
