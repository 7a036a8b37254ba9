"""Pruning posterior-pool anchors whose reconstruction nearly copies a training image
(pipeline/generate/anchor_novelty.py)."""
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.generate.anchor_novelty import auto_threshold, parse_threshold, prune_anchors
from vae_model.errors import DataError, UsageError
from vae_model.latent_stats import LatentStats


def _stats(pool_labels):
    n, d = len(pool_labels), 2
    return LatentStats(classes=np.array([0, 1]), counts=np.array([5, 5]), means=np.zeros((2, d)),
                       covs=np.stack([np.eye(d)] * 2), global_count=10, global_mean=np.zeros(d),
                       global_cov=np.eye(d), pool_labels=np.array(pool_labels),
                       pool_mu=np.arange(n * d, dtype=np.float32).reshape(n, d),
                       pool_logvar=np.zeros((n, d), np.float32))


def test_anchors_decoding_onto_a_training_image_are_dropped():
    train = np.zeros((3, 4, 4), np.uint8)
    train[1, 0, 0] = 255
    train[2] = 255
    # anchor i decodes to recon[i]: 0 and 2 copy training images, 1 is 1.0 away (one pixel), 3 is 2.0 away
    recon = np.zeros((4, 4, 4), np.uint8)
    recon[0] = train[1]
    recon[1, 3, 3] = 255
    recon[2] = train[2]
    recon[3, 1, :] = 255
    recon[3, 0, 0] = 255
    stats = _stats([0, 0, 1, 1])
    calls = []

    def decode(z):
        calls.append(z.copy())
        return recon[: len(z)], 0

    out, report = prune_anchors(stats, decode, train, threshold=0.5)
    np.testing.assert_array_equal(calls[0], stats.pool_mu)  # the anchors' means, in one batch
    np.testing.assert_array_equal(out.pool_labels, [0, 1])
    np.testing.assert_array_equal(out.pool_mu, stats.pool_mu[[1, 3]])
    assert report == {"0": {"kept": 1, "dropped": 1}, "1": {"kept": 1, "dropped": 1}}
    np.testing.assert_array_equal(out.means, stats.means)  # moments describe the data and stay
    assert len(stats.pool_mu) == 4  # the input is not modified
    # one pixel away is 1.0: a threshold above it drops anchor 1 as well, leaving class 0 empty
    with pytest.raises(DataError, match="class 0"):
        prune_anchors(stats, decode, train, threshold=1.5)


def test_auto_threshold_is_the_first_percentile_of_test_to_train_distances():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (50, 4, 4), dtype=np.uint8)
    test = rng.integers(0, 256, (300, 4, 4), dtype=np.uint8)
    test[:10] = train[:10]  # 3.3% exact copies: the 1st percentile is 0
    assert auto_threshold(train, test, 0, "src") == 0.0
    far = auto_threshold(train, test[10:], 0, "src")
    assert far > 0
    with pytest.raises(UsageError, match="test split"):
        auto_threshold(train, None, 0, "src")


@pytest.mark.parametrize("bad", ["-1", "x", "nan", "inf"])
def test_bad_thresholds_are_usage_errors(bad):
    assert parse_threshold("auto") is None and parse_threshold("1.25") == 1.25
    with pytest.raises(UsageError, match="--near-dup-threshold"):
        parse_threshold(bad)


@pytest.mark.e2e
def test_stats_cli_prunes_and_reports(tmp_path):
    from pipeline.cli import cli

    out = tmp_path / "s.npz"
    res = CliRunner().invoke(cli, ["stats", "--data", "mnist?limit=600", "--out", str(out), "--near-dup-threshold",
                                   "auto", "--direct_running_mode=in_memory"])
    assert res.exit_code == 0, res.output
    s = LatentStats.from_bytes(out.read_bytes())
    dropped = sum(int(part.split("/")[0].split(": ")[1]) for part in
                  res.output.splitlines()[0].split("dropped: ")[1].split(", "))
    assert len(s.pool_labels) == 600 - dropped
    res = CliRunner().invoke(cli, ["stats", "--data", "mnist?limit=100", "--out", str(tmp_path / "b.npz"),
                                   "--near-dup-threshold", "-2"])
    assert res.exit_code == 2 and "--near-dup-threshold" in res.output
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.e2e
def test_the_stats_job_prunes_exactly_as_prune_anchors_does(tmp_path, bundled, local_args):
    """write_stats_file(near_dup_threshold=...) = its unpruned statistics through prune_anchors, and the per-class
    report (Beam counters) matches the file."""
    from pipeline.generate.class_stats import write_stats_file
    from vae_model.data import load_source
    from vae_model.inference import BatchDecoder

    source = "mnist?limit=500"
    plain = write_stats_file(None, source, str(tmp_path / "plain.npz"), 3, beam_args=local_args)
    pruned = write_stats_file(None, source, str(tmp_path / "pruned.npz"), 3, near_dup_threshold="auto",
                              beam_args=local_args)
    assert plain["threshold"] is None and pruned["threshold"] > 0
    want, report = prune_anchors(LatentStats.from_bytes((tmp_path / "plain.npz").read_bytes()),
                                 BatchDecoder(bundled.decoder, 4096), load_source(source, seed=3).train.images,
                                 pruned["threshold"])
    got = LatentStats.from_bytes((tmp_path / "pruned.npz").read_bytes())
    assert got.to_bytes() == want.to_bytes()
    assert pruned["anchors"] == report and pruned["pool"] == plain["pool"] - sum(v["dropped"] for v in report.values())


def test_bundled_pool_keeps_no_anchor_that_decodes_onto_a_training_one(bundled):
    """The bundled latent_stats.npz was pruned (model.json records how); check class 1, where the pruning bit,
    against the class-1 training images, and that model.json's checksum is the file's."""
    from pipeline.evaluation.distances import nearest_neighbours
    from vae_model.data import load_source
    from vae_model.inference import BatchDecoder
    from vae_model.artifacts import sha256_file

    meta = bundled.meta["latent_stats"]
    assert bundled.meta["sha256"]["latent_stats.npz"] == sha256_file(bundled.file("latent_stats.npz"))
    s = bundled.stats()
    ones = s.pool_mu[s.pool_labels == 1]
    assert len(ones) == 1000 - meta["anchors_dropped"]["1"]
    recon, _ = BatchDecoder(bundled.decoder, 512)(ones)
    train = load_source("mnist").train
    d, _ = nearest_neighbours(recon, train.images[train.labels == 1])
    assert (d / 255.0).min() >= meta["near_dup_threshold"] - 1e-3
