"""Training the reference CNN, deterministic for a given config and input order: initializers and dropout take
seeds from the config (no global seeding), and tf.data shuffles with the config seed. The same function trains on
a data source, on arrays, or on a `tf.data` stream (the synthetic TFRecord shards for CAS), so "same data, same
seed" gives the same weights whichever way the data arrives."""
from __future__ import annotations

import math
import os
import time

import numpy as np

from vae_model import artifacts
from vae_model.classifier.augmentation import augment_batches, augments
from vae_model.classifier.config import ClassifierConfig, load_classifier_config
from vae_model.classifier.directory import check_out_dir, load_classifier, write_classifier_dir
from vae_model.classifier.model import build_classifier
from vae_model.classifier.prediction import Classifier
from vae_model.data import DataSplits, Dataset, carve_validation, load_source
from vae_model.errors import DataError, UsageError

SHUFFLE_BUFFER = 100_000  # examples; both training paths use min(n, this) so they shuffle identically


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
    _clear_global_seed()
    model = build_classifier(image_shape, cfg)
    if init_weights is not None:
        model.set_weights(init_weights)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    epochs, per_epoch = planned_steps(rows, cfg)
    stream = (ds.shuffle(min(rows, SHUFFLE_BUFFER), seed=t.seed, reshuffle_each_iteration=True).repeat()
              .batch(t.batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE))
    if augments(cfg):
        stream = augment_batches(stream, cfg)
    stream = stream.prefetch(tf.data.AUTOTUNE)
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


def _clear_global_seed():
    """tf.data combines an op seed with the process's global seed, which earlier work may have set (VAE training
    calls keras.utils.set_random_seed). Cleared, the weights depend on the config seed only, as in a fresh process
    (measured: an augment run that trained its VAE in-process got other classifiers than the same run resumed)."""
    import tensorflow as tf

    tf.random.set_seed(None)


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
            train, val = carve_validation(train, t.validation_split, t.seed, "arrays")
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
    _clear_global_seed()  # before sample_from_datasets resolves its seed
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
    where = start.path if "://" in start.path else os.path.abspath(start.path)
    return start.model.get_weights(), {"path": where, "classifier_id": meta.get("classifier_id"),
                                       "data": meta.get("data"), "synthetic": meta.get("synthetic")}


def train_classifier(source_or_arrays, out_dir: str, config: ClassifierConfig | str | None = None, argv=None,
                     verbose: int | str = 0, synthetic=None, real_share: float = 0.5,
                     synthetic_info: dict | None = None, init: str | None = None) -> dict:
    """Train the reference CNN on the labeled rows of a source and write `out_dir` atomically.

    `source_or_arrays`: a source string (`mnist`, `csv:...`, ...), a DataSplits, or (images, labels[, test_images,
    test_labels]). `config`: a ClassifierConfig, a YAML path or bundled config name, or None (defaults). With
    `synthetic` (a tf.data stream, see `train_on_mix`) each batch is `real_share` real rows and the rest synthetic
    records; `synthetic_info` describes them in classifier.json. `init`: a classifier directory (or "bundled")
    whose weights training starts from (fine-tuning, e.g. on real rows after pretraining on shards); it is
    recorded. Test accuracy is measured on the source's test split when it has one. Returns the metadata written
    to classifier.json.
    """
    t0 = time.time()
    cfg = config if isinstance(config, ClassifierConfig) else load_classifier_config(config)
    out_dir = check_out_dir(out_dir)
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

    # a fresh, uncompiled copy: the file holds weights only, no optimizer state
    plain = build_classifier(train.image_shape, cfg)
    plain.set_weights(model.get_weights())
    return write_classifier_dir(out_dir, plain, {
        "name": cfg.name,
        "kind": "classifier",
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
    })
