"""The reference digit classifier: a small CNN used to score synthetic data (label fidelity, CAS) and to filter
records inside the generate job.

Architecture (plain Keras layers, so `keras.models.load_model` loads `classifier.keras` without this package):
raw pixels 0..255 as float32 (H, W, 1) -> Rescaling(1/255) -> per conv block: Conv2D(f, k, valid, relu) +
MaxPooling2D(2) -> Flatten -> Dropout -> Dense(units, relu) -> Dropout -> Dense(num_classes) logits.

Training is deterministic for a given config and input order: initializers and dropout take seeds from the
config (no global seeding), and tf.data shuffles with the config seed. The same function trains on a data source,
on arrays, or on a `tf.data` stream (the synthetic TFRecord shards for CAS), so "same data, same seed" gives the
same weights whichever way the data arrives.

A classifier directory holds `classifier.keras` and `classifier.json` (config, data description, metrics,
steps, versions, command line, sha256 of the Keras file).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import typing
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from vae_model import artifacts
from vae_model.config import _build as _build_dataclass
from vae_model.data import DataSplits, Dataset, load_source
from vae_model.errors import ConfigError, DataError, ModelError, UsageError
from vae_model.artifacts import exists, join, read_bytes

CLASSIFIER, CLASSIFIER_META = "classifier.keras", "classifier.json"
SHUFFLE_BUFFER = 100_000  # examples; both training paths use min(n, this) so they shuffle identically
PREDICT_BATCH = 1024


def bundled_classifier_dir() -> str:
    """The reference MNIST classifier shipped inside the package."""
    return str(resources.files("vae_model") / "pretrained" / "mnist_classifier")


# ---------------------------------------------------------------------------------------------- config

@dataclass
class ClassifierModelConfig:
    filters: list[int] = field(default_factory=lambda: [32, 64])  # one conv block per entry
    kernel_size: int = 3
    dense_units: int = 128
    dropout: float = 0.25
    num_classes: int = 10


@dataclass
class ClassifierTrainConfig:
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.0
    max_steps: int = 0  # cap on optimizer steps (0 = epochs x ceil(rows / batch_size))


@dataclass
class ClassifierConfig:
    name: str = "mnist_classifier"
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace_train(self, **changes) -> "ClassifierConfig":
        return ClassifierConfig(self.name, dataclasses.replace(self.model),
                                dataclasses.replace(self.train, **changes)).validate()

    def validate(self, image_size: int = 28) -> "ClassifierConfig":
        m, t = self.model, self.train
        if not m.filters or any(f <= 0 for f in m.filters):
            raise ConfigError(f"model.filters must be a non-empty list of positive widths, got {m.filters}")
        for key, value in (("model.kernel_size", m.kernel_size), ("model.dense_units", m.dense_units),
                           ("model.num_classes", m.num_classes), ("train.epochs", t.epochs),
                           ("train.batch_size", t.batch_size)):
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if m.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {m.num_classes}")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
            raise ConfigError(f"train.learning_rate must be a positive number, got {t.learning_rate}")
        if not 0.0 <= t.validation_split < 1.0:
            raise ConfigError(f"train.validation_split must be in [0, 1), got {t.validation_split}")
        if t.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {t.seed}")
        if t.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0 (0 = no cap), got {t.max_steps}")
        if _feature_side(image_size, m) < 1:
            raise ConfigError(f"{len(m.filters)} conv blocks with kernel {m.kernel_size} shrink {image_size}x"
                              f"{image_size} images to nothing; use fewer blocks or a smaller model.kernel_size")
        return self


def _feature_side(side: int, m: ClassifierModelConfig) -> int:
    for _ in m.filters:
        side = (side - m.kernel_size + 1) // 2
    return side


def classifier_config_from_dict(data: dict) -> ClassifierConfig:
    return _build_dataclass(ClassifierConfig, data or {}, "").validate()


def load_classifier_config(path: str | None = None, overrides: typing.Sequence[str] = ()) -> ClassifierConfig:
    """YAML classifier config (None = built-in defaults, the same as configs/classifier.yaml) + `key=value`."""
    data: dict = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        except (FileNotFoundError, IsADirectoryError):
            raise ConfigError(f"config file {path} does not exist; pass configs/classifier.yaml or omit --config") \
                from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") \
                from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
    for item in overrides:
        _apply_override(data, item)
    try:
        return classifier_config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{'config ' + path if path else 'config'}: {e}") from None


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} must look like key=value, e.g. --set train.epochs=2")
    parts = key.strip().split(".")
    if len(parts) == 1 and parts[0] != "name":  # a bare field name: find the section that owns it
        owners = [s for s, cls in (("model", ClassifierModelConfig), ("train", ClassifierTrainConfig))
                  if parts[0] in {f.name for f in dataclasses.fields(cls)}]
        if len(owners) == 1:
            parts = [owners[0], parts[0]]
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {p} is not a section")
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------- model

def build_classifier(image_shape: tuple[int, int], cfg: ClassifierConfig):
    """The reference CNN (uncompiled). Input: float32 (H, W, 1) raw pixel values 0..255; output: logits."""
    import keras

    m, seed = cfg.model, cfg.train.seed
    L = keras.layers
    init = iter(range(1000))

    def glorot():
        return keras.initializers.GlorotUniform(seed=seed * 1000 + next(init))

    layers = [keras.Input((*image_shape, 1), name="image"), L.Rescaling(1.0 / 255.0, name="scale")]
    for i, f in enumerate(m.filters):
        layers += [L.Conv2D(f, m.kernel_size, activation="relu", kernel_initializer=glorot(), name=f"conv{i + 1}"),
                   L.MaxPooling2D(2, name=f"pool{i + 1}")]
    layers += [L.Flatten(name="flatten"), L.Dropout(m.dropout, seed=seed * 1000 + 500, name="dropout1"),
               L.Dense(m.dense_units, activation="relu", kernel_initializer=glorot(), name="dense"),
               L.Dropout(m.dropout, seed=seed * 1000 + 501, name="dropout2"),
               L.Dense(m.num_classes, kernel_initializer=glorot(), name="logits")]
    return keras.Sequential(layers, name=cfg.name)


def planned_steps(rows: int, cfg: ClassifierConfig) -> tuple[int, int]:
    """(epochs, steps per epoch) for `rows` training examples; max_steps caps the total."""
    t = cfg.train
    per_epoch = max(1, math.ceil(rows / t.batch_size))
    if t.max_steps and t.epochs * per_epoch > t.max_steps:
        per_epoch = max(1, math.ceil(t.max_steps / t.epochs))
    return t.epochs, per_epoch


def train_on_dataset(ds, rows: int, image_shape: tuple[int, int], cfg: ClassifierConfig, val: Dataset | None = None,
                     verbose: int | str = 0, init_weights: list | None = None):
    """Train the reference CNN on an unbatched tf.data stream of (uint8 [H, W, 1], int label), from fresh
    weights or from `init_weights` (another reference CNN's `get_weights()`, for fine-tuning).

    `rows` is the number of examples in one pass over `ds` (sets the shuffle buffer and steps per epoch).
    Returns (model, info) with info = {"rows", "epochs", "steps", "history"}.
    """
    import keras
    import tensorflow as tf

    if rows <= 0:
        raise DataError("no labeled training examples; the classifier needs labeled images")
    cfg.validate(image_shape[0])
    t = cfg.train
    model = build_classifier(image_shape, cfg)
    if init_weights is not None:
        model.set_weights(init_weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    epochs, per_epoch = planned_steps(rows, cfg)
    stream = (ds.shuffle(min(rows, SHUFFLE_BUFFER), seed=t.seed, reshuffle_each_iteration=True).repeat()
              .batch(t.batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    val_data = None
    if val is not None and len(val):
        val_data = (tf.data.Dataset.from_tensor_slices((val.images[..., None], val.labels))
                    .batch(1000).map(_to_float).prefetch(tf.data.AUTOTUNE))
    history = model.fit(stream, epochs=epochs, steps_per_epoch=per_epoch, validation_data=val_data, shuffle=False,
                        verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return model, {"rows": int(rows), "epochs": epochs, "steps": epochs * per_epoch, "history": hist}


def _to_float(x, y):
    import tensorflow as tf
    return tf.cast(x, tf.float32), y


def train_on_arrays(images: np.ndarray, labels: np.ndarray, cfg: ClassifierConfig, val: Dataset | None = None,
                    verbose: int | str = 0, init_weights: list | None = None):
    """Train on uint8 (N, H, W) images and int labels (rows with label < 0 are dropped). Returns (model, info)."""
    import tensorflow as tf

    ds = Dataset(np.asarray(images), np.asarray(labels)).labeled
    _check_labels(ds.labels, cfg, "training data")
    stream = tf.data.Dataset.from_tensor_slices((ds.images[..., None], ds.labels))
    return train_on_dataset(stream, len(ds), ds.image_shape, cfg, val=val, verbose=verbose, init_weights=init_weights)


def _check_labels(labels: np.ndarray, cfg: ClassifierConfig, what: str):
    if len(labels) and labels.max() >= cfg.model.num_classes:
        raise DataError(f"{what} has label {labels.max()} but model.num_classes is {cfg.model.num_classes}; "
                        "raise model.num_classes")


def evaluate_accuracy(model_or_classifier, images: np.ndarray, labels: np.ndarray,
                      batch_size: int = PREDICT_BATCH) -> float:
    """Top-1 accuracy on the labeled rows (label >= 0) of uint8 (N, H, W) images."""
    clf = model_or_classifier if isinstance(model_or_classifier, Classifier) else Classifier(
        model_or_classifier, batch_size)
    return clf.accuracy(images, labels)


# ---------------------------------------------------------------------------------------------- predicting

class Classifier:
    """A loaded classifier with batched prediction through a fixed-signature tf.function.

    Every call pads its last chunk to `batch_size`, so predictions depend only on the rows themselves.
    """

    def __init__(self, model, batch_size: int = PREDICT_BATCH, meta: dict | None = None, path: str | None = None):
        import tensorflow as tf

        if batch_size <= 0:
            raise UsageError(f"classifier batch size must be > 0, got {batch_size}")
        self.model, self.meta, self.path, self.batch_size = model, meta or {}, path, batch_size
        h, w = model.inputs[0].shape[1:3]
        self.image_shape = (int(h), int(w))
        self.num_classes = int(model.outputs[0].shape[-1])

        @tf.function(input_signature=[tf.TensorSpec([batch_size, h, w], tf.uint8)])
        def probabilities(images):
            x = tf.cast(images, tf.float32)[..., None]
            return tf.nn.softmax(model(x, training=False), axis=-1)

        self._probabilities = probabilities

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, num_classes) softmax probabilities for uint8 (N, H, W) or (N, H, W, 1) images."""
        from vae_model.inference import _chunks, _pad

        images = np.asarray(images)
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise DataError(f"classifier {self.path or ''} expects uint8 images of {self.image_shape[0]}x"
                            f"{self.image_shape[1]}, got {images.dtype} {tuple(images.shape[1:])}; "
                            "use a classifier trained on images of this size")
        out = np.empty((len(images), self.num_classes), np.float32)
        for a, b in _chunks(len(images), self.batch_size):
            out[a:b] = self._probabilities(_pad(images[a:b], self.batch_size)).numpy()[: b - a]
        return out

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities(images).argmax(axis=1).astype(np.int64)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        labels = np.asarray(labels)
        keep = labels >= 0
        if not keep.any():
            raise DataError("no labeled images to score accuracy on")
        return float((self.predict(np.asarray(images)[keep]) == labels[keep]).mean())


def prob_of_label(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p(label) per row; for unlabeled rows (label < 0) the top class probability."""
    labels = np.asarray(labels, np.int64)
    out = probs.max(axis=1)
    lab = labels >= 0
    out[lab] = probs[np.flatnonzero(lab), labels[lab]]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------- directory

def read_classifier_meta(path: str | None = None) -> dict:
    """classifier.json of a classifier directory (no TensorFlow needed); ModelError when missing or invalid."""
    path = path or bundled_classifier_dir()
    meta_path = join(path, CLASSIFIER_META)
    if not exists(meta_path):
        what = "does not exist" if not exists(path) else f"has no {CLASSIFIER_META}"
        raise ModelError(f"classifier directory {path} {what}; pass a directory written by "
                         "`vae-augment train-classifier` or omit --classifier to use the bundled one")
    try:
        meta = json.loads(read_bytes(meta_path))
        for key in ("num_classes", "image_shape", "config", "sha256"):
            meta[key]
        meta["sha256"][CLASSIFIER]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{meta_path} is not a valid {CLASSIFIER_META} ({type(e).__name__}: {e}); "
                         "retrain with `vae-augment train-classifier`") from None
    return meta


def load_classifier(path: str | None = None, batch_size: int = PREDICT_BATCH) -> Classifier:
    """Load a classifier directory (local or gs://; None = the bundled MNIST classifier).

    ModelError when the directory, the json or the Keras file is missing, or the Keras file does not match its
    recorded sha256 or cannot be loaded.
    """
    import keras

    path = path or bundled_classifier_dir()
    meta = read_classifier_meta(path)
    model_path = join(path, CLASSIFIER)
    if not exists(model_path):
        raise ModelError(f"{model_path} is missing; the classifier directory is incomplete, retrain or re-copy it")
    data = read_bytes(model_path)
    if hashlib.sha256(data).hexdigest() != meta["sha256"][CLASSIFIER]:
        raise ModelError(f"{model_path} does not match the sha256 in {CLASSIFIER_META} (changed or damaged); "
                         "retrain or re-copy the classifier directory")
    tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
    try:
        tmp.write(data)
        tmp.close()
        model = keras.models.load_model(tmp.name, compile=False)
    except Exception as e:  # keras raises many types for a damaged zip
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelError(f"{model_path} could not be loaded as a Keras model ({first}); retrain or re-copy the "
                         "classifier directory") from None
    finally:
        os.unlink(tmp.name)
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 1 or model.outputs[0].shape[-1] != meta["num_classes"]:
        raise ModelError(f"{model_path} does not look like a reference classifier (input {shape}, output "
                         f"{tuple(model.outputs[0].shape)}); retrain with `vae-augment train-classifier`")
    return Classifier(model, batch_size, meta, path)


def _as_splits(source_or_arrays, cfg: ClassifierConfig) -> DataSplits:
    t = cfg.train
    if isinstance(source_or_arrays, str):
        return load_source(source_or_arrays, validation_split=t.validation_split, seed=t.seed)
    if isinstance(source_or_arrays, DataSplits):
        return source_or_arrays
    if isinstance(source_or_arrays, tuple) and len(source_or_arrays) in (2, 4):
        train = Dataset(np.asarray(source_or_arrays[0]), np.asarray(source_or_arrays[1]))
        test = Dataset(np.asarray(source_or_arrays[2]), np.asarray(source_or_arrays[3])) \
            if len(source_or_arrays) == 4 else None
        val = None
        if t.validation_split > 0:
            from vae_model.data import _carve_validation
            train, val = _carve_validation(train, t.validation_split, t.seed, "arrays")
        return DataSplits("arrays", train, test, val)
    raise UsageError("train_classifier needs a data source string, DataSplits, or (images, labels[, test_images, "
                     f"test_labels]); got {type(source_or_arrays).__name__}")


def check_real_share(real_share: float) -> None:
    if not (isinstance(real_share, (int, float)) and math.isfinite(real_share) and 0.0 < real_share < 1.0):
        raise UsageError(f"--real-share must be in (0, 1): the share of real images in each batch, got {real_share!r}")


def train_on_mix(real: Dataset, synthetic, real_share: float, cfg: ClassifierConfig, val: Dataset | None = None,
                 verbose: int | str = 0, init_weights: list | None = None):
    """Train on real labeled rows mixed with a synthetic stream (unbatched (uint8 [H, W, 1], int64 label), e.g.
    `pipeline.readers.tfrecord_dataset`), `real_share` of each batch real in expectation.

    An epoch is one pass over the real rows, so the real images are seen as often as when training on them
    alone for the same epochs; unlabeled synthetic records (label -1) are skipped.
    """
    import tensorflow as tf

    check_real_share(real_share)
    _check_labels(real.labels, cfg, "training data")
    real_ds = tf.data.Dataset.from_tensor_slices((real.images[..., None], real.labels)).repeat()
    syn = synthetic.filter(lambda x, y: y >= 0).map(lambda x, y: (x, tf.cast(y, tf.int64))).repeat()
    stream = tf.data.Dataset.sample_from_datasets([real_ds, syn], [real_share, 1.0 - real_share],
                                                  seed=cfg.train.seed)
    return train_on_dataset(stream, math.ceil(len(real) / real_share), real.image_shape, cfg, val=val,
                            verbose=verbose, init_weights=init_weights)


def init_weights_from(init: str, cfg: ClassifierConfig, image_shape: tuple[int, int]) -> tuple[list, dict]:
    """Weights of the classifier directory `init` to fine-tune from, and its record for classifier.json.

    The directory must hold a reference CNN of the same model section and image size as the one being trained.
    """
    start = load_classifier(init)
    meta = start.meta
    if tuple(meta["image_shape"]) != tuple(image_shape):
        h, w = meta["image_shape"]
        raise DataError(f"--init {init} was trained on {h}x{w} images but the data has {image_shape[0]}x"
                        f"{image_shape[1]}; start from a classifier trained on images of this size")
    theirs, ours = meta["config"].get("model"), cfg.to_dict()["model"]
    if theirs != ours:
        diff = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
                         for k in ours if theirs.get(k) != ours.get(k))
        raise UsageError(f"--init {init} has another architecture ({diff}); use its model section "
                         "(--config/--set) or start without --init")
    where = init if "://" in init else os.path.abspath(init)
    return start.model.get_weights(), {"path": where, "classifier_id": meta.get("classifier_id"),
                                       "data": meta.get("data"), "synthetic": meta.get("synthetic")}


def train_classifier(source_or_arrays, out_dir: str, config: ClassifierConfig | str | None = None, argv=None,
                     verbose: int | str = 0, synthetic=None, real_share: float = 0.5,
                     synthetic_info: dict | None = None, init: str | None = None) -> dict:
    """Train the reference CNN on the labeled rows of a source and write `out_dir` atomically.

    `source_or_arrays`: a source string (`mnist`, `csv:...`, ...), a DataSplits, or (images, labels[, test_images,
    test_labels]). `config`: a ClassifierConfig, a YAML path or None (defaults). With `synthetic` (a tf.data
    stream, see `train_on_mix`) each batch is `real_share` real rows and the rest synthetic records;
    `synthetic_info` describes them in classifier.json. `init`: a classifier directory whose weights training
    starts from (fine-tuning, e.g. on real rows after pretraining on shards); it is recorded. Test accuracy is
    measured on the source's test split when it has one. Returns the metadata written to classifier.json.
    """
    t0 = time.time()
    cfg = config if isinstance(config, ClassifierConfig) else load_classifier_config(config)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or (
            os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, CLASSIFIER_META)))):
        raise UsageError(f"--out {out_dir} exists and is not a classifier directory; choose a new or empty "
                         "directory (an existing classifier directory is replaced)")
    splits = _as_splits(source_or_arrays, cfg)
    train = splits.train.labeled
    if not len(train):
        raise DataError(f"data {splits.source} has no labeled training rows; the classifier needs labels")
    cfg.validate(train.image_shape[0])
    _check_labels(train.labels, cfg, f"data {splits.source}")
    val = splits.val.labeled if splits.val is not None else None
    syn_shape = tuple((synthetic_info or {}).get("image_shape", train.image_shape))
    if syn_shape != train.image_shape:
        raise DataError(f"synthetic records {synthetic_info.get('dir', '')} are {syn_shape[0]}x{syn_shape[1]} but "
                        f"{splits.source} has {train.image_shape[0]}x{train.image_shape[1]} images; generate with a "
                        "model trained on images of this size")
    weights, init_info = init_weights_from(init, cfg, train.image_shape) if init is not None else (None, None)
    if synthetic is None:
        model, info = train_on_arrays(train.images, train.labels, cfg, val=val, verbose=verbose, init_weights=weights)
    else:
        model, info = train_on_mix(train, synthetic, real_share, cfg, val=val, verbose=verbose, init_weights=weights)
    clf = Classifier(model)
    metrics = {"train_final": {k: v[-1] for k, v in info["history"].items()}}
    for name, split in (("test", splits.test), ("val", val)):
        if split is not None and len(split.labeled):
            metrics[name] = {"accuracy": clf.accuracy(split.images, split.labels), "images": len(split.labeled)}

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-classifier-", dir=parent)
    try:
        # a fresh, uncompiled copy: the file holds weights only, no optimizer state
        plain = build_classifier(train.image_shape, cfg)
        plain.set_weights(model.get_weights())
        plain.save(os.path.join(tmp, CLASSIFIER))
        sha = artifacts.sha256_file(os.path.join(tmp, CLASSIFIER))
        meta = {
            "name": cfg.name,
            "kind": "classifier",
            "classifier_id": sha[:16],
            "num_classes": cfg.model.num_classes,
            "image_shape": list(train.image_shape),
            "parameters": int(plain.count_params()),
            "config": cfg.to_dict(),
            "data": splits.describe(),
            "synthetic": None if synthetic is None else {**(synthetic_info or {}), "real_share": real_share},
            "init": init_info,
            "metrics": metrics,
            "rows": info["rows"],
            "epochs_run": info["epochs"],
            "steps": info["steps"],
            "history": info["history"],
            "train_seconds": round(time.time() - t0, 1),
            "command": artifacts.command_line(argv),
            "versions": artifacts.versions(),
            "created": artifacts.utc_now(),
            "sha256": {CLASSIFIER: sha},
        }
        with open(os.path.join(tmp, CLASSIFIER_META), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
