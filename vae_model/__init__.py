"""Keras models, losses, training, data sources and latent statistics for vae-augment.

Deliberately light: importing `vae_model` (or `vae_model.errors`) must not import Keras; custom Keras objects are
registered where `.keras` files are loaded (`artifacts.load_keras`) or models are built (`models`).
"""
