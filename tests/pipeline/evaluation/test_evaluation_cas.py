"""CAS and its ceiling: the config it trains with, when the recorded ceiling is reused, the cases where CAS does
not apply, and (e2e) the trained scores themselves."""
import dataclasses

import numpy as np
import pytest

from pipeline.evaluation.cas import _recorded_ceiling, cas_config, cas_section
from pipeline.evaluation.metrics import RealSplits
from vae_model.data import Dataset
from vae_model.errors import DataError, ModelError


class FakeClassifier:
    """Only the directory side of a classifier (meta, path): what cas_config and the ceiling rule read."""

    def __init__(self, meta, path="clf/"):
        self.meta, self.path = meta, path


def _meta(cfg, source="mnist", test_images=100, accuracy=0.9):
    return {"config": cfg.to_dict(), "data": {"source": source}, "steps": 77,
            "metrics": {"test": {"images": test_images, "accuracy": accuracy}}}


@pytest.fixture(scope="module")
def cfg():
    from vae_model.classifier import load_classifier_config
    return load_classifier_config(None, ["epochs=3", "max_steps=50", "validation_split=0.1"])


def _real(n_test=100, holdout_note=None, classes=range(10)):
    y = np.resize(np.array(list(classes)), n_test)
    test = Dataset(np.zeros((n_test, 4, 4), np.uint8), y)
    return RealSplits("mnist", None, test, test, holdout_note)


def test_cas_trains_with_the_classifier_config_with_no_validation_split(cfg):
    clf = FakeClassifier(_meta(cfg))
    kept = cas_config(clf, None, None)
    assert kept.train.epochs == 3 and kept.train.max_steps == 50 and kept.train.validation_split == 0.0
    assert kept.model == cfg.model
    changed = cas_config(clf, 1, 0)
    assert changed.train.epochs == 1 and changed.train.max_steps == 0


def test_an_unusable_classifier_config_is_a_model_error_naming_the_directory(cfg):
    meta = _meta(cfg)
    meta["config"]["model"]["no_such_key"] = 1
    with pytest.raises(ModelError, match="classifier old/clf: its classifier.json config is not usable") as e:
        cas_config(FakeClassifier(meta, "old/clf"), None, None)
    assert "\n" not in str(e.value)


def test_the_recorded_ceiling_is_reused_only_for_the_same_source_test_set_and_config(cfg):
    cfg0 = cas_config(FakeClassifier(_meta(cfg)), None, None)
    same = _recorded_ceiling(FakeClassifier(_meta(cfg0)), cfg0, _real(), _real().test, False)
    assert same["ceiling"] == 0.9 and same["ceiling_steps"] == 77 and same["ceiling_source"].startswith("recorded")
    other_train = dataclasses.replace(cfg0, train=dataclasses.replace(cfg0.train, epochs=9))
    for clf, c, real, restricted in [
        (FakeClassifier(_meta(cfg0, source="mnist?limit=10")), cfg0, _real(), False),  # another source
        (FakeClassifier(_meta(cfg0, test_images=99)), cfg0, _real(), False),  # another test set
        (FakeClassifier(_meta(cfg0)), other_train, _real(), False),  # another training config
        (FakeClassifier(_meta(cfg0)), cfg0, _real(holdout_note="held out"), False),  # test held out of train
        (FakeClassifier(_meta(cfg0)), cfg0, _real(), True),  # scored on some classes only
    ]:
        assert _recorded_ceiling(clf, c, real, real.test, restricted) is None


def test_cas_does_not_apply_to_unlabeled_records_or_classes_the_test_set_lacks(cfg):
    clf = FakeClassifier(_meta(cfg))
    unl = cas_section("out", {}, {-1: 50}, clf, cfg, _real(), print, 0)
    assert not unl["applicable"] and "unlabeled" in unl["reason"]
    absent = cas_section("out", {}, {7: 5}, clf, cfg, _real(classes=[0, 1]), print, 0)
    assert not absent["applicable"] and absent["reason"] == "the real test set has no images of classes [7]"
    with pytest.raises(DataError, match="label 10 but the reference architecture has 10 classes"):
        cas_section("out", {}, {3: 5, 10: 1}, clf, cfg, _real(), print, 0)


