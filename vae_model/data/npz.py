"""NPZ sources: `npz:PATH` or a path ending .npz, in Keras' mnist.npz layout (see vae_model.data)."""
from __future__ import annotations

import zipfile
import zlib

import numpy as np

from vae_model.data.dataset import checked_split, square_side
from vae_model.data.files import one_line, opener
from vae_model.errors import DataError

KIND = "npz"
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def claims(path: str) -> bool:
    return path.lower().endswith(".npz")


def read(path, unlabeled_value, as_test: bool = False):
    arrays = read_arrays(path, test_file=as_test)
    train = checked_split(path, *arrays["train"], unlabeled_value)
    test = checked_split(path, *arrays["test"], unlabeled_value) if "test" in arrays else None
    return train, test


def read_arrays(path, test_file: bool = False) -> dict:
    """{'train': (images, labels), 'test': ...} from Keras-style keys. A test file may hold either pair."""
    source = opener(path)  # local or gs:// (fetched once)
    with source() as f:
        if f.read(2) != b"PK":  # np.load would try .npy/pickle and give a confusing message
            raise DataError(f"{path}: is not a .npz (zip) archive; save arrays with numpy.savez")
    try:
        with np.load(source(), allow_pickle=False) as z:
            keys = set(z.files)
            pairs = {}
            for split in ("train", "test"):
                present = {f"x_{split}", f"y_{split}"} & keys
                if len(present) == 1:
                    missing = ({f"x_{split}", f"y_{split}"} - present).pop()
                    raise DataError(f"{path}: has {present.pop()} but no {missing}; add it or remove both")
                if present:
                    pairs[split] = (z[f"x_{split}"], z[f"y_{split}"])
    except DataError:
        raise
    except _NPZ_ERRORS as e:
        raise DataError(f"{path}: not a readable .npz file ({one_line(e)}); pass a numpy .npz archive") from e
    if test_file and "test" in pairs:
        pairs = {"train": pairs["test"]}
    if "train" not in pairs:
        missing = sorted({"x_train", "y_train"} - keys)
        raise DataError(f"{path}: missing key(s) {', '.join(missing)} (has: {', '.join(sorted(keys)) or 'none'}); "
                        f"save arrays as x_train, y_train[, x_test, y_test]")
    return {split: (_npz_images(path, f"x_{split}", x), _npz_labels(path, f"y_{split}", y, len(x)))
            for split, (x, y) in pairs.items()}


def _npz_images(path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2 and square_side(x.shape[1]):
        x = x.reshape(len(x), square_side(x.shape[1]), -1)
    if x.ndim != 3:
        raise DataError(f"{path}: {key} has shape {x.shape}, expected (N, H, W) images")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf" or (x.size and (x.min() < 0 or x.max() > 255 or (x.dtype.kind == "f"
                                                                                   and (x != np.round(x)).any()))):
        raise DataError(f"{path}: {key} must hold integer pixels 0..255 (got {x.dtype}, "
                        f"range {x.min() if x.size else '-'}..{x.max() if x.size else '-'}); "
                        f"scale [0, 1] floats by 255 and round")
    return x.astype(np.uint8)


def _npz_labels(path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.shape != (n,):
        raise DataError(f"{path}: {key} has shape {y.shape}, expected ({n},) to match the images")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and (y == np.round(y)).all()):
        raise DataError(f"{path}: {key} must hold integer labels, got {y.dtype}")
    return y.astype(np.int64)

