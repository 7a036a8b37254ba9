"""The `parquet:DIR` data source plugin: a generate output read back as a vae_model.data Dataset, through Beam
filesystems (so remote outputs work too)."""
import json
import os

import numpy as np
import pytest

from pipeline.dataset import source
from vae_model.data import load_source
from vae_model.errors import DataError


def test_read_round_trips_a_generate_output(generated, generated_records):
    out, manifest = generated
    _, labels, images = generated_records
    train, test = source.read(out, unlabeled_value=None)
    assert test is None
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, labels)
    assert train.images.flags.writeable  # owned arrays, not views of Arrow buffers
    relabeled, _ = source.read(out, unlabeled_value=2)  # the shared split checks apply
    assert (relabeled.labels == -1).sum() == 100 and relabeled.labels.max() == 1
    assert source.origin(out) == {"manifest": os.path.abspath(os.path.join(out, "manifest.json")),
                                  "dataset_digest": manifest["dataset_digest"], "records": 300,
                                  "verified": "sizes"}


def test_load_source_finds_the_plugin_for_the_folder_its_manifest_and_the_kind_prefix(generated, generated_records):
    out, _ = generated
    for spelled in (out, f"parquet:{out}", os.path.join(out, "manifest.json")):
        splits = load_source(spelled + "?limit=10")
        np.testing.assert_array_equal(splits.train.images, generated_records[2][:10])
        assert splits.describe()["origin"]["records"] == 300


def test_remote_outputs_are_read_through_beam_filesystems(generated, generated_records, remote):
    url = remote(generated[0])
    assert source.claims(url) and source.claims(url + "/manifest.json")
    assert not source.claims(remote(os.path.dirname(generated[0])))
    assert not source.claims("nofs://bucket/out")  # no Beam filesystem serves it: not ours to claim
    splits = load_source(url)
    np.testing.assert_array_equal(splits.train.images, generated_records[2])
    assert splits.origin["manifest"] == url + "/manifest.json"


def test_claims_only_generate_outputs(tmp_path, generated):
    assert source.claims(generated[0]) and source.claims(str(tmp_path / "elsewhere" / "manifest.json"))
    assert not source.claims(str(tmp_path)) and not source.claims(str(tmp_path / "digits.csv"))


def test_an_output_without_parquet_shards_or_with_a_damaged_shard_is_one_line(damaged):
    path = damaged / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "formats": ["tfrecord"],
                                "shards": [s for s in manifest["shards"] if s["format"] != "parquet"]}))
    with pytest.raises(DataError, match="has no parquet shards .formats written: tfrecord.; re-run generate with "
                                        "--formats parquet"):
        source.read(str(damaged), None)
    shard = damaged / manifest["shards"][1]["path"]
    path.write_text(json.dumps({**manifest, "shards": [{**s, "rows": 7} for s in manifest["shards"]]}))
    with pytest.raises(DataError, match="part-00000-of-00002.parquet: has 150 rows but the manifest says 7"):
        source.read(str(damaged), None)
    path.write_text(json.dumps(manifest))
    shard.write_bytes(b"x" * shard.stat().st_size)  # the manifest's size, so only reading it finds the damage
    with pytest.raises(DataError, match=f"{shard}: cannot read parquet shard .*; run `vae-augment verify`"):
        source.read(str(damaged), None)
    shard.unlink()
    with pytest.raises(DataError, match=f"{shard}: missing; nothing was read from {damaged}"):
        source.read(str(damaged), None)
