"""Data sources (vae_model/data): every built-in format round-trips real MNIST rows exactly, options apply to any
kind, malformed input gives one-line errors."""

import gzip
import json
import os

import numpy as np
import pytest

from vae_model.data import Dataset, load_source, parse_source
from vae_model.errors import DataError, UsageError


# ------------------------------------------------------------------------------------------ writers

def write_csv(path, images, labels=None, *, header="pixel", label_cells=None, gz=False):
    pixels = images.reshape(len(images), -1)
    lines = []
    if header == "pixel":
        lines.append(",".join((["label"] if labels is not None else []) +
                              [f"pixel{i}" for i in range(pixels.shape[1])]))
    elif header == "numbers":  # pixel columns named 0..N-1, no label
        lines.append(",".join(str(i) for i in range(pixels.shape[1])))
    elif header == "AxB":
        side = images.shape[1]
        lines.append(",".join(["label"] + [f"{r}x{c}" for r in range(1, side + 1) for c in range(1, side + 1)]))
    for i, row in enumerate(pixels):
        cells = [str(v) for v in row]
        if labels is not None:
            cells.insert(0, label_cells[i] if label_cells is not None else str(labels[i]))
        lines.append(",".join(cells))
    text = ("\r\n".join(lines) + "\r\n").encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


def write_idx(path, array, *, gz=False, magic=None):
    magic = magic if magic is not None else (0x803 if array.ndim == 3 else 0x801)
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def assert_same(ds, images, labels):
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


# ------------------------------------------------------------------------------------------ formats

@pytest.mark.parametrize("header", ["pixel", "AxB", None])
def test_csv_roundtrip(tmp_path, rows, header):
    x, y, _, _ = rows
    path = write_csv(tmp_path / "train.csv", x, y, header=header)
    splits = load_source(str(path))
    assert_same(splits.train, x, y)
    assert splits.test is None and splits.source == str(path)


@pytest.mark.parametrize("header", ["pixel", "numbers", None])
def test_csv_without_label_column_is_unlabeled(tmp_path, rows, header):
    x = rows[0]
    path = write_csv(tmp_path / "test.csv", x, header=header)  # like Kaggle's test.csv: 784 columns
    assert_same(load_source(f"csv:{path}").train, x, np.full(len(x), -1))


def test_csv_gzip_detected_by_magic(tmp_path, rows):
    x, y, _, _ = rows
    assert_same(load_source(str(write_csv(tmp_path / "d.csv.gz", x, y, gz=True))).train, x, y)
    misnamed = write_csv(tmp_path / "plain_name.csv", x, y, gz=True)
    assert_same(load_source(f"csv:{misnamed}").train, x, y)


def test_csv_unlabeled_marker_and_empty_cells(tmp_path, rows):
    x, y, _, _ = rows
    cells = [str(v) for v in y]
    cells[1], cells[2], cells[3] = "11", "11", ""
    path = write_csv(tmp_path / "semi.csv", x, y, label_cells=cells)
    expected = y.copy()
    expected[[1, 2, 3]] = -1
    assert_same(load_source(f"{path}?unlabeled_value=11").train, x, expected)
    raw = load_source(str(path)).train.labels  # without the option 11 is an ordinary class
    assert raw[1] == 11 and raw[3] == -1
    labeled = load_source(f"{path}?unlabeled_value=11").train.labeled
    assert len(labeled) == len(x) - 3 and (labeled.labels >= 0).all()
    np.testing.assert_array_equal(labeled.images, np.delete(x, [1, 2, 3], axis=0))


def test_csv_test_option(tmp_path, rows):
    x, y, xt, yt = rows
    train = write_csv(tmp_path / "train.csv", x, y)
    test = write_csv(tmp_path / "test.csv", xt, yt)
    splits = load_source(f"{train}?test={test}")
    assert_same(splits.train, x, y)
    assert_same(splits.test, xt, yt)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, rows, gz):
    x, y, xt, yt = rows
    ext = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", x, gz=gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", y, gz=gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", xt, gz=gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", yt, gz=gz)
    splits = load_source(f"idx:{tmp_path}")
    assert_same(splits.train, x, y)
    assert_same(splits.test, xt, yt)
    assert_same(load_source(str(tmp_path)).train, x, y)  # a folder of IDX files is recognized bare too


