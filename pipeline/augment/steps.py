"""The steps of `augment`, each a call of the library function the single command makes (no copies):

    vae            vae_model.training.train                       (`vae-augment train`)
    labeler / B    vae_model.classifier.train_classifier          (`vae-augment train-classifier [--init]`)
    selftrain      vae_model.classifier.train_classifier on the shards + the pseudo-labeled real rows
    pseudo-label   vae_model.pseudo_label.make_pseudo_labeled_source  (`vae-augment pseudo-label`)
    stats          pipeline.generate.class_stats.write_stats_file (`vae-augment stats`)
    generate       pipeline.generate.graph.run_job                (`vae-augment generate`)
    evaluate       pipeline.evaluation.evaluate.evaluate          (`vae-augment evaluate`)

Each writes into `out`, a path inside the step's temp folder; run.py moves it into place.
Heavy imports stay inside the functions (`import pipeline.cli` must not import TensorFlow or Beam).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from importlib import resources

import numpy as np

from pipeline.augment import data as D
from vae_model.errors import DataError, UsageError

LOCAL_BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
BUNDLED_UNLABELED = "bundled-unlabeled"


def bundled_unlabeled_dir() -> str:
    """The conv VAE trained without labels on the 60,000 MNIST training images (never the test images)."""
    return str(resources.files("vae_model") / "pretrained" / "mnist_unlabeled")


def resolve_vae(vae: str | None) -> str | None:
    if vae == BUNDLED_UNLABELED:
        return bundled_unlabeled_dir()
    if vae == "bundled":  # the shipped dense VAE: unconditional, so its training never used the labels
        from vae_model.model_dir import bundled_model_dir
        return bundled_model_dir()
    return vae


# ---------------------------------------------------------------------------------------------- data

def ingest(source: str, seed: int, out_train: str, out_info: str) -> dict:
    train, info = D.read_training_rows(source, seed)
    D.write_npz(out_train, train.images, train.labels)
    info["digest"] = D.content_digest(train.images, train.labels)
    with open(out_info, "w") as f:
        json.dump(info, f, indent=1, default=str)
    return info


def split(train_npz: str, fraction: float, seed: int, out_dir: str) -> dict:
    z = D.read_npz(train_npz)
    x, y = z["x_train"], z["y_train"]
    val = D.carve_validation(y, fraction, seed)
    keep = np.ones(len(y), bool)
    keep[val] = False
    pool_rows = np.flatnonzero(keep)                 # A's labeled rows + every unlabeled row, source order
    lab_rows = pool_rows[y[pool_rows] >= 0]
    os.makedirs(out_dir)
    D.write_npz(os.path.join(out_dir, "pool.npz"), x[pool_rows], y[pool_rows])
    D.write_npz(os.path.join(out_dir, "labeled.npz"), x[lab_rows], y[lab_rows])
    D.write_npz(os.path.join(out_dir, "val.npz"), x[val], y[val])
    np.savez(os.path.join(out_dir, "rows.npz"), pool=pool_rows, labeled=lab_rows, val=val)
    info = {"labeled": int(len(lab_rows)), "validation": int(len(val)),
            "unlabeled": int((y[pool_rows] < 0).sum()),
            "validation_per_class": {str(c): int(n) for c, n in zip(*np.unique(y[val], return_counts=True))}}
    with open(os.path.join(out_dir, "split.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def arrays(npz: str) -> tuple[np.ndarray, np.ndarray]:
    z = D.read_npz(npz)
    return z["x_train"], z["y_train"]


# ---------------------------------------------------------------------------------------------- VAE

def vae_config(aug, train_npz: str, image_size: int, num_classes: int, seed: int):
    from vae_model.config import load_config

    sets = [f"train.data={json.dumps('npz:' + train_npz + '?unlabeled=1')}", f"model.image_size={image_size}",
            f"model.num_classes={num_classes}", f"train.seed={seed}"]
    if aug.vae_epochs:
        sets.append(f"train.epochs={aug.vae_epochs}")
    return load_config(aug.vae_config, sets)


def train_vae(cfg, out: str, argv=None) -> dict:
    from vae_model.training import train

    meta = train(cfg, out, argv=argv, verbose=0)
    return {"model_id": meta["model_id"], "train_seconds": meta["train_seconds"], "epochs_run": meta["epochs_run"],
            "data": meta["data"]}


def check_vae(path: str, image_shape, classes) -> dict:
    from vae_model.model_dir import ModelDir

    md = ModelDir.open(path)
    if tuple(md.image_shape) != tuple(image_shape):
        raise DataError(f"--vae {path} was trained on {md.image_shape[0]}x{md.image_shape[1]} images but the data "
                        f"has {image_shape[0]}x{image_shape[1]}; pass a VAE of this size or leave out --vae")
    if md.conditional:
        raise UsageError(f"--vae {path} is a conditional VAE; augment needs one trained without labels")
    if max(classes) >= md.num_classes:
        raise DataError(f"--vae {path} knows classes 0..{md.num_classes - 1} but the data has class {max(classes)}; "
                        "leave out --vae to train one for these labels")
    return md.meta


def copy_vae(path: str, out: str) -> dict:
    from vae_model.model_dir import ModelDir

    md = ModelDir.open(path)
    shutil.copytree(md.path, out)
    ModelDir.open(out).encoder  # the copy's checksums hold (load checks sha256)
    return {"model_id": md.model_id, "from": os.path.abspath(md.path), "data": md.meta.get("data"),
            "command": md.meta.get("command")}


# ---------------------------------------------------------------------------------------------- classifiers

def classifier_config(num_classes: int, seed: int, rows: int, steps: int | None = None, epochs: int | None = None,
                      batch_size: int = 64, learning_rate: float | None = None, translate: float = 0.0,
                      rotate: float = 0.0):
    """The reference CNN (configs/classifier.yaml) with a step budget: epochs so that about `steps` optimizer
    steps run whatever the number of rows (A, the fine-tuning), or fixed `epochs` (pretraining); `translate` and
    `rotate` set its training images' random shifts and rotations."""
    from vae_model.classifier import load_classifier_config

    if epochs is None:
        epochs = max(1, round(steps / max(1, math.ceil(rows / batch_size))))
    sets = [f"model.num_classes={num_classes}", f"train.seed={seed}", f"train.batch_size={batch_size}",
            f"train.epochs={epochs}", f"train.translate={translate}", f"train.rotate={rotate}"]
    if learning_rate is not None:
        sets.append(f"train.learning_rate={learning_rate}")
    return load_classifier_config(None, sets)


