"""Classifier directories (vae_model/classifier/directory.py): classifier.json + a sha256-checked classifier.keras,
written atomically; "bundled" names the shipped one."""
import hashlib
import json
import os
import shutil

import pytest

from vae_model.classifier import (CLASSIFIER, CLASSIFIER_META, ClassifierConfig, bundled_classifier_dir,
                                  init_weights_from, load_classifier, read_classifier_meta, write_classifier_dir)
from vae_model.errors import ModelError


def test_load_classifier_errors_are_one_line_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no classifier.json"):
        load_classifier(str(tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(bundled_classifier_dir(), broken)
    (broken / CLASSIFIER_META).write_text("{not json")
    with pytest.raises(ModelError, match="not a valid classifier.json"):
        load_classifier(str(broken))
    shutil.copy(os.path.join(bundled_classifier_dir(), CLASSIFIER_META), broken / CLASSIFIER_META)
    data = (broken / CLASSIFIER).read_bytes()
    (broken / CLASSIFIER).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_classifier(str(broken))
    # a damaged file whose checksum was "fixed" up still fails cleanly when Keras reads it

    meta = json.loads((broken / CLASSIFIER_META).read_text())
    meta["sha256"][CLASSIFIER] = hashlib.sha256(data[: len(data) // 2]).hexdigest()
    (broken / CLASSIFIER_META).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="could not be loaded as a Keras model") as e:
        load_classifier(str(broken))
    assert "\n" not in str(e.value)
    (broken / CLASSIFIER).unlink()
    with pytest.raises(ModelError, match="is missing"):
        load_classifier(str(broken))


def test_bundled_names_the_shipped_classifier_everywhere(bundled_classifier):
    assert read_classifier_meta("bundled") == read_classifier_meta(None) == bundled_classifier.meta
    assert load_classifier("bundled").path == bundled_classifier.path == bundled_classifier_dir()
    weights, info = init_weights_from("bundled", ClassifierConfig(), (28, 28))
    assert info["path"] == bundled_classifier_dir() and info["classifier_id"] == bundled_classifier.meta[
        "classifier_id"]
    assert [w.shape for w in weights] == [w.shape for w in bundled_classifier.model.get_weights()]


class _FailingModel:
    def save(self, path):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError("disk full")


def test_a_failed_write_leaves_the_old_classifier_directory_untouched(tmp_path):
    out = tmp_path / "clf"
    shutil.copytree(bundled_classifier_dir(), out)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    with pytest.raises(OSError, match="disk full"):
        write_classifier_dir(str(out), _FailingModel(), {"name": "x"})
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["clf"]  # no temp directory left beside it


def test_write_records_the_files_sha256_and_id(tmp_path, bundled_classifier):
    meta = write_classifier_dir(str(tmp_path / "clf"), bundled_classifier.model, {"name": "copy",
                                                                                   "num_classes": 10,
                                                                                   "image_shape": [28, 28],
                                                                                   "config": {}})
    digest = hashlib.sha256((tmp_path / "clf" / CLASSIFIER).read_bytes()).hexdigest()
    assert meta["sha256"] == {CLASSIFIER: digest} and meta["classifier_id"] == digest[:16]
    assert json.loads((tmp_path / "clf" / CLASSIFIER_META).read_text()) == meta
    assert load_classifier(str(tmp_path / "clf")).num_classes == 10