# ---------------------------------------------------------------------------------------------- e2e: training

@pytest.fixture(scope="module")
def tiny_clf(tmp_path_factory, real_source):
    """The reference CNN trained 1 epoch on the 2,000 train digits of the real source (its recorded test accuracy
    is the ceiling for the same data and config)."""
    from vae_model.classifier import load_classifier_config, train_classifier
    out = tmp_path_factory.mktemp("clf") / "tiny"
    train_classifier(real_source, str(out), load_classifier_config(None, ["epochs=1"]))
    return str(out)


@pytest.mark.e2e
def test_cas_on_real_images_equals_the_real_training_ceiling(tmp_path, real, real_source, fast, write_output,
                                                             tiny_clf):
    """Same images in the same order, same config and seed: the CAS classifier (trained from the TFRecord stream) is
    the ceiling classifier (trained from arrays), whether the ceiling is the recorded one or trained again."""
    from pipeline.evaluation.evaluate import evaluate

    out = write_output(tmp_path / "realcopy", real.train.images, real.train.labels)
    recorded = evaluate(out, real_source, tiny_clf, None, dataclasses.replace(fast, cas_epochs=None))["cas"]
    assert recorded["ceiling_source"].startswith("recorded in")
    assert recorded["cas"] == recorded["ceiling"] and recorded["gap"] == 0
    assert recorded["steps"] == recorded["ceiling_steps"] == 16 and recorded["read_from"].startswith("tfrecord")
    # bundled classifier: its recorded ceiling is for full MNIST and 4 epochs, so the ceiling is trained here
    trained = evaluate(out, real_source, None, None, dataclasses.replace(fast, cas_epochs=1, cas_max_steps=8))["cas"]
    assert trained["ceiling_source"].startswith("trained now")
    assert trained["cas"] == trained["ceiling"] and trained["steps"] == trained["ceiling_steps"] == 8


@pytest.mark.e2e
def test_cas_reads_parquet_when_no_tfrecords_and_restricts_to_the_classes_present(tmp_path, real, real_source,
                                                                                   fast, write_output):
    from pipeline.evaluation.evaluate import evaluate

    keep = np.isin(real.train.labels, [0, 1])
    out = write_output(tmp_path / "pq01", real.train.images[keep], real.train.labels[keep], formats=("parquet",))
    r = evaluate(out, real_source, None, None, dataclasses.replace(fast, cas_epochs=1, cas_max_steps=4))
    cas = r["cas"]
    assert cas["classes"] == [0, 1] and "classes [0, 1] only" in cas["note"]
    assert cas["test_images"] == int(np.isin(real.test.labels, [0, 1]).sum())
    assert cas["read_from"].startswith("parquet") and cas["cas"] == cas["ceiling"]
    assert list(r["diversity"]["per_class"]) == ["0", "1"]


@pytest.mark.e2e
def test_a_real_source_without_test_split_is_scored_on_its_seeded_holdout(tmp_path, real, fast, write_output):
    from pipeline.evaluation.evaluate import evaluate

    real_dir = write_output(tmp_path / "realsrc", real.train.images[:600], real.train.labels[:600])
    out = write_output(tmp_path / "o", real.test.images[:100], real.test.labels[:100])
    r = evaluate(out, f"parquet:{real_dir}", None, None, dataclasses.replace(fast, cas_epochs=1, cas_max_steps=2))
    assert r["real"]["test_images"] == 100 and r["real"]["train_rows"] == 500  # 600 // 6 held out
    assert any("held out" in n for n in r["notes"])
    assert r["cas"]["test_images"] == 100 and r["cas"]["ceiling_source"].startswith("trained now")
