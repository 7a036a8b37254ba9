"""Training the reference classifier (vae_model/classifier/training.py): from a source, arrays or a tf.data
stream, fine-tuning with --init, and the directory it writes."""
import json
import os

import numpy as np
import pytest

from vae_model.classifier import (CLASSIFIER, CLASSIFIER_META, ClassifierConfig, load_classifier,
                                  load_classifier_config, train_classifier, train_on_arrays, train_on_dataset)
from vae_model.errors import DataError, UsageError


@pytest.mark.e2e
def test_train_classifier_writes_a_self_describing_directory(tiny_classifier_dir):
    import keras

    from vae_model.artifacts import sha256_file

    assert sorted(os.listdir(tiny_classifier_dir)) == sorted([CLASSIFIER, CLASSIFIER_META])
    meta = json.loads(open(os.path.join(tiny_classifier_dir, CLASSIFIER_META)).read())
    assert meta["command"] == "vae-augment train-classifier --data 'mnist?limit=2000' --out tiny --set epochs=1"
    assert meta["sha256"][CLASSIFIER] == sha256_file(os.path.join(tiny_classifier_dir, CLASSIFIER))
    assert meta["classifier_id"] == meta["sha256"][CLASSIFIER][:16]
    assert meta["data"]["source"] == "mnist?limit=2000" and meta["rows"] == 2000
    assert meta["config"]["train"]["epochs"] == 1 and meta["steps"] == 16  # ceil(2000 / 128)
    assert meta["metrics"]["test"]["images"] == 2000 and 0.3 < meta["metrics"]["test"]["accuracy"] <= 1
    assert {"tensorflow", "keras"} <= set(meta["versions"])
    # plain Keras layers only: loadable without this package's code, and no optimizer state in the file
    model = keras.models.load_model(os.path.join(tiny_classifier_dir, CLASSIFIER), compile=False)
    assert model.inputs[0].shape[1:] == (28, 28, 1) and model.outputs[0].shape[-1] == 10
    assert getattr(model, "optimizer", None) is None


@pytest.mark.e2e
def test_recorded_accuracy_is_reproduced_by_the_loaded_classifier(tiny_classifier_dir):
    from vae_model.data import load_source

    clf = load_classifier(tiny_classifier_dir)
    test = load_source("mnist?limit=2000").test
    assert clf.accuracy(test.images, test.labels) == clf.meta["metrics"]["test"]["accuracy"]


@pytest.mark.e2e
def test_same_data_and_seed_give_the_same_weights_whether_from_arrays_or_a_tf_data_stream(mnist_small):
    import tensorflow as tf

    cfg = ClassifierConfig().replace_train(epochs=1, max_steps=3)
    x, y = mnist_small.train.images[:600], mnist_small.train.labels[:600]
    a, info = train_on_arrays(x, y, cfg)
    b, _ = train_on_dataset(tf.data.Dataset.from_tensor_slices((x[..., None], y)), 600, (28, 28), cfg)
    assert info["steps"] == 3
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    c, _ = train_on_arrays(x, y, cfg.replace_train(seed=1))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_the_weights_do_not_depend_on_a_global_seed_set_earlier_in_the_process(mnist_small):
    """VAE training calls keras.utils.set_random_seed; a classifier trained after it in the same process (augment's
    straight run) must equal one trained without it (the same run resumed past the VAE step)."""
    import keras
    import tensorflow as tf

    from vae_model.classifier.training import train_on_mix

    cfg = ClassifierConfig().replace_train(epochs=1, max_steps=3)
    x, y = mnist_small.train.images[:600], mnist_small.train.labels[:600]
    syn = tf.data.Dataset.from_tensor_slices((x[300:, ..., None], y[300:].astype(np.int64)))
    real = type(mnist_small.train)(x[:300], y[:300])
    fresh = [m.get_weights() for m, _ in (train_on_arrays(x, y, cfg), train_on_mix(real, syn, 0.5, cfg))]
    for seed in (5, 0):
        keras.utils.set_random_seed(seed)
        a, _ = train_on_arrays(x, y, cfg)
        keras.utils.set_random_seed(seed)
        b, _ = train_on_mix(real, syn, 0.5, cfg)
        for got, want in zip((a.get_weights(), b.get_weights()), fresh):
            for wg, ww in zip(got, want):
                np.testing.assert_array_equal(wg, ww)


def test_training_needs_labeled_rows_and_a_fresh_or_classifier_out_dir(tmp_path):
    with pytest.raises(DataError, match="no labeled training rows"):
        train_classifier("mnist?limit=50&unlabeled=1", str(tmp_path / "c"), load_classifier_config(None, ["epochs=1"]))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a classifier directory"):
        train_classifier("mnist?limit=50", str(tmp_path / "busy"), None)
    assert (tmp_path / "busy" / "precious.txt").exists()
    assert not (tmp_path / "c").exists()


def test_labels_beyond_num_classes_are_a_data_error(tmp_path, mnist_small):
    cfg = load_classifier_config(None, ["epochs=1", "model.num_classes=5"])
    with pytest.raises(DataError, match="num_classes"):
        train_classifier((mnist_small.train.images[:100], mnist_small.train.labels[:100]), str(tmp_path / "c"), cfg)


@pytest.mark.e2e
def test_init_starts_from_the_classifier_weights_and_is_recorded(tmp_path, tiny_classifier_dir, mnist_small):
    """A near-zero learning rate leaves the --init weights in place: the fine-tuned classifier predicts what its
    start does, while a fresh start with the same config does not get near it."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    start = load_classifier(tiny_classifier_dir)
    args = ["train-classifier", "--data", "mnist?limit=100", "--set", "train.max_steps=1", "--set",
            "train.learning_rate=1e-12", "--quiet"]
    res = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ft"), "--init", tiny_classifier_dir])
    assert res.exit_code == 0, res.output
    fresh = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    images = mnist_small.test.images[:500]
    ft = load_classifier(str(tmp_path / "ft"))
    np.testing.assert_allclose(ft.probabilities(images), start.probabilities(images), atol=1e-5)
    assert load_classifier(str(tmp_path / "fresh")).accuracy(images, mnist_small.test.labels[:500]) < 0.5
    init = json.loads((tmp_path / "ft" / CLASSIFIER_META).read_text())["init"]
    assert init["classifier_id"] == start.meta["classifier_id"] and init["path"] == tiny_classifier_dir


@pytest.mark.parametrize("init, extra, code, needle", [
    ("bundled", ["--set", "model.dense_units=64"], 2, "dense_units: 128 there, 64 here"),
    ("nowhere", [], 1, "classifier directory nowhere does not exist"),
])
def test_init_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, init, extra, code, needle):
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["train-classifier", "--data", "mnist?limit=100", "--out", "clf", "--init", init,
                                   *extra])
    assert res.exit_code == code, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "clf").exists()


