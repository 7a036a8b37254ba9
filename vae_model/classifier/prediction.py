"""Batched prediction with a loaded classifier, and the scores built on it."""
from __future__ import annotations

import numpy as np

from vae_model.errors import DataError, UsageError

PREDICT_BATCH = 1024


class Classifier:
    """A loaded classifier with batched prediction through a fixed-signature tf.function.

    Every call pads its last chunk to `batch_size`, so predictions depend only on the rows themselves.
    """

    def __init__(self, model, batch_size: int = PREDICT_BATCH, meta: dict | None = None, path: str | None = None):
        import tensorflow as tf

        if batch_size <= 0:
            raise UsageError(f"classifier batch size must be > 0, got {batch_size}")
        self.model, self.meta, self.path, self.batch_size = model, meta or {}, path, batch_size
        h, w = model.inputs[0].shape[1:3]
        self.image_shape = (int(h), int(w))
        self.num_classes = int(model.outputs[0].shape[-1])

        @tf.function(input_signature=[tf.TensorSpec([batch_size, h, w], tf.uint8)])
        def probabilities(images):
            x = tf.cast(images, tf.float32)[..., None]
            return tf.nn.softmax(model(x, training=False), axis=-1)

        self._probabilities = probabilities

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, num_classes) softmax probabilities for uint8 (N, H, W) or (N, H, W, 1) images."""
        from vae_model.inference import _chunks, _pad

        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise DataError(f"classifier {self.path or ''} expects uint8 images of {self.image_shape[0]}x"
                            f"{self.image_shape[1]}, got {images.dtype} {tuple(images.shape[1:])}; "
                            "use a classifier trained on images of this size")
        out = np.empty((len(images), self.num_classes), np.float32)
        for a, b in _chunks(len(images), self.batch_size):
            out[a:b] = self._probabilities(_pad(images[a:b], self.batch_size)).numpy()[: b - a]
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities(images).argmax(axis=1).astype(np.int64)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        labels = np.asarray(labels)
        keep = labels >= 0
        if not keep.any():
            raise DataError("no labeled images to score accuracy on")
        return float((self.predict(np.asarray(images)[keep]) == labels[keep]).mean())


def prob_of_label(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(label) per row; for unlabeled rows (label < 0) the top class probability."""
    labels = np.asarray(labels, np.int64)
    out = probs.max(axis=1)
    lab = labels >= 0
    out[lab] = probs[np.flatnonzero(lab), labels[lab]]
    return out.astype(np.float32)


def evaluate_accuracy(model_or_classifier, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = PREDICT_BATCH) -> float:
    """Top-1 accuracy on the labeled rows (label >= 0) of uint8 (N, H, W) images."""
    clf = model_or_classifier if isinstance(model_or_classifier, Classifier) else Classifier(
        model_or_classifier, batch_size)
    return clf.accuracy(images, labels)
