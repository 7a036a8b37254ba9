"""The registry of data-source kinds (vae_model/data/source.py): kinds beyond the built-in ones come from entry
points (group vae_augment.sources), like this project's `parquet` kind (pipeline/dataset/source.py), so
vae_model never imports pipeline."""
import ast
import json
import os
import pathlib
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vae_model.data import checked_split, load_source, parse_source
from vae_model.data import source as registry
from vae_model.errors import DataError, UsageError

VAE_MODEL = pathlib.Path(registry.__file__).parents[1]


class _EntryPoint:
    def __init__(self, name, module, value="fake_pkg.source"):
        self.name, self.value, self._module = name, value, module

    def load(self):
        if isinstance(self._module, Exception):
            raise self._module
        return self._module


def _fake_plugin(claims=lambda path: path.endswith(".fake")):
    module = types.ModuleType("fake_pkg.source")
    module.KIND = "fake"
    module.calls = []

    def read(path, unlabeled_value, as_test=False):
        module.calls.append((path, unlabeled_value, as_test))
        images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
        return checked_split(path, images, np.array([0, 1, 2, 11, 1]), unlabeled_value), None

    module.claims, module.read = claims, read
    module.origin = lambda path: {"made_by": "fake", "path": path}
    return module


@pytest.fixture
def plugins(monkeypatch):
    """Replace the installed entry points with the given (name -> module or exception) ones."""
    def install(**modules):
        eps = {name: _EntryPoint(name, m) for name, m in modules.items()}
        monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    return install


def test_a_registered_plugin_reads_its_kind_with_every_option(plugins):
    fake = _fake_plugin()
    plugins(fake=fake)
    assert parse_source("fake:some/where?limit=3") == ("fake", "some/where", {"limit": 3})
    splits = load_source("fake:some/where?limit=4&unlabeled_value=11")
    assert fake.calls == [("some/where", 11, False)]
    assert splits.train.labels.tolist() == [0, 1, 2, -1] and splits.train.image_shape == (4, 4)
    assert splits.describe()["origin"] == {"made_by": "fake", "path": "some/where"}
    assert load_source("fake:x?labeled_per_class=1").train.labels.tolist().count(1) == 1


def test_a_bare_path_is_claimed_by_a_plugin_only_after_the_built_in_kinds(plugins, tmp_path, monkeypatch):
    from vae_model.data import idx

    asked = []
    # idx asks whether a gs:// path is a folder of IDX files; answered here, not by GCS (no network in tests:
    # offline, the real client retries for ~100 s)
    monkeypatch.setattr(idx, "is_dir", lambda path: asked.append(path) or False)
    plugins(fake=_fake_plugin(claims=lambda path: True))  # a greedy plugin
    assert parse_source("data/x.fake")[:2] == ("fake", "data/x.fake")
    assert parse_source("data/x.csv")[0] == "csv" and parse_source("data/x.npz")[0] == "npz"
    assert parse_source("gs://bucket/out")[:2] == ("fake", "gs://bucket/out")  # URLs reach claims() whole
    assert "gs://bucket/out" in asked  # the built-in idx kind was asked first


def test_without_a_plugin_its_kind_is_unknown_in_one_line(plugins, tmp_path):
    plugins()
    with pytest.raises(UsageError) as e:
        load_source("parquet:out")
    message = str(e.value)
    assert "unknown kind 'parquet'" in message and "accepted forms" in message and "\n" not in message
    plugins(fake=_fake_plugin())
    with pytest.raises(UsageError, match="fake:PATH"):
        load_source("parquet:out")
    folder = tmp_path / "somedir"
    folder.mkdir()
    with pytest.raises(DataError, match="neither IDX files nor a fake source") as e:
        load_source(str(folder))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("broken, needle", [
    (ModuleNotFoundError("No module named 'fake_pkg'"), "cannot be imported (ModuleNotFoundError: No module"),
    (types.ModuleType("fake_pkg.source"), "is not a source module (needs KIND = 'fake', claims() and read())"),
])
def test_a_broken_plugin_is_one_line_and_only_when_used(plugins, rows, tmp_path, broken, needle):
    plugins(fake=broken)
    with pytest.raises(UsageError) as e:
        load_source("fake:x")
    assert needle in str(e.value) and "fake_pkg.source" in str(e.value) and "\n" not in str(e.value)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rows[0], y_train=rows[1])
    assert len(load_source(str(path)).train) == 60  # built-in kinds never load plugins


