"""TensorFlow Datasets metadata for an output, so `tfds.builder_from_directory(OUT_DIR)` reads its TFRecord shards
as a `train` split without copying or renaming them.

Written by hand in TFDS's JSON layout (dataset_info.json: DatasetInfo proto as JSON; features.json: the
FeaturesDict), so publishing needs neither tensorflow-datasets nor TensorFlow. The split's `filepathTemplate`
names our shards where they are (`tfrecord/part-{SHARD_X_OF_Y}.tfrecord`, relative to OUT_DIR). The features
describe the tf.train.Example keys `example.py` writes: `image` is a uint8 (H, W) tensor stored as raw bytes
(TFDS's Tensor "bytes" encoding is exactly our H*W raw bytes), `latent` a float32 (d,) tensor.
"""
from __future__ import annotations

import json

from pipeline.dataset import layout
from pipeline.dataset.arrow import DEFAULT_NUM_CLASSES

INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
DATASET_NAME = "vae_augment"
VERSION = "1.0.0"
MARKER = "Written by vae-augment"  # starts `description`: how publish tells our dataset_info.json from a user's

_PY = "tensorflow_datasets.core.features."


def _tensor(shape, dtype: str, encoding: str = "none") -> dict:
    cls = "scalar.Scalar" if not shape else "tensor_feature.Tensor"
    dims = {"dimensions": [str(int(d)) for d in shape]} if shape else {}
    return {"pythonClassName": _PY + cls, "tensor": {"shape": dims, "dtype": dtype, "encoding": encoding}}


def features_json(height: int, width: int, latent_dim: int, num_classes: int = DEFAULT_NUM_CLASSES) -> dict:
    text = {"pythonClassName": _PY + "text_feature.Text", "text": {}}
    return {
        "pythonClassName": _PY + "features_dict.FeaturesDict",
        "featuresDict": {"features": {
            "id": _tensor((), "int64"),
            # No names file: TFDS names the classes "0".."num_classes-1", as the Parquet ClassLabel does.
            "label": {"pythonClassName": _PY + "class_label_feature.ClassLabel",
                      "classLabel": {"numClasses": str(int(num_classes))}},
            "image": _tensor((height, width), "uint8", "bytes"),
            "latent": _tensor((latent_dim,), "float32"),
            "sampler": text,
            "model_id": text,
            "seed": _tensor((), "int64"),
        }},
    }


def num_classes_of(manifest: dict) -> int:
    labels = [int(c) for c in manifest.get("per_class", {}) if int(c) >= 0]
    return max(DEFAULT_NUM_CLASSES, max(labels) + 1) if labels else DEFAULT_NUM_CLASSES


def dataset_info_json(manifest: dict) -> dict:
    """dataset_info.json of an output from its manifest (shards in manifest order = shard number order)."""
    shards = sorted((s for s in manifest["shards"] if s["format"] == "tfrecord"), key=lambda s: s["path"])
    return {
        "name": DATASET_NAME,
        "description": f"{MARKER}: {manifest['total']:,} synthetic {manifest['height']}x{manifest['width']} images "
                       f"decoded by VAE {manifest.get('model_id', '?')} (sampler {manifest.get('sampler', '?')}, "
                       f"seed {manifest.get('seed', '?')}); dataset_digest {manifest.get('dataset_digest', '?')}. "
                       "See README.md beside it.",
        "fileFormat": "tfrecord",
        "splits": [{
            "name": "train",
            "shardLengths": [str(int(s["rows"])) for s in shards],
            "numBytes": str(sum(int(s["bytes"]) for s in shards)),
            "filepathTemplate": f"{layout.SHARD_DIRS['tfrecord']}/{layout.FILE_PREFIX}-{{SHARD_X_OF_Y}}"
                                f"{layout.SUFFIX['tfrecord']}",
        }],
        "version": VERSION,
        "moduleName": "pipeline.dataset.tfds",
    }


def tfds_files(manifest: dict) -> dict[str, str]:
    """{file name in OUT_DIR: text} of the TFDS metadata, or {} when the output has no TFRecord shards or its
    shard names carry a job token (TFDS's template has no field for it)."""
    if "tfrecord" not in manifest["formats"]:
        return {}
    names = [s["path"].rsplit("/", 1)[-1] for s in manifest["shards"] if s["format"] == "tfrecord"]
    n = len(names)
    if sorted(names) != [layout.shard_name(layout.FILE_PREFIX, i, n, layout.SUFFIX["tfrecord"]) for i in range(n)]:
        return {}
    features = features_json(manifest["height"], manifest["width"], manifest.get("latent_dim", 0),
                             num_classes_of(manifest))
    return {INFO_FILE: json.dumps(dataset_info_json(manifest), indent=1) + "\n",
            FEATURES_FILE: json.dumps(features, indent=1) + "\n"}


def is_ours(name: str, text: str) -> bool:
    """Whether `text` (the content of OUT/`name`) is TFDS metadata this module wrote."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    if name == INFO_FILE:
        return str(data.get("description", "")).startswith(MARKER)
    return name == FEATURES_FILE and data.get("pythonClassName") == _PY + "features_dict.FeaturesDict" \
        and set(data.get("featuresDict", {}).get("features", {})) == {"id", "label", "image", "latent", "sampler",
                                                                       "model_id", "seed"}
