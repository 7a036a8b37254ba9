"""Classification Accuracy Score (Ravuri & Vinyals, 2019) and its ceiling.

CAS: a fresh classifier of the reference architecture and training config, trained only on the synthetic records
and scored on the real test set. The ceiling is the same training on the real training set; the one recorded in
classifier.json is reused when it was measured on the same source, test set and config, since training it again
would give the same number.
"""
from __future__ import annotations

import time

import numpy as np

from pipeline.evaluation.metrics import UNLABELED, RealSplits
from vae_model.errors import DataError, ModelError


def cas_config(clf, epochs: int | None, max_steps: int | None):
    """The reference classifier's training config, with `epochs` / `max_steps` replaced when given. No validation
    split: CAS is scored on the real test set, and every synthetic record is training data."""
    from vae_model.classifier import classifier_config_from_dict

    try:
        cfg = classifier_config_from_dict(clf.meta["config"])
    except Exception as e:  # noqa: BLE001 - an old or edited classifier.json
        raise ModelError(f"classifier {clf.path}: its classifier.json config is not usable ({e}); retrain it with "
                         "`vae-augment train-classifier`") from None
    changes = {"validation_split": 0.0}
    if epochs is not None:
        changes["epochs"] = epochs
    if max_steps is not None:
        changes["max_steps"] = max_steps
    return cfg.replace_train(**changes)


def _train_on_synthetic(out_dir: str, manifest: dict, rows: int, cfg, log, verbose):
    """(model, info, where it read from). TFRecords are streamed; Parquet only when no TFRecords were written."""
    from pipeline.dataset.readers import load_parquet, tfrecord_dataset
    from vae_model.classifier import train_on_arrays, train_on_dataset

    log(f"CAS: training the reference architecture on {rows:,} synthetic records ...")
    if "tfrecord" in manifest.get("formats", []):
        ds = tfrecord_dataset(out_dir).filter(lambda x, y: y >= 0)
        h, w = int(manifest["height"]), int(manifest["width"])
        model, info = train_on_dataset(ds, rows, (h, w), cfg, verbose=verbose)
        return model, info, "tfrecord shards (streamed)"
    images, labels = load_parquet(out_dir)
    model, info = train_on_arrays(images, labels, cfg, verbose=verbose)
    return model, info, "parquet shards (in memory; no tfrecord shards were written)"


def _recorded_ceiling(clf, cfg, real: RealSplits, test, restricted: bool) -> dict | None:
    from vae_model.classifier import classifier_config_from_dict

    rec = clf.meta
    recorded = rec.get("metrics", {}).get("test", {})
    # cas_config has read this config already; keys a classifier.json lacks get the defaults that keep old behaviour
    made_with = classifier_config_from_dict(rec["config"])
    same = (rec.get("data", {}).get("source") == real.source and not restricted and real.holdout_note is None
            and made_with.model == cfg.model and made_with.train == cfg.train
            and recorded.get("images") == len(test) and "accuracy" in recorded)
    if not same:
        return None
    return {"ceiling": float(recorded["accuracy"]), "ceiling_source": (
        f"recorded in {clf.path}/classifier.json: the same architecture and training config on the same real "
        f"source ({real.source})"), "ceiling_steps": rec.get("steps")}


def _trained_ceiling(cfg, real: RealSplits, real_train, test, log, verbose) -> dict:
    from vae_model.classifier import evaluate_accuracy, train_on_arrays

    log(f"CAS ceiling: training the same architecture on {int((real_train.labels >= 0).sum()):,} real images ...")
    t0 = time.time()
    model, info = train_on_arrays(real_train.images, real_train.labels, cfg, verbose=verbose)
    return {"ceiling": evaluate_accuracy(model, test.images, test.labels),
            "ceiling_source": f"trained now on the real training set of {real.source}",
            "ceiling_steps": info["steps"], "ceiling_seconds": round(time.time() - t0, 1)}


def cas_section(out_dir: str, manifest: dict, counts: dict[int, int], clf, cfg, real: RealSplits, log,
                verbose) -> dict:
    """CAS, the ceiling, their gap and ratio. `counts`: records per class over every shard. When the records hold
    only some classes, both are scored on the real test images of those classes (and the ceiling trained on them)."""
    from vae_model.classifier import evaluate_accuracy

    classes = sorted(c for c in counts if c >= 0)
    if not classes:
        return {"applicable": False, "reason": f"{UNLABELED}: a classifier cannot be trained on them"}
    if max(classes) >= cfg.model.num_classes:
        raise DataError(f"records have label {max(classes)} but the reference architecture has "
                        f"{cfg.model.num_classes} classes; pass a matching --classifier")
    rows = sum(counts[c] for c in classes)
    test, real_train = real.test, real.train
    restricted = classes != sorted(int(c) for c in np.unique(test.labels))
    if restricted:
        test = test.take(np.flatnonzero(np.isin(test.labels, classes)))
        real_train = real_train.take(np.flatnonzero(np.isin(real_train.labels, classes)))
        if not len(test):
            return {"applicable": False, "reason": f"the real test set has no images of classes {classes}"}
    t0 = time.time()
    model, info, source = _train_on_synthetic(out_dir, manifest, rows, cfg, log, verbose)
    cas = evaluate_accuracy(model, test.images, test.labels)
    out = {"applicable": True, "cas": cas, "synthetic_rows": rows, "read_from": source, "epochs": info["epochs"],
           "steps": info["steps"], "batch_size": cfg.train.batch_size, "train_seconds": round(time.time() - t0, 1),
           "test_images": len(test), "classes": classes, "config": cfg.to_dict(), "real_source": real.source}
    if restricted:
        out["note"] = (f"the records hold classes {classes} only: CAS and the ceiling are scored on the real test "
                       "images of these classes, and the ceiling is trained on the real images of these classes")
    out.update(_recorded_ceiling(clf, cfg, real, test, restricted)
               or _trained_ceiling(cfg, real, real_train, test, log, verbose))
    out["gap"] = out["ceiling"] - out["cas"]
    out["ratio"] = out["cas"] / out["ceiling"] if out["ceiling"] else None
    return out