def test_vae_model_never_imports_pipeline():
    for path in VAE_MODEL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] == "pipeline"], path


# ---------------------------------------------------------------------------------------------- parquet

def test_the_parquet_kind_is_the_installed_pipeline_plugin():
    assert registry._entry_points()["parquet"].value == "pipeline.dataset.source"
    assert registry.source_kind("parquet").KIND == "parquet"


def write_parquet_dir(folder, images, labels, shard_sizes=(25, 35)):
    """The generator's layout: manifest.json + parquet shards (id, label, image, latent)."""
    folder.mkdir()
    shards, start = [], 0
    for k, size in enumerate(shard_sizes):
        x, y = images[start:start + size], labels[start:start + size]
        table = pa.table({
            "id": pa.array(np.arange(start, start + size), pa.int64()),
            "label": pa.array(y, pa.int64()),
            "image": pa.array([im.tobytes() for im in x], pa.binary()),
            "latent": pa.array([np.zeros(2, np.float32).tolist()] * size, pa.list_(pa.float32())),
        })
        name = f"parquet/part-{k:05d}-of-{len(shard_sizes):05d}.parquet"
        (folder / "parquet").mkdir(exist_ok=True)
        pq.write_table(table, folder / name)
        shards.append({"path": name, "format": "parquet", "rows": size, "bytes": (folder / name).stat().st_size,
                       "sha256": "0" * 64})  # readers check sizes; only verify hashes
        start += size
    shards.append({"path": "tfrecord/part-00000-of-00001.tfrecord", "format": "tfrecord", "rows": 5, "bytes": 9,
                   "sha256": "0" * 64})  # must be ignored
    classes, counts = np.unique(labels[:start], return_counts=True)
    manifest = {"format_version": 1, "shards": shards, "height": images.shape[1], "width": images.shape[2],
                "dataset_digest": "d" * 64, "total": int(sum(shard_sizes)), "formats": ["parquet", "tfrecord"],
                "per_class": {str(c): int(n) for c, n in zip(classes, counts)}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def assert_same(ds, images, labels):
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_parquet_generator_output(tmp_path, rows):
    x, y, _, _ = rows
    folder = write_parquet_dir(tmp_path / "gen", x, y)
    for source in (str(folder), f"parquet:{folder}", str(folder / "manifest.json")):
        splits = load_source(source)
        assert_same(splits.train, x, y)
        assert splits.test is None
        # a classifier trained on it records which records these were
        assert splits.describe()["origin"] == {"manifest": str(folder / "manifest.json"),
                                               "dataset_digest": "d" * 64, "records": 60, "verified": "sizes"}
    assert "origin" not in load_source("mnist?limit=10").describe()


@pytest.mark.parametrize("case", ["missing_manifest", "manifest_missing_shard", "manifest_wrong_size"])
def test_a_broken_generate_output_is_one_line_naming_it(tmp_path, rows, case):
    x, y = rows[0][:5], rows[1][:5]
    if case == "missing_manifest":
        folder = tmp_path / "genout"
        folder.mkdir()
        source, needle = f"parquet:{folder}", "manifest"
    else:
        folder = write_parquet_dir(tmp_path / "gen", x, y, shard_sizes=(5,))
        source, needle = str(folder), "part-00000-of-00001.parquet"
        if case == "manifest_missing_shard":
            os.remove(folder / "parquet" / "part-00000-of-00001.parquet")
        else:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["height"] = 27
            (folder / "manifest.json").write_text(json.dumps(manifest))
            needle = "27x28"
    with pytest.raises(DataError) as e:
        load_source(source)
    assert needle in str(e.value) and folder.name in str(e.value) and "\n" not in str(e.value)
