"""Low-data augmentation experiment (issue 5): does vae-augment help a classifier that sees only 100 labels
per class?

- The VAE is trained on all 70,000 MNIST images WITHOUT labels (semi-supervised, as in seed 004):
  `vae-augment train --config configs/default.yaml --data 'mnist?with_test=1&unlabeled=1' --set epochs=40`.
- Per seed, 100 labeled train images per class are drawn (`mnist?labeled_per_class=100`, seed-dependent).
  They are all the labels anything downstream sees: class statistics come from them, and so does the
  filter classifier (classifier A itself, trained on the 800 non-validation images).
- 20 per class of the 1,000 are held out as the validation split; every tuning choice (sampler, spread,
  mixing ratio, filter) is made on it, on seed 0. The test set is used only for the final numbers.
- Tuning: the reference CNN on the 800 real images (A) and on real + synthetic mixed in a ratio (B), scored on
  the 200 validation images. A runs --steps; B runs --steps / real_weight (--budget real-exposure, the default),
  so it sees each real image as often as A, or --steps too (--budget fixed).
- Final, every seed: A on all 1,000 real images, B(best) on the 1,000 + synthetic; test accuracy mean ± std.

    python benchmarks/low_data.py                 # full run (~20 min on 2 cores)
    python benchmarks/low_data.py --quick         # small grid, 1 seed, for a smoke test
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline.logs import quiet_libraries  # noqa: E402

quiet_libraries()

import tensorflow as tf  # noqa: E402

from pipeline.class_stats import ComputeClassStats  # noqa: E402
from pipeline.generate import GenerateJob, run_job  # noqa: E402
from pipeline.readers import tfrecord_dataset  # noqa: E402
from vae_model.classifier import (Classifier, load_classifier_config, train_classifier,  # noqa: E402
                                  train_on_dataset)
from vae_model.data import load_source  # noqa: E402
from vae_model.model_dir import ModelDir  # noqa: E402

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
SOURCE = "mnist?labeled_per_class=100"
VAE_CMD = ["train", "--config", "configs/default.yaml", "--data", "mnist?with_test=1&unlabeled=1",
           "--set", "epochs=40", "--quiet"]


def ensure_vae(path: str) -> ModelDir:
    if not os.path.exists(os.path.join(path, "model.json")):
        from pipeline.cli import cli
        print(f"training the unlabeled 70k VAE into {path} ...", flush=True)
        cli.main(VAE_CMD + ["--out", path], standalone_mode=False)
    return ModelDir.open(path)


def labeled_split(seed: int, val_per_class: int = 20):
    """The 1,000 labeled images for this seed, split into 800 train / 200 validation, plus the test set."""
    splits = load_source(SOURCE, seed=seed)
    lab = splits.train.labeled
    rng = np.random.default_rng([seed, 77])
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(lab.labels == c))[:val_per_class] for c in range(10)])
    mask = np.zeros(len(lab), bool)
    mask[val_idx] = True
    return (lab.images[~mask], lab.labels[~mask]), (lab.images[mask], lab.labels[mask]), splits.test


def mixed_stream(real, synthetic_dir, real_weight):
    real_ds = tf.data.Dataset.from_tensor_slices((real[0][..., None], real[1].astype(np.int64))).repeat()
    if synthetic_dir is None or real_weight >= 1.0:
        return real_ds
    syn = tfrecord_dataset(synthetic_dir).repeat()
    return tf.data.Dataset.sample_from_datasets([real_ds, syn], [real_weight, 1 - real_weight], seed=0)


def fit(stream, rows, cfg, val):
    model, info = train_on_dataset(stream, rows, (28, 28), cfg)
    clf = Classifier(model)
    return clf, clf.accuracy(*val)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default="models/unlabeled70k", help="VAE dir (trained unlabeled if missing)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1500, help="optimizer steps for every classifier")
    ap.add_argument("--per-class", type=int, default=1000, help="synthetic records per class")
    ap.add_argument("--budget", choices=["real-exposure", "fixed"], default="real-exposure",
                    help="B's optimizer steps: steps / real_weight, so B sees each real image as often as A does "
                         "(real-exposure), or the same steps as A (fixed)")
    ap.add_argument("--samplers", default="classgauss,posterior",
                    help="samplers tried in tuning; 'prior' means prior samples labeled by the filter classifier")
    ap.add_argument("--min-confidences", default="none,0.9", help="filter thresholds tried ('none' = no filter)")
    ap.add_argument("--spreads", default="1.0", help="spreads tried in tuning (comma-separated)")
    ap.add_argument("--real-weights", default="0.75,0.5", help="shares of real images in B's stream tried in tuning")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="out/low_data.json")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = {
        "sampler": args.samplers.split(","),  # default: the two best by CAS in benchmarks/sampler_grid.py
        "spread": [float(x) for x in args.spreads.split(",")],
        "min_confidence": [None if x == "none" else float(x) for x in args.min_confidences.split(",")],
        "real_weight": [float(x) for x in args.real_weights.split(",")],
    }
    if args.quick:
        seeds, args.steps, args.per_class = seeds[:1], 300, 200
        grid = {"sampler": ["classgauss"], "spread": [1.0], "min_confidence": [None, 0.9], "real_weight": [0.5]}

    t0 = time.time()
    md = ensure_vae(args.vae)
    cfg = load_classifier_config(None, [f"train.max_steps={args.steps}", "train.epochs=10", "train.batch_size=64"])
    work = tempfile.mkdtemp(prefix="lowdata-")
    def rows_for(steps):
        return steps * 64 // 10  # one "epoch" = steps/10 batches of 64, so max_steps is what runs

    rows_for_steps = rows_for(args.steps)

    def fit_b(real, out, w, seed, val):
        """B on real + synthetic; with budget real-exposure it runs steps / w, so its real images are seen as
        often as A's (with a fixed budget, mixing in synthetic data also means less training on real data)."""
        steps = args.steps if args.budget == "fixed" else int(round(args.steps / w))
        return fit(mixed_stream(real, out, w), rows_for(steps), cfg.replace_train(seed=seed, max_steps=steps), val)

    def synth(seed, sampler, spread, min_conf, stats_path, clf_dir):
        out = os.path.join(work, f"s{seed}-{sampler}-{spread}-{min_conf}")
        job = GenerateJob(out=out, model=md.path, per_class=args.per_class, sampler=sampler, spread=spread,
                          stats=stats_path, seed=seed, formats=["tfrecord"], overwrite=True,
                          filter_classifier=clf_dir if min_conf else None, min_confidence=min_conf,
                          max_filter_rounds=400)  # the prior arm: each class is ~1/10 of the prior
        return out, run_job(job, LOCAL)

    results = {"grid": [], "final": [], "config": vars(args), "vae": md.meta["metrics"].get("test")}
    best = None
    for seed in seeds:
        real, val, test = labeled_split(seed)
        # Class statistics (and the posterior sampler's pool of encoded examples) for tuning come from the 800
        # tuning images only: built from all 1,000, posterior samples are perturbed copies of the validation
        # images and validation accuracy reads 100%. The final runs use all 1,000.
        tune_src = os.path.join(work, f"tune{seed}.npz")
        np.savez(tune_src, x_train=real[0], y_train=real[1])
        tune_stats = os.path.join(work, f"tune_stats{seed}.npz")
        stats_path = os.path.join(work, f"stats{seed}.npz")
        ComputeClassStats.run_local(md, SOURCE, seed, LOCAL, out_path=stats_path)
        clf_dir = os.path.join(work, f"clfA{seed}")
        # the filter: classifier A on the 800 tuning images (the test set only gets scored, never tuned on)
        train_classifier((real[0], real[1], test.images, test.labels), clf_dir, cfg.replace_train(seed=seed))
        if best is None:
            ComputeClassStats.run_local(md, f"npz:{tune_src}", seed, LOCAL, out_path=tune_stats)
            _, a_val = fit(mixed_stream(real, None, 1.0), rows_for_steps, cfg.replace_train(seed=seed), val)
            print(f"seed {seed}: A (800 real) validation accuracy {a_val:.4f}", flush=True)
            results["A_val_tuning"] = a_val  # tune on seed 0's validation split only
            scored = []
            for sampler, spread, mc, w in itertools.product(*grid.values()):
                if sampler == "prior" and mc is None:
                    continue  # prior samples are labeled only through the filter
                out, m = synth(seed, sampler, spread, mc, tune_stats, clf_dir)
                _, v = fit_b(real, out, w, seed, val)
                row = {"sampler": sampler, "spread": spread, "min_confidence": mc, "real_weight": w, "val": v,
                       "acceptance": m.get("filter", {}).get("acceptance")}
                results["grid"].append(row)
                scored.append((v, row))
                print(f"  grid {row}", flush=True)
            best = max(scored, key=lambda t: t[0])[1]
            print(f"best on validation: {best}", flush=True)
        # final classifiers see all 1,000 labeled images (the validation split only served tuning)
        full = (np.concatenate([real[0], val[0]]), np.concatenate([real[1], val[1]]))
        a_clf, a_val = fit(mixed_stream(full, None, 1.0), rows_for_steps, cfg.replace_train(seed=seed), val)
        a_test = a_clf.accuracy(test.images, test.labels)
        out, _ = synth(seed, best["sampler"], best["spread"], best["min_confidence"], stats_path, clf_dir)
        b_clf, b_val = fit_b(full, out, best["real_weight"], seed, val)
        b_test = b_clf.accuracy(test.images, test.labels)
        print(f"seed {seed}: final A test {a_test:.4f}, B test {b_test:.4f}", flush=True)
        results["final"].append({"seed": seed, "A_test": a_test, "B_test": b_test, "A_val": a_val, "B_val": b_val})

    a = np.array([r["A_test"] for r in results["final"]]) * 100
    b = np.array([r["B_test"] for r in results["final"]]) * 100
    results["summary"] = {"A_mean": a.mean(), "A_std": a.std(ddof=1) if len(a) > 1 else 0.0,
                          "B_mean": b.mean(), "B_std": b.std(ddof=1) if len(b) > 1 else 0.0,
                          "lift_mean": (b - a).mean(), "best": best, "seconds": round(time.time() - t0)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, default=float)
    s = results["summary"]
    print(f"\nA (1,000 real labels): {s['A_mean']:.2f} ± {s['A_std']:.2f} %   "
          f"B (+ synthetic, {best}): {s['B_mean']:.2f} ± {s['B_std']:.2f} %   lift {s['lift_mean']:+.2f} points "
          f"over {len(seeds)} seeds ({s['seconds']} s)")


if __name__ == "__main__":
    main()