def train_labeler(labeled_npz: str, cfg, out: str, argv=None) -> dict:
    from vae_model.classifier import train_classifier

    meta = train_classifier(arrays(labeled_npz), out, cfg, argv=argv)
    return {"classifier_id": meta["classifier_id"], "steps": meta["steps"], "rows": meta["rows"]}


def pretrain(data_dir: str, cfg, out: str, argv=None) -> dict:
    from vae_model.classifier import train_classifier

    meta = train_classifier(data_dir, out, cfg, argv=argv)  # a generate output is a data source
    return {"classifier_id": meta["classifier_id"], "steps": meta["steps"], "rows": meta["rows"]}


def finetune(labeled_npz: str, init_dir: str, cfg, out: str, argv=None) -> dict:
    from vae_model.classifier import train_classifier

    meta = train_classifier(arrays(labeled_npz), out, cfg, argv=argv, init=init_dir)
    return {"classifier_id": meta["classifier_id"], "steps": meta["steps"], "rows": meta["rows"]}


def selftrain(pseudo_npz: str, data_dir: str, cfg, out: str, argv=None) -> dict:
    """The reference CNN on every labeled row of the round's pseudo-labeled source (the real labels and the
    pseudo-labels; rows left unlabeled stay out) together with the round's synthetic shards."""
    from pipeline.readers import load_parquet
    from vae_model.classifier import train_classifier

    x, y = arrays(pseudo_npz)
    keep = y >= 0
    xs, ys = load_parquet(data_dir)
    meta = train_classifier((np.concatenate([x[keep], xs]), np.concatenate([y[keep], ys])), out, cfg, argv=argv)
    return {"classifier_id": meta["classifier_id"], "steps": meta["steps"], "rows": meta["rows"],
            "real_rows": int(keep.sum()), "synthetic_rows": int(len(ys))}


