"""The classifier filter used inside the generate job (sample -> decode -> filter -> top up per work unit).

`ClassifierFilter` is small and picklable: it holds only the classifier directory, the threshold and the batch
size. The Keras model is loaded in `setup()` (once per worker process, shared between DoFn instances through
`apache_beam.utils.shared.Shared`, like the decoder in pipeline/generate/transforms.py) and called through a
fixed-signature `tf.function` on padded batches, so a record's verdict depends only on its own image.

A record is accepted when the reference classifier's top class is the record's label AND its probability is at
least `min_confidence`. Unlabeled records (label -1, prior sampler) are judged by the top class probability alone.
"""
from __future__ import annotations

import math

import numpy as np
from apache_beam.utils import shared

from pipeline.generate.worker_env import enable_gpu_memory_growth
from vae_model.errors import DataError, ModelError, UsageError


DEFAULT_FILTER_CONFIDENCE = 0.9


class _ClassifierHandle:
    """Weak-referenceable holder so `Shared` can cache one classifier per process."""

    def __init__(self, classifier):
        self.classifier = classifier


class ClassifierFilter:
    """`classifier_dir`: a `train-classifier` directory; None or "bundled" = the bundled classifier."""

    def __init__(self, classifier_dir: str | None = None, min_confidence: float = DEFAULT_FILTER_CONFIDENCE,
                 batch_size: int = 1024):
        if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not (
                math.isfinite(min_confidence) and 0.0 < min_confidence <= 1.0):
            raise UsageError(f"--min-confidence must be in (0, 1], got {min_confidence!r}; e.g. 0.9 keeps records "
                             "the reference classifier gives >= 90% to their label")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise UsageError(f"classifier filter batch size must be a positive integer, got {batch_size!r}")
        self.classifier_dir = classifier_dir
        self.min_confidence = float(min_confidence)
        self.batch_size = batch_size
        self._shared = shared.Shared()
        self._handle = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None  # never ship a loaded model; workers load their own in setup()
        return state

    def check(self, num_classes: int | None = None, image_shape: tuple[int, int] | None = None) -> dict:
        """Driver-side check before the job starts (reads classifier.json only, no TensorFlow): the directory is
        valid and matches the generator's classes and image size. Returns the classifier's metadata."""
        from vae_model.artifacts import resolve_dir
        from vae_model.classifier import bundled_classifier_dir, read_classifier_meta

        meta = read_classifier_meta(self.classifier_dir)
        where = resolve_dir(self.classifier_dir, bundled_classifier_dir)
        if image_shape is not None and tuple(meta["image_shape"]) != tuple(image_shape):
            raise ModelError(f"classifier {where} takes {meta['image_shape'][0]}x{meta['image_shape'][1]} images but "
                             f"the model makes {image_shape[0]}x{image_shape[1]}; train a classifier on data of "
                             "this size with `vae-augment train-classifier`")
        if num_classes is not None and meta["num_classes"] < num_classes:
            raise ModelError(f"classifier {where} knows {meta['num_classes']} classes but the model has "
                             f"{num_classes}; train a classifier on data with every class")
        return meta

    def setup(self):
        """Load (or reuse this process's) classifier. Call from DoFn.setup()."""
        def load():
            from vae_model.classifier import load_classifier
            return _ClassifierHandle(load_classifier(self.classifier_dir, self.batch_size))

        enable_gpu_memory_growth()
        self._handle = self._shared.acquire(load, tag=f"classifier:{self.classifier_dir}:{self.batch_size}")

    @property
    def classifier(self):
        if self._handle is None:
            self.setup()
        return self._handle.classifier

    def accept(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask bool (n,), prob_of_label float32 (n,)) for uint8 (n, H, W) images and int labels (-1 = unlabeled).

        mask = argmax == label and p(label) >= min_confidence (unlabeled: p(top class) >= min_confidence).
        """
        from vae_model.classifier import prob_of_label

        labels = np.asarray(labels, np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not len(labels):
            return np.zeros(0, bool), np.zeros(0, np.float32)
        clf = self.classifier
        if labels.max() >= clf.num_classes or labels.min() < -1:
            raise DataError(f"label {labels.max() if labels.max() >= clf.num_classes else labels.min()} is not a "
                            f"class of classifier {clf.path} (0..{clf.num_classes - 1}); use a matching classifier")
        probs = clf.probabilities(images)
        p = prob_of_label(probs, labels)
        agrees = (probs.argmax(axis=1) == labels) | (labels < 0)
        return agrees & (p >= self.min_confidence), p