def test_idx_file_pair(tmp_path, rows):
    x, y, _, _ = rows
    images = write_idx(tmp_path / "imgs.bin", x, gz=True)  # gzipped although the name says nothing
    labels = write_idx(tmp_path / "labs.bin", y)
    splits = load_source(f"idx:{images},{labels}")
    assert_same(splits.train, x, y)
    assert splits.test is None
    assert_same(load_source(f"idx:{images}").train, x, np.full(len(x), -1))


def test_npz(tmp_path, rows):
    x, y, xt, yt = rows
    full = tmp_path / "mnist.npz"
    np.savez(full, x_train=x, y_train=y, x_test=xt, y_test=yt)
    splits = load_source(str(full))
    assert_same(splits.train, x, y)
    assert_same(splits.test, xt, yt)
    train_only = tmp_path / "train_only.npz"
    np.savez(train_only, x_train=x, y_train=y)
    assert load_source(f"npz:{train_only}").test is None
    other = tmp_path / "other.npz"
    np.savez(other, x_train=xt, y_train=yt)
    assert_same(load_source(f"{train_only}?test={other}").test, xt, yt)


# ------------------------------------------------------------------------------------------ options

def test_limit_and_unlabeled(tmp_path, rows):
    x, y, xt, yt = rows
    path = tmp_path / "m.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    splits = load_source(f"{path}?limit=7&unlabeled=1")
    assert_same(splits.train, x[:7], np.full(7, -1))
    assert_same(splits.test, xt[:7], np.full(7, -1))
    assert len(splits.train.labeled) == 0


def test_validation_split(tmp_path, rows):
    x, y, _, _ = rows
    path = write_csv(tmp_path / "d.csv", x, y)
    splits = load_source(str(path), validation_split=0.25, seed=3)
    assert (len(splits.train), len(splits.val)) == (45, 15)
    both = np.concatenate([splits.train.images, splits.val.images]).reshape(60, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, x.reshape(60, -1)))
    again = load_source(str(path), validation_split=0.25, seed=3)
    np.testing.assert_array_equal(again.val.images, splits.val.images)
    other = load_source(str(path), validation_split=0.25, seed=4)
    assert not np.array_equal(other.val.images, splits.val.images)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(UsageError, match="validation_split"):
            load_source(str(path), validation_split=bad)
    with pytest.raises(UsageError, match="seed"):
        load_source(str(path), seed=-1)


def test_labeled_per_class(tmp_path, rows):
    x, y, _, _ = rows
    path = write_csv(tmp_path / "d.csv", x, y)
    splits = load_source(f"{path}?labeled_per_class=2", seed=1)
    counts = np.bincount(splits.train.labels[splits.train.labels >= 0], minlength=10)
    assert counts.tolist() == [2] * 10
    kept = splits.train.labels >= 0
    np.testing.assert_array_equal(splits.train.labels[kept], y[kept])  # kept labels are the true ones
    assert_same(splits.train, x, np.where(kept, y, -1))
    same = load_source(f"{path}?labeled_per_class=2", seed=1).train.labels
    np.testing.assert_array_equal(same, splits.train.labels)
    assert not np.array_equal(load_source(f"{path}?labeled_per_class=2", seed=2).train.labels, same)
    with_val = load_source(f"{path}?labeled_per_class=1", validation_split=0.2)
    assert (with_val.val.labels >= 0).all()  # validation keeps its labels for evaluation
    assert len(with_val.train.labeled) == len(np.unique(with_val.train.labeled.labels))


