"""Train a VAE from a config and write a complete, self-describing model directory."""
from __future__ import annotations

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from vae_model import artifacts, latent_stats, plots
from vae_model.config import Config
from vae_model.data import Dataset, load_source
from vae_model.errors import DataError, UsageError
from vae_model.inference import BatchDecoder, BatchEncoder
from vae_model.model_dir import DECODER, ENCODER, HISTORY, META, STATS
from vae_model.models import build_vae


def _model_files(meta: dict):
    """A model.json records the sha256 of every other file it wrote, plots/ included; its id is the decoder's."""
    sha = meta["sha256"]
    if not isinstance(sha, dict) or ENCODER not in sha or meta["model_id"] != sha[DECODER][:16]:
        raise ValueError("not a model.json")
    return sha


MODEL_DIR = artifacts.ArtifactKind("model", META, "a model directory", "--out", "train", _model_files, ("plots",))


def _tf_dataset(ds: Dataset, cfg: Config, shuffle: bool) -> tf.data.Dataset:
    """uint8 images stay uint8 in memory; scaling happens per batch inside tf.data."""
    num_classes = cfg.model.num_classes
    if cfg.model.conditional:
        d = tf.data.Dataset.from_tensor_slices((ds.images, ds.labels.astype(np.int32)))
    else:
        d = tf.data.Dataset.from_tensor_slices(ds.images)
    if shuffle:
        d = d.shuffle(min(len(ds), 60_000), seed=cfg.train.seed, reshuffle_each_iteration=True)
    d = d.batch(cfg.train.batch_size)

    def scale(x, y=None):
        x = tf.cast(x, tf.float32)[..., None] / 255.0
        return x if y is None else (x, tf.one_hot(y, num_classes))

    return d.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def evaluate_elbo(vae, ds: Dataset, cfg: Config, batch_size: int = 1000) -> dict:
    """Single-sample -ELBO (beta = 1) per image on `ds`; nats when the loss is BCE."""
    rec_sum = kl_sum = 0.0

    @tf.function
    def step(batch):
        rec, kl = vae.compute_losses(batch, training=False)
        return tf.reduce_sum(rec), tf.reduce_sum(kl)

    batched = _tf_dataset(ds, cfg, shuffle=False).rebatch(batch_size)
    for batch in batched:
        r, k = step(batch)
        rec_sum += float(r)
        kl_sum += float(k)
    n = len(ds)
    unit = "nats" if cfg.train.loss == "bce" else "sum of squared error"
    return {"images": n, "neg_elbo": (rec_sum + kl_sum) / n, "reconstruction": rec_sum / n, "kl": kl_sum / n,
            "unit": unit}


def _check(cfg: Config, splits):
    size = cfg.model.image_size
    if splits.train.images.shape[1:] != (size, size):
        raise DataError(f"data {splits.source} has {splits.train.images.shape[1]}x{splits.train.images.shape[2]} "
                        f"images but model.image_size is {size}; set --set model.image_size=...")
    if cfg.model.conditional:
        if (splits.train.labels < 0).any():
            raise UsageError(f"a conditional VAE needs every training image labeled, but {splits.source} has "
                             f"{int((splits.train.labels < 0).sum())} unlabeled rows; use an unconditional config")
    labels = splits.train.labels
    if labels.max(initial=-1) >= cfg.model.num_classes:
        raise DataError(f"data {splits.source} has label {labels.max()} but model.num_classes is "
                        f"{cfg.model.num_classes}; raise model.num_classes")


