"""A classifier directory: `classifier.keras` and `classifier.json` (config, data description, metrics, steps,
versions, command line, sha256 of the Keras file). Read through Beam's FileSystems so `gs://` works too."""
from __future__ import annotations

import json
import os
from importlib import resources

from vae_model import artifacts
from vae_model.artifacts import join
from vae_model.classifier.prediction import PREDICT_BATCH, Classifier
from vae_model.errors import ModelError

CLASSIFIER, CLASSIFIER_META = "classifier.keras", "classifier.json"


def bundled_classifier_dir() -> str:
    """The reference MNIST classifier shipped inside the package."""
    return str(resources.files("vae_model") / "pretrained" / "mnist_classifier")


def read_classifier_meta(path: str | None = None) -> dict:
    """classifier.json of a classifier directory (None or "bundled" = the shipped one; no TensorFlow needed);
    ModelError when missing or invalid."""
    path = artifacts.resolve_dir(path, bundled_classifier_dir)
    return artifacts.read_meta(path, CLASSIFIER_META, ("num_classes", "image_shape", "config", ("sha256", CLASSIFIER)),
                               "classifier", "train-classifier", "--classifier")


def load_classifier(path: str | None = None, batch_size: int = PREDICT_BATCH) -> Classifier:
    """Load a classifier directory (local or gs://; None or "bundled" = the shipped MNIST classifier).

    ModelError when the directory, the json or the Keras file is missing, or the Keras file does not match its
    recorded sha256 or cannot be loaded.
    """
    path = artifacts.resolve_dir(path, bundled_classifier_dir)
    meta = read_classifier_meta(path)
    model_path = join(path, CLASSIFIER)
    model = artifacts.load_keras(model_path, meta["sha256"][CLASSIFIER], CLASSIFIER_META,
                                 "retrain or re-copy the classifier directory")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 1 or model.outputs[0].shape[-1] != meta["num_classes"]:
        raise ModelError(f"{model_path} does not look like a reference classifier (input {shape}, output "
                         f"{tuple(model.outputs[0].shape)}); retrain with `vae-augment train-classifier`")
    return Classifier(model, batch_size, meta, path)


def _classifier_files(meta: dict):
    """classifier.json records the sha256 of the one file beside it; its id is that file's."""
    sha = meta["sha256"]
    if not isinstance(sha, dict) or meta["classifier_id"] != sha[CLASSIFIER][:16]:
        raise ValueError("not a classifier.json")
    return sha


CLASSIFIER_DIR = artifacts.ArtifactKind("classifier", CLASSIFIER_META, "a classifier directory", "--out",
                                        "train-classifier", _classifier_files)


def check_out_dir(out_dir: str) -> str:
    """`out_dir` made absolute; UsageError unless it is new, empty or an earlier classifier directory."""
    return artifacts.check_out_dir(out_dir, CLASSIFIER_DIR)


def write_classifier_dir(out_dir: str, model, meta: dict) -> dict:
    """Write `model` and classifier.json (`meta` plus classifier_id and the file's sha256) to `out_dir`
    atomically. Returns the metadata written."""
    with artifacts.atomic_directory(out_dir, CLASSIFIER_DIR) as tmp:
        model.save(os.path.join(tmp, CLASSIFIER))
        sha = artifacts.sha256_file(os.path.join(tmp, CLASSIFIER))
        meta = {"classifier_id": sha[:16], **meta, "sha256": {CLASSIFIER: sha}}
        with open(os.path.join(tmp, CLASSIFIER_META), "w") as f:
            json.dump(meta, f, indent=2)
    return meta
