"""The public readers, which find shards only through the manifest."""
import numpy as np
import pytest

from pipeline.dataset.readers import (load_dataframe, load_parquet, load_table, shard_paths,
                                      synthetic_training_stream, tfrecord_dataset)
from vae_model.errors import DataError


def test_load_parquet_and_load_table_read_every_record_in_shard_order(generated, generated_records):
    out, _ = generated
    ids, labels, images = generated_records
    x, y = load_parquet(out)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert x.flags.writeable and y.dtype == np.int64
    np.testing.assert_array_equal(load_table(out, columns=["id"]).column("id").to_numpy(), ids)
    frame = load_dataframe(out, columns=["id", "label", "sampler"])
    assert list(frame.columns) == ["id", "label", "sampler"] and len(frame) == 300


def test_tfrecord_dataset_reads_the_same_records(generated, generated_records):
    out, _ = generated
    ids, labels, images = generated_records
    got = list(tfrecord_dataset(out, batch_size=64, with_ids=True).as_numpy_iterator())
    x, y, i = (np.concatenate(parts) for parts in zip(*got))
    assert x.shape == (300, 6, 5, 1) and len(got) == 5
    order = np.argsort(i)  # shards are interleaved
    np.testing.assert_array_equal(i[order], np.sort(ids))
    np.testing.assert_array_equal(x[order, :, :, 0], images[np.argsort(ids)])
    np.testing.assert_array_equal(y[order], labels[np.argsort(ids)])


def test_shard_paths_of_a_format_that_was_not_written(generated):
    out, manifest = generated
    parquet_only = {**manifest, "shards": [s for s in manifest["shards"] if s["format"] == "parquet"],
                    "formats": ["parquet"]}
    assert shard_paths(out, "parquet", parquet_only) == [f"{out}/parquet/part-0000{i}-of-00002.parquet"
                                                         for i in range(2)]
    with pytest.raises(DataError, match="has no tfrecord shards .*formats written: parquet.*--formats tfrecord"):
        shard_paths(out, "tfrecord", parquet_only)


def test_synthetic_training_stream_checks_the_labels_against_the_classifier(generated):
    out, manifest = generated
    ds, info = synthetic_training_stream(out, num_classes=3)
    assert info == {"dir": out, "dataset_digest": manifest["dataset_digest"], "records": 300, "image_shape": [6, 5],
                    "verified": "sizes"}  # what classifier.json records: shard sizes were checked, not hashes
    assert sorted(set(int(y) for _, y in ds.as_numpy_iterator())) == [0, 1, 2]
    with pytest.raises(DataError, match="has label 2 but the classifier has 2 classes; raise model.num_classes"):
        synthetic_training_stream(out, num_classes=2)


def test_synthetic_training_stream_refuses_unlabeled_records(damaged):
    import json
    path = damaged / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "per_class": {"-1": 300}}))
    with pytest.raises(DataError, match="has no labeled records .*cannot train a classifier"):
        synthetic_training_stream(str(damaged), num_classes=10)