def val_accuracy(classifier_dir: str, val_npz: str) -> float:
    from vae_model.classifier import load_classifier

    x, y = arrays(val_npz)
    return float(load_classifier(classifier_dir).accuracy(x, y))


# ---------------------------------------------------------------------------------------------- data steps

def pseudo_label(pool_npz: str, labeler: str, vae: str, aug, seed: int, out: str, val_npz: str,
                 argv=None) -> dict:
    """The labeler (of aug.labelers) is chosen on the validation rows, which join the graph unlabeled."""
    from vae_model.pseudo_label import make_pseudo_labeled_source

    meta = make_pseudo_labeled_source(f"npz:{pool_npz}", labeler, out, vae, aug.neighbours, aug.pseudo_confidence,
                                      seed, argv=argv, labelers=tuple(aug.labelers), validation=f"npz:{val_npz}")
    return {k: meta[k] for k in ("pseudo_labels", "left_unlabeled", "real_labels", "pseudo_per_class",
                                 "min_confidence", "neighbours", "classifier_id", "model_id", "labeler",
                                 "labeler_validation")}


def class_stats(vae: str, pseudo_npz: str, aug, seed: int, out: str) -> dict:
    from pipeline.generate.class_stats import write_stats_file

    s = write_stats_file(vae, f"npz:{pseudo_npz}", out, seed, pool_per_class=aug.pool_per_class,
                         beam_args=LOCAL_BEAM)
    return {"labeled_images": s["labeled_images"], "classes": s["classes"], "pool": s["pool"]}


def generate(vae: str, stats: str, classes, aug, seed: int, out: str, argv=None) -> dict:
    from pipeline.generate.graph import run_job
    from pipeline.generate.job import GenerateJob

    job = GenerateJob(out=out, model=vae, per_class=aug.per_class, classes=list(classes), stats=stats, seed=seed,
                      formats=["parquet", "tfrecord"])
    m = run_job(job, LOCAL_BEAM, argv=argv)
    return {"total": m["total"], "dataset_digest": m["dataset_digest"], "per_class": m["per_class"],
            "sampler": job.sampler, "images_per_second": m.get("images_per_second")}


def evaluate_data(data_dir: str, source: str, classifier: str | None, aug, seed: int, out: str, log=None) -> dict:
    from pipeline.evaluation.evaluate import EvaluateOptions, evaluate

    opts = EvaluateOptions(max_images=aug.evaluate_max_images, novelty_images=aug.novelty_images,
                           baseline_images=aug.baseline_images, seed=seed,
                           cas_epochs=None if aug.cas_epochs < 0 else aug.cas_epochs,
                           refresh_card=False)  # data/ is a published step output: its checksums must hold
    r = evaluate(data_dir, source, classifier, out, opts, log=log)
    f, cas = r["fidelity"], r["cas"]
    return {"fidelity": f.get("fidelity") if f.get("applicable") else None,
            "cas": cas.get("cas") if cas.get("applicable") else None,
            "cas_ceiling": cas.get("ceiling") if cas.get("applicable") else None,
            "near_duplicate_rate": r["novelty"].get("near_duplicate_rate"),
            "exact_duplicates": r["novelty"].get("exact_duplicates"),
            "verdict": r.get("verdict")}


def test_accuracy(classifier_dir: str, test) -> float:
    from vae_model.classifier import load_classifier

    return float(load_classifier(classifier_dir).accuracy(test.images, test.labels))


def copy_output(src: str, dst: str) -> None:
    """Copy a finished output into the product's place (a real copy: a corrupted file in one place must not
    corrupt the other, which is how resume notices it)."""
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