def train(cfg: Config, out_dir: str, argv=None, verbose: int | str = "auto") -> dict:
    """Train, evaluate, compute latent stats and plots; write everything to `out_dir` atomically."""
    t0 = time.time()
    out_dir = artifacts.check_out_dir(out_dir, MODEL_DIR)  # before any work: only a new, empty or earlier model dir
    splits = load_source(cfg.train.data, validation_split=cfg.train.validation_split, seed=cfg.train.seed)
    _check(cfg, splits)
    vae = build_vae(cfg)
    opt_cls = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[cfg.train.optimizer]
    vae.compile(optimizer=opt_cls(learning_rate=cfg.train.learning_rate))
    callbacks = []
    val = _tf_dataset(splits.val, cfg, shuffle=False) if splits.val is not None and len(splits.val) else None
    if cfg.train.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss" if val is not None else "loss",
                                                       patience=cfg.train.patience, restore_best_weights=True))
    history = vae.fit(_tf_dataset(splits.train, cfg, shuffle=True), validation_data=val,
                      epochs=cfg.train.epochs, callbacks=callbacks, verbose=verbose)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}

    with artifacts.atomic_directory(out_dir, MODEL_DIR) as tmp:
        metrics = {}
        if splits.test is not None and len(splits.test):
            metrics["test"] = evaluate_elbo(vae, splits.test, cfg)
        metrics["train_final"] = {k: v[-1] for k, v in hist.items()}
        vae.encoder.save(os.path.join(tmp, ENCODER))
        vae.decoder.save(os.path.join(tmp, DECODER))

        m = cfg.model
        labeled = splits.train.labeled
        encoder = BatchEncoder(vae.encoder, 1000, m.conditional, m.num_classes)
        stats = None
        if len(labeled):
            mu, lv = encoder(labeled.images, labeled.labels)
            stats = latent_stats.compute(mu, lv, labeled.labels, seed=cfg.train.seed)
            with open(os.path.join(tmp, STATS), "wb") as f:
                f.write(stats.to_bytes())
        _write_plots(tmp, vae, cfg, splits, hist, encoder, stats)
        with open(os.path.join(tmp, HISTORY), "w") as f:
            json.dump(hist, f, indent=1)
        checks = artifacts.checksums(tmp)
        meta = {
            "name": cfg.name,
            "model_id": checks[DECODER][:16],
            "latent_dim": m.latent_dim,
            "conditional": m.conditional,
            "num_classes": m.num_classes,
            "image_shape": [m.image_size, m.image_size],
            "kind": m.kind,
            "config": cfg.to_dict(),
            "data": splits.describe(),
            "metrics": metrics,
            "epochs_run": len(hist.get("loss", [])),
            "train_seconds": round(time.time() - t0, 1),
            "command": artifacts.command_line(argv),
            "versions": artifacts.versions(),
            "created": artifacts.utc_now(),
            "sha256": checks,
        }
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
    return meta


def _write_plots(root, vae, cfg, splits, hist, encoder, stats):
    m = cfg.model
    pdir = os.path.join(root, "plots")
    os.makedirs(pdir)
    plots.loss_curves(hist, os.path.join(pdir, "loss_curves.png"))
    shown = splits.test if splits.test is not None and len(splits.test) else splits.train
    shown = type(shown)(shown.images[:5000], shown.labels[:5000])
    mu, _ = encoder(shown.images, shown.labels)
    plots.latent_scatter(mu, shown.labels, os.path.join(pdir, "latent_scatter.png"))
    decoder = BatchDecoder(vae.decoder, 500, m.conditional, m.num_classes)
    if m.latent_dim == 2 and not m.conditional:
        plots.manifold_grid(lambda z: decoder(z)[0], os.path.join(pdir, "manifold.png"))
    # a row per class: conditional models decode the prior with the label, others sample near class means
    rng = np.random.default_rng(cfg.train.seed)
    per_row = 12
    classes = range(m.num_classes) if (m.conditional or stats is None) else stats.classes
    zs, ys = [], []
    for c in classes:
        if m.conditional or stats is None:
            z = rng.standard_normal((per_row, m.latent_dim))
        else:
            i = stats.index_of(int(c))
            # eigh, not cholesky: a class with fewer examples than latent dimensions has a singular covariance
            z = rng.multivariate_normal(stats.means[i], stats.covs[i], size=per_row, method="eigh")
        zs.append(z)
        ys.append(np.full(per_row, c))
    imgs, _ = decoder(np.concatenate(zs).astype(np.float32), np.concatenate(ys))
    plots.save_image(plots.tile(imgs, len(zs), per_row), os.path.join(pdir, "class_samples.png"),
                     "samples, a row per class")
