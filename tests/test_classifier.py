"""The reference classifier (vae_model/classifier.py) and the generate job's classifier filter
(pipeline/filtering.py)."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest

from pipeline.generate.filter import ClassifierFilter
from vae_model.classifier import (CLASSIFIER, CLASSIFIER_META, Classifier, ClassifierConfig, bundled_classifier_dir,
                                  evaluate_accuracy, load_classifier, load_classifier_config, train_classifier,
                                  train_on_arrays, train_on_dataset)
from vae_model.errors import ConfigError, DataError, ModelError, UsageError

TINY_ARGV = ["vae-augment", "train-classifier", "--data", "mnist?limit=2000", "--out", "tiny", "--set", "epochs=1"]


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    """The reference CNN trained for one epoch on 2,000 real digits (a few seconds)."""
    out = tmp_path_factory.mktemp("classifiers") / "tiny"
    train_classifier("mnist?limit=2000", str(out), load_classifier_config(None, ["epochs=1"]), argv=TINY_ARGV)
    return str(out)


@pytest.fixture(scope="session")
def bundled_classifier():
    return load_classifier(None)


# ---------------------------------------------------------------------------------------------- config

def test_yaml_config_is_the_builtin_default_and_overrides_are_typed():
    assert load_classifier_config("configs/classifier.yaml") == ClassifierConfig()
    cfg = load_classifier_config("configs/classifier.yaml", ["epochs=2", "model.filters=[8, 16]"])
    assert cfg.train.epochs == 2 and cfg.model.filters == [8, 16] and cfg.train.batch_size == 128


@pytest.mark.parametrize("override,needle", [
    ("train.epochs=0", "train.epochs must be > 0"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("model.filters=[8, 8, 8, 8]", "shrink 28x28 images to nothing"),
    ("train.learning_rate=-1", "train.learning_rate"),
    ("train.max_steps=-2", "train.max_steps"),
    ("model.widht=3", "unknown config key model.widht"),
    ("epochs=abc", "must be an integer"),
    ("noequals", "must look like key=value"),
])
def test_bad_config_values_raise_config_error(override, needle):
    with pytest.raises(ConfigError) as e:
        load_classifier_config(None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_classifier_config(str(tmp_path / "nope.yaml"))


# ---------------------------------------------------------------------------------------------- training

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


def test_recorded_accuracy_is_reproduced_by_the_loaded_classifier(tiny_classifier_dir):
    from vae_model.data import load_source

    clf = load_classifier(tiny_classifier_dir)
    test = load_source("mnist?limit=2000").test
    assert clf.accuracy(test.images, test.labels) == clf.meta["metrics"]["test"]["accuracy"]


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
    ("TINY", ["--set", "model.dense_units=64"], 2, "dense_units: 128 there, 64 here"),
    ("nowhere", [], 1, "classifier directory nowhere does not exist"),
])
def test_init_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, tiny_classifier_dir, init, extra,
                                                       code, needle):
    from click.testing import CliRunner

    from pipeline.cli import cli

    monkeypatch.chdir(tmp_path)
    init = tiny_classifier_dir if init == "TINY" else init
    res = CliRunner().invoke(cli, ["train-classifier", "--data", "mnist?limit=100", "--out", "clf", "--init", init,
                                   *extra])
    assert res.exit_code == code, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "clf").exists()


# ---------------------------------------------------------------------------------------------- predicting

def test_bundled_classifier_is_small_accurate_and_reproducible(bundled_classifier):
    from vae_model.data import load_source

    path = bundled_classifier_dir()
    assert os.path.getsize(os.path.join(path, CLASSIFIER)) < 2_000_000
    meta = bundled_classifier.meta
    assert meta["command"] == "vae-augment train-classifier --data mnist --out vae_model/pretrained/mnist_classifier"
    assert meta["config"] == ClassifierConfig().to_dict() and meta["data"]["source"] == "mnist"
    test = load_source("mnist").test
    acc = bundled_classifier.accuracy(test.images, test.labels)
    assert acc == meta["metrics"]["test"]["accuracy"] and acc >= 0.985


def test_batched_prediction_depends_only_on_each_row(bundled_classifier, mnist_small):
    import keras

    small = Classifier(bundled_classifier.model, batch_size=64)
    x = mnist_small.test.images[:150]  # 64 + 64 + 22 (padded)
    p = small.probabilities(x)
    assert p.shape == (150, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(small.probabilities(x[100:103]), p[100:103])
    logits = bundled_classifier.model(x[:64, ..., None].astype("float32"))
    direct = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(p[:64], direct, atol=1e-5)
    np.testing.assert_array_equal(small.probabilities(x[..., None]), p)  # (N, H, W, 1) works too
    assert evaluate_accuracy(bundled_classifier.model, x, mnist_small.test.labels[:150]) == \
        small.accuracy(x, mnist_small.test.labels[:150])
    with pytest.raises(DataError, match="expects uint8 images of 28x28"):
        small.probabilities(np.zeros((2, 14, 14), np.uint8))


def test_load_classifier_errors_are_one_line_model_errors(tmp_path, tiny_classifier_dir):
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no classifier.json"):
        load_classifier(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_classifier_dir, broken)
    (broken / CLASSIFIER_META).write_text("{not json")
    with pytest.raises(ModelError, match="not a valid classifier.json"):
        load_classifier(str(broken))
    shutil.copy(os.path.join(tiny_classifier_dir, CLASSIFIER_META), broken / CLASSIFIER_META)
    data = (broken / CLASSIFIER).read_bytes()
    (broken / CLASSIFIER).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_classifier(str(broken))
    # a damaged file whose checksum was "fixed" up still fails cleanly when Keras reads it
    import hashlib
    meta = json.loads((broken / CLASSIFIER_META).read_text())
    meta["sha256"][CLASSIFIER] = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    (broken / CLASSIFIER_META).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="could not be loaded as a Keras model") as e:
        load_classifier(str(broken))
    assert "\n" not in str(e.value)
    (broken / CLASSIFIER).unlink()
    with pytest.raises(ModelError, match="is missing"):
        load_classifier(str(broken))


# ---------------------------------------------------------------------------------------------- filter

@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan"), True, "0.9"])
def test_filter_rejects_bad_min_confidence(bad):
    with pytest.raises(UsageError, match="--min-confidence must be in"):
        ClassifierFilter(None, bad)


def test_filter_is_picklable_and_shares_one_classifier_per_process(mnist_small):
    import cloudpickle

    f = ClassifierFilter(None, 0.9, batch_size=256)
    f.setup()
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(f)
        assert len(blob) < 10_000  # no model inside
        g = pickle.loads(blob)
        assert g._handle is None and g.min_confidence == 0.9
        g.setup()
        assert g.classifier is f.classifier  # Shared: same key, same tag -> same loaded model
    assert ClassifierFilter(None, 0.9, batch_size=128).classifier is not f.classifier


def test_filter_accepts_by_probability_of_the_intended_label(mnist_small):
    x, y = mnist_small.test.images[:300], mnist_small.test.labels[:300]
    f = ClassifierFilter(None, 0.9, batch_size=128)
    mask, p = f.accept(x, y)
    assert mask.dtype == bool and mask.shape == (300,) and p.dtype == np.float32
    probs = f.classifier.probabilities(x)
    np.testing.assert_array_equal(p, probs[np.arange(300), y])
    np.testing.assert_array_equal(mask, (probs.argmax(1) == y) & (p >= 0.9))
    assert mask.mean() > 0.9
    wrong = (y + 1) % 10
    mask_wrong, _ = f.accept(x, wrong)
    assert mask_wrong.mean() < 0.02
    # every threshold in (0, 1] is valid; the mask only shrinks as it rises
    counts = [int(ClassifierFilter(None, t, batch_size=128).accept(x, y)[0].sum()) for t in (0.01, 0.5, 0.99, 1.0)]
    assert counts == sorted(counts, reverse=True)
    # unlabeled records are judged by the top class probability
    mask_u, p_u = f.accept(x, np.full(300, -1))
    np.testing.assert_array_equal(p_u, probs.max(1))
    np.testing.assert_array_equal(mask_u, probs.max(1) >= 0.9)
    assert [a.shape for a in f.accept(x[:0], y[:0])] == [(0,), (0,)]
    with pytest.raises(DataError, match="not a class of classifier"):
        f.accept(x[:2], np.array([3, 10]))


def test_filter_check_reads_only_the_json_and_names_mismatches(tmp_path):
    f = ClassifierFilter(None, 0.5)
    assert f.check(num_classes=10, image_shape=(28, 28))["num_classes"] == 10
    with pytest.raises(ModelError, match="takes 28x28 images but the model makes 32x32"):
        f.check(image_shape=(32, 32))
    with pytest.raises(ModelError, match="knows 10 classes but the model has 12"):
        f.check(num_classes=12)
    with pytest.raises(ModelError, match="does not exist"):
        ClassifierFilter(str(tmp_path / "nope"), 0.5).check()