def test_describe_is_json(tmp_path, rows):
    x, y, xt, yt = rows
    path = tmp_path / "m.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    info = load_source(f"{path}?labeled_per_class=1", validation_split=0.1).describe()
    json.dumps(info)
    assert info["image_shape"] == [28, 28]
    assert info["splits"]["train"] == {"rows": 54, "labeled": 10, "label_counts": {str(c): 1 for c in range(10)}}
    assert info["splits"]["val"]["rows"] == 6 and info["splits"]["test"]["rows"] == 20


def test_parse_source():
    assert parse_source("mnist") == ("mnist", "", {})
    assert parse_source("mnist?limit=10&unlabeled_value=11") == ("mnist", "", {"limit": 10, "unlabeled_value": 11})
    assert parse_source("a/b.CSV.gz")[:2] == ("csv", "a/b.CSV.gz")
    assert parse_source("csv:a/b.txt?test=c.txt")[2] == {"test": "c.txt"}
    assert parse_source("x.npz?unlabeled=0&labeled_per_class=3")[2] == {"unlabeled": False, "labeled_per_class": 3}
    for bad in ("x.npz?unlabeled=1&labeled_per_class=3", "x.npz?limit=1&limit=2", "x.npz?limit", "x.npz?limit=0",
                "mnist:x", "csv:", "", "x.npz?unlabeled=maybe"):
        with pytest.raises(UsageError):
            parse_source(bad)
    assert parse_source("idx:i,l")[:2] == ("idx", "i,l")
    # a URL's scheme is not a kind: gs://... is a path whose kind is given or inferred
    assert parse_source("csv:gs://b/x.txt")[:2] == ("csv", "gs://b/x.txt")
    assert parse_source("gs://b/train.npz")[:2] == ("npz", "gs://b/train.npz")


def test_dataset_validates_arrays():
    ds = Dataset(np.zeros((2, 3, 3), np.uint8), np.array([1, -1], np.int32))
    assert ds.labels.dtype == np.int64 and len(ds) == 2 and len(ds.labeled) == 1
    with pytest.raises(ValueError):
        Dataset(np.zeros((2, 3, 3), np.float32), np.zeros(2))


# ------------------------------------------------------------------------------------------ errors

