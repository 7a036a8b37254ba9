"""The VAE family: dense and conv encoders/decoders (the seeds' architectures), optionally label-conditioned.

Encoder and decoder are plain functional Keras models built from Keras' own layers, so `decoder.keras`
loads with `keras.models.load_model` in a process that never imports this package. The encoder outputs
(z_mean, z_log_var); sampling lives in the VAE wrapper.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers, ops

from vae_model.config import Config, ModelConfig
from vae_model.layers import Sampling
from vae_model.losses import kl_divergence, reconstruction_loss


def _initializer(cfg: ModelConfig):
    if cfg.initializer == "variance_scaling":
        return keras.initializers.VarianceScaling()
    return cfg.initializer


def build_encoder(cfg: ModelConfig) -> keras.Model:
    size = cfg.image_size
    image = keras.Input(shape=(size, size, 1), name="image")
    inputs = [image]
    init = _initializer(cfg)
    if cfg.kind == "dense":
        h = layers.Flatten(name="flatten")(image)
        if cfg.conditional:
            label = keras.Input(shape=(cfg.num_classes,), name="label_onehot")
            inputs.append(label)
            h = layers.Concatenate(name="concat_label")([h, label])
        for i, units in enumerate(cfg.hidden):
            h = layers.Dense(units, activation=cfg.activation, kernel_initializer=init, name=f"enc_dense_{i}")(h)
    else:
        h = image
        for i, (f, s) in enumerate(zip(cfg.conv_filters, cfg.conv_strides)):
            h = layers.Conv2D(f, cfg.kernel_size, strides=s, padding="same", activation=cfg.activation,
                              kernel_initializer=init, name=f"enc_conv_{i}")(h)
        h = layers.Flatten(name="flatten")(h)
        if cfg.conditional:
            label = keras.Input(shape=(cfg.num_classes,), name="label_onehot")
            inputs.append(label)
            h = layers.Concatenate(name="concat_label")([h, label])
        h = layers.Dense(cfg.dense_units, activation=cfg.activation, kernel_initializer=init, name="enc_dense")(h)
    z_mean = layers.Dense(cfg.latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(cfg.latent_dim, name="z_log_var")(h)
    return keras.Model(inputs if cfg.conditional else image, [z_mean, z_log_var], name="encoder")


def build_decoder(cfg: ModelConfig) -> keras.Model:
    size = cfg.image_size
    z = keras.Input(shape=(cfg.latent_dim,), name="z")
    inputs = [z]
    h = z
    if cfg.conditional:
        label = keras.Input(shape=(cfg.num_classes,), name="label_onehot")
        inputs.append(label)
        h = layers.Concatenate(name="concat_label")([z, label])
    init = _initializer(cfg)
    if cfg.kind == "dense":
        for i, units in enumerate(reversed(cfg.hidden)):
            h = layers.Dense(units, activation=cfg.activation, kernel_initializer=init, name=f"dec_dense_{i}")(h)
        h = layers.Dense(size * size, activation="sigmoid", name="pixels")(h)
        out = layers.Reshape((size, size, 1), name="image")(h)
    else:
        filters = cfg.decoder_filters or list(reversed(cfg.conv_filters))
        strides = cfg.decoder_strides or list(reversed(cfg.conv_strides))
        start = size // math.prod(strides)
        # seed 002 starts from the encoder's last feature map; seed 004 likewise (14x14x64)
        channels = cfg.conv_filters[-1]
        h = layers.Dense(start * start * channels, activation=cfg.activation, kernel_initializer=init,
                         name="dec_dense")(h)
        h = layers.Reshape((start, start, channels), name="dec_reshape")(h)
        for i, (f, s) in enumerate(zip(filters, strides)):
            h = layers.Conv2DTranspose(f, cfg.kernel_size, strides=s, padding="same", activation=cfg.activation,
                                       kernel_initializer=init, name=f"dec_convt_{i}")(h)
        out = layers.Conv2D(1, cfg.kernel_size, padding="same", activation="sigmoid", name="image")(h)
    return keras.Model(inputs if cfg.conditional else z, out, name="decoder")


@keras.saving.register_keras_serializable(package="vae_augment")
class VAE(keras.Model):
    """Encoder + Sampling + decoder, trained on the negative ELBO (reconstruction + beta * KL)."""

    def __init__(self, encoder, decoder, conditional=False, num_classes=10, loss="bce", beta=1.0, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        if loss not in ("bce", "mse"):
            raise ValueError(f"Expected `loss` to be 'bce' or 'mse'. Received: loss={loss}")
        if not beta > 0:
            raise ValueError(f"Expected `beta` > 0. Received: beta={beta}")
        self.encoder = encoder
        self.decoder = decoder
        self.conditional = bool(conditional)
        self.num_classes = int(num_classes)
        self.loss_kind = loss
        self.beta = float(beta)
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def _split(self, data):
        """Batches are images (unconditional) or (images, one-hot labels) (conditional)."""
        if self.conditional:
            x, y = data
            return x, [x, y], y
        x = data[0] if isinstance(data, (tuple, list)) else data
        return x, x, None

    def _forward(self, enc_in, y, training):
        z_mean, z_log_var = self.encoder(enc_in, training=training)
        z = self.sampling([z_mean, z_log_var])
        x_hat = self.decoder([z, y] if self.conditional else z, training=training)
        return z_mean, z_log_var, x_hat

    def call(self, inputs, training=False):
        x, enc_in, y = self._split(inputs)
        return self._forward(enc_in, y, training)[2]

    def compute_losses(self, data, training=False):
        x, enc_in, y = self._split(data)
        z_mean, z_log_var, x_hat = self._forward(enc_in, y, training)
        rec = reconstruction_loss(x, x_hat, self.loss_kind)
        kl = kl_divergence(z_mean, z_log_var)
        return rec, kl

    def _update(self, rec, kl):
        total = ops.mean(rec + self.beta * kl)
        self.total_loss_tracker.update_state(total)
        self.reconstruction_loss_tracker.update_state(ops.mean(rec))
        self.kl_loss_tracker.update_state(ops.mean(kl))
        return total

    def train_step(self, data):
        with tf.GradientTape() as tape:
            rec, kl = self.compute_losses(data, training=True)
            total = ops.mean(rec + self.beta * kl)
        grads = tape.gradient(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self._update(rec, kl)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        rec, kl = self.compute_losses(data, training=False)
        self._update(rec, kl)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "conditional": self.conditional,
            "num_classes": self.num_classes,
            "loss": self.loss_kind,
            "beta": self.beta,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


def build_vae(config: Config) -> VAE:
    m = config.model
    keras.utils.set_random_seed(config.train.seed)
    return VAE(build_encoder(m), build_decoder(m), conditional=m.conditional, num_classes=m.num_classes,
               loss=config.train.loss, beta=config.train.beta, seed=config.train.seed, name="vae")
