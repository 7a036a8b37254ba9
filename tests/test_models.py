import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from vae_model import latent_stats
from vae_model.config import Config, from_dict, load_config
from vae_model.errors import ConfigError
from vae_model.layers import Sampling
from vae_model.models import VAE, build_vae

CONFIGS = sorted(p for p in glob.glob("configs/*.yaml") if not p.endswith("classifier.yaml"))  # VAE configs


def test_there_is_a_config_per_seed_plus_conditional_and_default():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"dense_seed000.yaml", "dense_seed001.yaml", "dense_seed003.yaml", "conv_seed002.yaml",
            "conv_seed004.yaml", "conditional.yaml", "default.yaml"} <= names


def test_default_yaml_equals_builtin_defaults():
    assert load_config("configs/default.yaml").to_dict() == Config().validate().to_dict()


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_builds_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    vae = build_vae(cfg)
    m = cfg.model
    rng = np.random.default_rng(0)
    x = rng.random((3, 28, 28, 1), dtype=np.float32)
    y = np.eye(m.num_classes, dtype=np.float32)[[1, 4, 7]]
    z = rng.standard_normal((3, m.latent_dim)).astype(np.float32)
    enc_in = [x, y] if m.conditional else x
    dec_in = [z, y] if m.conditional else z
    out = vae.decoder(dec_in)
    assert out.shape == (3, 28, 28, 1)
    for part, inp in ((vae.encoder, enc_in), (vae.decoder, dec_in)):
        part.save(tmp_path / f"{part.name}.keras")
        loaded = keras.models.load_model(tmp_path / f"{part.name}.keras", compile=False)
        for a, b in zip(keras.tree.flatten(part(inp)), keras.tree.flatten(loaded(inp))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the whole VAE (custom class + Sampling) round-trips through get_config/from_config
    vae.save(tmp_path / "vae.keras")
    again = keras.models.load_model(tmp_path / "vae.keras", compile=False)
    assert isinstance(again, VAE) and again.conditional == m.conditional
    np.testing.assert_array_equal(np.asarray(again.decoder(dec_in)), np.asarray(out))


def test_sampling_layer_is_seeded_and_checks_its_argument():
    mean, log_var = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)
    a = np.asarray(Sampling(seed=7)([mean, log_var]))
    b = np.asarray(Sampling(seed=7)([mean, log_var]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, np.asarray(Sampling(seed=8)([mean, log_var])))
    with pytest.raises(ValueError, match="Expected `seed`"):
        Sampling(seed=-1)
    assert Sampling.from_config(Sampling(seed=3).get_config()).seed == 3


@pytest.mark.parametrize("data,needle", [
    ({"model": {"latent_dimm": 2}}, "unknown config key model.latent_dimm"),
    ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
    ({"train": {"epochs": -1}}, "train.epochs must be > 0"),
    ({"train": {"loss": "hinge"}}, "train.loss must be one of bce, mse"),
    ({"model": {"kind": "conv", "conv_strides": [2, 2, 2], "conv_filters": [8, 8, 8]}}, "does not divide"),
    ({"train": {"validation_split": 1.5}}, "validation_split"),
])
def test_bad_configs_are_rejected_with_the_key(data, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(data)


def test_set_overrides_are_typed(tmp_path):
    cfg = load_config("configs/dense_seed000.yaml", ["train.epochs=3", "model.hidden=[64, 32]", "latent_dim=4"])
    assert (cfg.train.epochs, cfg.model.hidden, cfg.model.latent_dim) == (3, [64, 32], 4)
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("configs/dense_seed000.yaml", ["train.epochs=1.5"])
    # YAML 1.1 reads 1e-4 (no dot) as a string; a float field still takes it, in --set and in files
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    sci = tmp_path / "sci.yaml"
    sci.write_text("train:\n  learning_rate: 5E-4\n")
    assert load_config(str(sci)).train.learning_rate == 5e-4
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["train.learning_rate=fast"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


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


def test_short_training_lowers_loss_and_writes_a_complete_model_dir(tiny_model_dir):
    from vae_model.artifacts import sha256_file
    meta = json.load(open(os.path.join(tiny_model_dir, "model.json")))
    hist = json.load(open(os.path.join(tiny_model_dir, "history.json")))
    assert meta["latent_dim"] == 2 and meta["conditional"] is False
    for name, digest in meta["sha256"].items():
        assert sha256_file(os.path.join(tiny_model_dir, name)) == digest
    assert meta["model_id"] == meta["sha256"]["decoder.keras"][:16]
    assert set(meta["versions"]) >= {"tensorflow", "keras", "apache-beam", "numpy"}
    assert meta["command"].startswith("vae-augment train")
    assert meta["metrics"]["test"]["images"] == 2000
    for png in ("loss_curves.png", "latent_scatter.png", "manifold.png", "class_samples.png"):
        assert os.path.getsize(os.path.join(tiny_model_dir, "plots", png)) > 1000
    assert len(hist["loss"]) == 1


def test_training_lowers_the_loss(tmp_path):
    from vae_model.training import train
    cfg = load_config("configs/dense_seed003.yaml", ["train.epochs=3", "train.batch_size=64",
                                                     "train.data=mnist?limit=1500"])
    meta = train(cfg, str(tmp_path / "m"), verbose=0)
    loss = json.load(open(tmp_path / "m" / "history.json"))["loss"]
    assert loss[-1] < loss[0] * 0.9
    assert meta["metrics"]["test"]["unit"] == "sum of squared error"


def test_bundled_model_meets_the_elbo_bound_on_the_mnist_test_set(bundled):
    """Recomputes -ELBO on all 10,000 real MNIST test digits with the shipped encoder/decoder."""
    import tensorflow as tf
    from vae_model.data import load_source
    from vae_model.losses import kl_divergence, reconstruction_loss
    test = load_source("mnist").test
    enc, dec = bundled.encoder, bundled.decoder
    x = tf.constant(test.images[..., None].astype(np.float32) / 255.0)
    total = 0.0
    for a in range(0, len(x), 2000):
        mu, lv = enc(x[a:a + 2000])
        z = mu + tf.exp(0.5 * lv) * tf.random.stateless_normal(tf.shape(mu), seed=[0, a])
        total += float(tf.reduce_sum(reconstruction_loss(x[a:a + 2000], dec(z), "bce") + kl_divergence(mu, lv)))
    neg_elbo = total / len(x)
    assert neg_elbo <= 100.0, neg_elbo
    assert os.path.getsize(bundled.file("decoder.keras")) < 8_000_000


def test_bundled_decoder_loads_without_this_package(bundled):
    code = ("import sys, keras, numpy as np; m = keras.models.load_model(sys.argv[1], compile=False); "
            "out = m(np.zeros((2, m.inputs[0].shape[-1]), 'float32')); "
            "assert 'vae_model' not in sys.modules and 'pipeline' not in sys.modules; print(tuple(out.shape))")
    res = subprocess.run([sys.executable, "-c", code, bundled.file("decoder.keras")], capture_output=True,
                         text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(2, 28, 28, 1)" in res.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("path", [p for p in CONFIGS if "default" not in p])
def test_each_config_trains_one_epoch_through_the_cli(path, tmp_path):
    from click.testing import CliRunner
    from pipeline.cli import cli
    res = CliRunner().invoke(cli, ["train", "--config", path, "--set", "epochs=1", "--data", "mnist?limit=600",
                                   "--out", str(tmp_path / "m"), "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["epochs_run"] == 1 and np.isfinite(meta["metrics"]["test"]["neg_elbo"])