def _make(tmp_path, rows, case):
    """Write a broken input for `case`; returns (source, error type, file name the message must name)."""
    x, y, xt, yt = rows
    x, y = x[:5], y[:5]
    csv_path = tmp_path / "bad.csv"
    if case == "wrong_column_count":
        write_csv(csv_path, x, y)
        lines = csv_path.read_text().splitlines()
        lines[3] = ",".join(lines[3].split(",")[:780])
        csv_path.write_text("\n".join(lines) + "\n")
        return str(csv_path), DataError, "row 3"
    if case in ("non_numeric", "too_big", "negative"):
        write_csv(csv_path, x, y)
        lines = csv_path.read_text().splitlines()
        cells = lines[2].split(",")
        cells[100] = {"non_numeric": "abc", "too_big": "256", "negative": "-3"}[case]
        lines[2] = ",".join(cells)
        csv_path.write_text("\n".join(lines) + "\n")
        return str(csv_path), DataError, "'pixel99'"
    if case == "negative_label":
        write_csv(csv_path, x, y, label_cells=["1", "-4", "2", "3", "4"])
        return str(csv_path), DataError, "row 2"
    if case == "not_square":
        write_csv(csv_path, x.reshape(5, -1)[:, :780].reshape(5, 780, 1), y)
        return str(csv_path), DataError, "780"
    if case == "empty_csv":
        csv_path.write_text("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
        return str(csv_path), DataError, "no data rows"
    if case == "zero_byte_csv":
        csv_path.write_text("")
        return str(csv_path), DataError, "empty"
    if case == "bad_magic":
        path = write_idx(tmp_path / "bad-images-idx3-ubyte", x, magic=0x801)
        return f"idx:{path}", DataError, "magic"
    if case == "truncated_idx":
        path = write_idx(tmp_path / "trunc-images-idx3-ubyte", x)
        path.write_bytes(path.read_bytes()[:-10])
        return f"idx:{path}", DataError, "truncated"
    if case == "truncated_gzip_idx":
        path = write_idx(tmp_path / "trunc-images-idx3-ubyte.gz", x, gz=True)
        path.write_bytes(path.read_bytes()[:-30])
        return f"idx:{path}", DataError, "trunc-images"
    if case == "count_mismatch":
        images = write_idx(tmp_path / "cm-images-idx3-ubyte", x)
        labels = write_idx(tmp_path / "cm-labels-idx1-ubyte", y[:4])
        return f"idx:{images},{labels}", DataError, "4 labels"
    if case == "npz_missing_keys":
        path = tmp_path / "bad.npz"
        np.savez(path, images=x, labels=y)
        return str(path), DataError, "x_train, y_train"
    if case == "npz_half_test":
        path = tmp_path / "bad.npz"
        np.savez(path, x_train=x, y_train=y, x_test=xt)
        return str(path), DataError, "y_test"
    if case == "npz_not_zip":
        path = tmp_path / "bad.npz"
        path.write_bytes(b"not a zip file at all")
        return str(path), DataError, "zip"
    if case == "nonexistent":
        return str(tmp_path / "missing.csv"), DataError, "does not exist"
    if case == "nonexistent_idx":
        return f"idx:{tmp_path / 'nope'}", DataError, "does not exist"
    if case == "unknown_kind":
        return "foo:bar", UsageError, "foo"
    if case == "unknown_extension":
        path = tmp_path / "data.txt"
        path.write_text("1,2\n")
        return str(path), UsageError, "accepted forms"
    if case == "unknown_option":
        write_csv(csv_path, x, y)
        return f"{csv_path}?limt=3", UsageError, "limt"
    if case == "bad_option_value":
        write_csv(csv_path, x, y)
        return f"{csv_path}?limit=many", UsageError, "limit"
    if case == "test_option_for_idx":
        return f"idx:{tmp_path}?test=x", UsageError, "test"
    if case == "bare_dir_of_nothing":
        folder = tmp_path / "somedir"
        folder.mkdir()
        return str(folder), DataError, "IDX files"
    if case == "test_shape_mismatch":
        write_csv(csv_path, x, y)
        small = write_csv(tmp_path / "small.csv", x[:, :14, :14], y)
        return f"{csv_path}?test={small}", DataError, "14x14"
    raise AssertionError(case)


ERROR_CASES = ["wrong_column_count", "non_numeric", "too_big", "negative", "negative_label", "not_square",
               "empty_csv", "zero_byte_csv", "bad_magic", "truncated_idx", "truncated_gzip_idx", "count_mismatch",
               "npz_missing_keys", "npz_half_test", "npz_not_zip", "nonexistent", "nonexistent_idx",
               "unknown_kind", "unknown_extension", "unknown_option", "bad_option_value", "test_option_for_idx",
               "bare_dir_of_nothing", "test_shape_mismatch"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_malformed_input_gives_one_line_error(tmp_path, rows, case):
    source, error, fragment = _make(tmp_path, rows, case)
    with pytest.raises(error) as info:
        load_source(source)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message
    if error is DataError:  # names the offending file (or the source for usage errors)
        named = source.split(":", 1)[-1].split("?")[-1 if "?" in source else 0].split(",")[-1]
        assert os.path.basename(named) in message
    else:
        assert source.split("?")[0] in message


def test_with_test_adds_test_images_to_train_unlabeled():
    from vae_model.data import load_source
    s = load_source("mnist?limit=300&with_test=1&unlabeled=1")
    assert len(s.train) == 600 and (s.train.labels == -1).all()
    np.testing.assert_array_equal(s.train.images[300:], s.test.images)
    s = load_source("mnist?limit=300&with_test=1")
    assert (s.train.labels[:300] >= 0).all() and (s.train.labels[300:] == -1).all()
    assert (s.test.labels >= 0).all()
