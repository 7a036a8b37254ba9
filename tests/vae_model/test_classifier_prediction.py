"""Prediction with a loaded classifier (vae_model/classifier/prediction.py): batched, row-independent, scored."""
import os

import numpy as np
import pytest

from vae_model.classifier import (CLASSIFIER, Classifier, ClassifierConfig, bundled_classifier_dir,
                                  classifier_config_from_dict, evaluate_accuracy, prob_of_label)
from vae_model.errors import DataError


def test_bundled_classifier_is_small_accurate_and_reproducible(bundled_classifier):
    from vae_model.data import load_source

    path = bundled_classifier_dir()
    assert os.path.getsize(os.path.join(path, CLASSIFIER)) < 2_000_000
    meta = bundled_classifier.meta
    assert meta["command"] == "vae-augment train-classifier --data mnist --out vae_model/pretrained/mnist_classifier"
    # keys added after it was made (train.translate, train.rotate) default to what it was trained with
    assert classifier_config_from_dict(meta["config"]) == ClassifierConfig() and meta["data"]["source"] == "mnist"
    test = load_source("mnist").test
    acc = bundled_classifier.accuracy(test.images, test.labels)
    assert acc == meta["metrics"]["test"]["accuracy"] and acc >= 0.985


def test_batched_prediction_depends_only_on_each_row(bundled_classifier, mnist_small):
    import keras

    small = Classifier(bundled_classifier.model, batch_size=64)
    x = mnist_small.test.images[:150]  # 64 + 64 + 22 (padded)
    p = small.probabilities(x)
    assert p.shape == (150, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(small.probabilities(x[100:103]), p[100:103])
    logits = bundled_classifier.model(x[:64, ..., None].astype("float32"))
    direct = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(p[:64], direct, atol=1e-5)
    np.testing.assert_array_equal(small.probabilities(x[..., None]), p)  # (N, H, W, 1) works too
    assert evaluate_accuracy(bundled_classifier.model, x, mnist_small.test.labels[:150]) == \
        small.accuracy(x, mnist_small.test.labels[:150])
    with pytest.raises(DataError, match="expects uint8 images of 28x28"):
        small.probabilities(np.zeros((2, 14, 14), np.uint8))


def test_prob_of_label_is_the_labels_probability_or_the_top_one_when_unlabeled():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]], np.float32)
    np.testing.assert_allclose(prob_of_label(probs, np.array([1, 2, -1])), [0.2, 0.6, 0.5])
