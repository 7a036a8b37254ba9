"""The reference CNN, built from plain Keras layers so `classifier.keras` loads without this package."""
from __future__ import annotations

from vae_model.classifier.config import ClassifierConfig


def build_classifier(image_shape: tuple[int, int], cfg: ClassifierConfig):
    """The reference CNN (uncompiled). Input: float32 (H, W, 1) raw pixel values 0..255; output: logits."""
    import keras

    m, seed = cfg.model, cfg.train.seed
    L = keras.layers
    init = iter(range(1000))

    def glorot():
        return keras.initializers.GlorotUniform(seed=seed * 1000 + next(init))

    layers = [keras.Input((*image_shape, 1), name="image"), L.Rescaling(1.0 / 255.0, name="scale")]
    for i, f in enumerate(m.filters):
        layers += [L.Conv2D(f, m.kernel_size, activation="relu", kernel_initializer=glorot(), name=f"conv{i + 1}"),
                   L.MaxPooling2D(2, name=f"pool{i + 1}")]
    layers += [L.Flatten(name="flatten"), L.Dropout(m.dropout, seed=seed * 1000 + 500, name="dropout1"),
               L.Dense(m.dense_units, activation="relu", kernel_initializer=glorot(), name="dense"),
               L.Dropout(m.dropout, seed=seed * 1000 + 501, name="dropout2"),
               L.Dense(m.num_classes, kernel_initializer=glorot(), name="logits")]
    return keras.Sequential(layers, name=cfg.name)
