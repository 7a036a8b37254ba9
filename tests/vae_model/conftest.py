"""Fixtures only the vae_model tests use."""
import pytest


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    """The reference CNN trained for one epoch on 2,000 real digits (a few seconds)."""
    from vae_model.classifier import load_classifier_config, train_classifier

    out = tmp_path_factory.mktemp("classifiers") / "tiny"
    argv = ["vae-augment", "train-classifier", "--data", "mnist?limit=2000", "--out", "tiny", "--set", "epochs=1"]
    train_classifier("mnist?limit=2000", str(out), load_classifier_config(None, ["epochs=1"]), argv=argv)
    return str(out)


@pytest.fixture(scope="session")
def bundled_classifier():
    from vae_model.classifier import load_classifier
    return load_classifier(None)


@pytest.fixture(scope="module")
def mnist():
    from vae_model.data import load_source
    return load_source("mnist")


@pytest.fixture(scope="module")
def rows(mnist):
    """A small real subset: 60 train rows (every class present) and 20 test rows."""
    return (mnist.train.images[:60], mnist.train.labels[:60], mnist.test.images[:20], mnist.test.labels[:20])
