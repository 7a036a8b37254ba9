"""The VAE (vae_model/models.py, layers.py, losses.py): every config builds and round-trips through .keras, and
the bundled model meets its bound and loads without this package."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from vae_model.config import bundled_configs, load_config
from vae_model.layers import Sampling
from vae_model.models import VAE, build_vae

FAST = ("default", "conditional", "conv_seed002")  # one of each family; the rest only in the full run
VAE_CONFIGS = [n if n in FAST else pytest.param(n, marks=pytest.mark.e2e)
               for n in sorted(bundled_configs()) if n != "classifier"]


@pytest.mark.parametrize("name", VAE_CONFIGS)
def test_every_config_builds_and_round_trips(name, tmp_path):
    cfg = load_config(name)
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


@pytest.mark.e2e
def test_bundled_decoder_loads_without_this_package(bundled):
    code = ("import sys, keras, numpy as np; m = keras.models.load_model(sys.argv[1], compile=False); "
            "out = m(np.zeros((2, m.inputs[0].shape[-1]), 'float32')); "
            "assert 'vae_model' not in sys.modules and 'pipeline' not in sys.modules; print(tuple(out.shape))")
    res = subprocess.run([sys.executable, "-c", code, bundled.file("decoder.keras")], capture_output=True,
                         text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(2, 28, 28, 1)" in res.stdout
