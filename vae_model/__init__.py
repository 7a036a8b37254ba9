"""Keras models, losses, training, data sources and latent statistics for vae-augment.

Importing the package registers its custom Keras objects (Sampling, VAE), so saved `.keras`
files that use them load with `keras.models.load_model` afterwards.
"""
from vae_model import layers as _layers  # noqa: F401
from vae_model import models as _models  # noqa: F401
