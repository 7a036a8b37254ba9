"""IDX sources: `idx:DIR` (train/test by file name) or `idx:IMAGES[,LABELS]` (see vae_model.data)."""
from __future__ import annotations

import math
import os
import re

import numpy as np

from vae_model.data.dataset import Dataset, checked_split
from vae_model.data.files import is_dir, is_url, join, list_dir, read_plain_bytes
from vae_model.errors import DataError

KIND = "idx"
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
IMAGES_RE = re.compile(r"images[.-]idx3-ubyte(\.gz)?$", re.IGNORECASE)


def claims(path: str) -> bool:
    """An IDX images file (by name), or a folder holding one."""
    if IMAGES_RE.search(path.lower().split(",")[0]):
        return True
    return is_dir(path) and any(IMAGES_RE.search(n) for n in list_dir(path))


def read(path, unlabeled_value, as_test: bool = False):
    if is_dir(path):
        return _read_idx_dir(path, unlabeled_value)
    images_path, _, labels_path = path.partition(",")
    return _read_idx_pair(images_path, labels_path or None, unlabeled_value), None


def _read_idx_dir(folder, unlabeled_value):
    entries = list_dir(folder)
    images = sorted(n for n in entries if IMAGES_RE.search(n))
    train = [n for n in images if "train" in n.lower()]
    test = [n for n in images if "t10k" in n.lower() or "test" in n.lower()]
    if not train:
        raise DataError(f"{folder}: no train*-images-idx3-ubyte[.gz] file found; "
                        f"point at a folder with MNIST-style IDX files")

    def split(names):
        name = _prefer_plain(names)
        labels = _labels_file_for(folder, name, entries)
        return _read_idx_pair(join(folder, name), labels, unlabeled_value)

    return split(train), split(test) if test else None


def _prefer_plain(names: list[str]) -> str:
    """A folder often holds both x.gz and its gunzipped copy; they are the same data."""
    plain = [n for n in names if not n.lower().endswith(".gz")]
    return (plain or names)[0]


def _labels_file_for(folder, images_name: str, names: list[str]) -> str | None:
    stem = re.sub(r"(\.gz)$", "", images_name, flags=re.IGNORECASE)
    stem = stem.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (stem, stem + ".gz"):
        if candidate in names and (is_url(folder) or os.path.isfile(os.path.join(folder, candidate))):
            return join(folder, candidate)
    return None


def _read_idx_pair(images_path, labels_path, unlabeled_value) -> Dataset:
    images = _read_idx(images_path, _IDX_IMAGES, ndim=3)
    labels = None
    if labels_path is not None:
        labels = _read_idx(labels_path, _IDX_LABELS, ndim=1)
        if len(labels) != len(images):
            raise DataError(f"{labels_path}: has {len(labels)} labels but {images_path} has {len(images)} "
                            f"images; pass matching files")
    return checked_split(images_path, images, labels, unlabeled_value)


def _read_idx(path, magic: int, ndim: int) -> np.ndarray:
    data = read_plain_bytes(path)
    what = "images" if magic == _IDX_IMAGES else "labels"
    header = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = f"0x{found:08x}" if found is not None else "none (file too short)"
        raise DataError(f"{path}: bad IDX magic {shown}, expected 0x{magic:08x} for {what}; "
                        f"is this an IDX {what} file?")
    if len(data) < header:
        raise DataError(f"{path}: IDX header is truncated; re-download the file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = math.prod(dims)
    if len(data) - header != expected:
        state = "truncated" if len(data) - header < expected else "longer than its header says"
        raise DataError(f"{path}: IDX file is {state}: dims {dims} need {expected} bytes, found "
                        f"{len(data) - header}; re-download the file")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()

