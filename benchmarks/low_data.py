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

Two methods:

- ``--method direct``: class statistics of the labeled images only; synthetic digits around them.
- ``--method pseudo-label`` (the default): rounds of `vae-augment pseudo-label` -> `stats` -> `generate` ->
  `train-classifier`. Round r's classifier (A for round 1) labels the 59,000 unlabeled training
  images, its probabilities averaged over 10 latent neighbours in the VAE, and the confident ones
  (`--pseudo-confidences`) join the class statistics and the posterior sampler's pool; B_r trains on the real
  images plus the shards, either mixed in every batch (`--real-weights` a share: `train-classifier --synthetic
  --real-share`) or pretrained on the shards alone and then fine-tuned on the real images (`--real-weights ft`:
  `train-classifier --data OUT_DIR`, then `train-classifier --init`). The pseudo-label threshold, the
  schedule/real share, the filter and the number of rounds are tuned on seed 0's validation split; during
  tuning the 200 validation images are left out of the unlabeled pool too, so no record is made from them.

    python benchmarks/low_data.py --vae models/conv70k --per-class 3000 --real-weights ft,0.25 \
        --pseudo-confidences 0.9,0.7,0.5 --min-confidences none      # the README's best run
    python benchmarks/low_data.py                 # pseudo-label rounds (~35 min on 2 cores)
    python benchmarks/low_data.py --method direct # labeled statistics only (~20 min)
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

from pipeline.generate.class_stats import write_stats_file  # noqa: E402
from pipeline.generate.graph import run_job  # noqa: E402
from pipeline.generate.job import GenerateJob, default_spread  # noqa: E402
from pipeline.dataset.readers import tfrecord_dataset  # noqa: E402
from vae_model.classifier import (Classifier, load_classifier, load_classifier_config,  # noqa: E402
                                  train_classifier, train_on_dataset)
from vae_model.data import load_source  # noqa: E402
from vae_model.model_dir import ModelDir  # noqa: E402
from vae_model.pseudo_label import DEFAULT_PSEUDO_LABEL_CONFIDENCE  # noqa: E402
from vae_model.pseudo_label import make_pseudo_labeled_source  # noqa: E402

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


def unlabeled_pool(seed: int):
    """The training images outside the 1,000 labeled ones (labels unused), and their true labels (scored only)."""
    semi = load_source(SOURCE, seed=seed).train
    rows = np.flatnonzero(semi.labels < 0)
    return semi.images[rows], load_source("mnist").train.labels[rows]


class PseudoLabelRounds:
    """Rounds of `pseudo-label` -> `stats --pool-per-class` -> `generate` -> `train-classifier --synthetic`,
    through the same library calls the CLI makes. Round r's labeler is B_{r-1} (A for round 1)."""

    def __init__(self, md, work, seed, real, test, unlabeled, truth, cfg, per_class, spread, pool_per_class,
                 pretrain_cfg=None, finetune_cfg=None):
        self.md, self.work, self.seed, self.cfg = md, work, seed, cfg
        self.pretrain_cfg, self.finetune_cfg = pretrain_cfg, finetune_cfg
        self.real, self.test, self.per_class, self.spread, self.pool = real, test, per_class, spread, pool_per_class
        self.truth = truth
        n = len(unlabeled)
        self.base = os.path.join(work, f"base{seed}-{len(real[0])}.npz")  # the labeled rows first, then unlabeled
        np.savez(self.base, x_train=np.concatenate([real[0], unlabeled]),
                 y_train=np.concatenate([real[1], np.full(n, -1)]), x_test=test.images, y_test=test.labels)

    def classifier(self, name, synthetic=None, real_share=0.5):
        """A (no synthetic), B mixed (`real_share` a float: `train-classifier --synthetic --real-share`) or B
        fine-tuned (`real_share` "ft": `train-classifier --data OUT_DIR`, then on the real rows with --init)."""
        out = os.path.join(self.work, name)
        data = (self.real[0], self.real[1], self.test.images, self.test.labels)
        if real_share == "ft":
            pre = os.path.join(self.work, name + "-pre")
            train_classifier(f"parquet:{synthetic}", pre, self.pretrain_cfg.replace_train(seed=self.seed))
            train_classifier(data, out, self.finetune_cfg.replace_train(seed=self.seed), init=pre)
            return out
        extra = {} if synthetic is None else {"synthetic": tfrecord_dataset(synthetic), "real_share": real_share}
        train_classifier(data, out, self.cfg.replace_train(seed=self.seed), **extra)
        return out

    def round(self, tag, labeler, real_weight, pseudo_confidence, min_confidence):
        """One round with one arm: pseudo-label threshold, B's schedule (a real share or "ft"), filter (or None)."""
        pl = os.path.join(self.work, f"{tag}-pl.npz")
        meta = make_pseudo_labeled_source(f"npz:{self.base}", labeler, pl, self.md.path,
                                          min_confidence=pseudo_confidence)
        z = np.load(pl)
        k = len(self.real[0])
        pseudo = z["pseudo"][k:]
        acc = float((z["y_train"][k:][pseudo] == self.truth[pseudo]).mean())
        stats = os.path.join(self.work, f"{tag}-stats.npz")
        write_stats_file(self.md.path, f"npz:{pl}", stats, self.seed, pool_per_class=self.pool, beam_args=LOCAL)
        out = os.path.join(self.work, f"{tag}-gen")
        job = GenerateJob(out=out, model=self.md.path, per_class=self.per_class, sampler="posterior",
                          spread=self.spread, stats=stats, seed=self.seed, formats=["parquet", "tfrecord"],
                          overwrite=True,
                          filter_classifier=labeler if min_confidence else None, min_confidence=min_confidence)
        m = run_job(job, LOCAL)
        clf = self.classifier(f"{tag}-B", out, real_weight)
        info = {"pseudo_labels": meta["pseudo_labels"], "pseudo_label_accuracy": acc,
                "acceptance": m.get("filter", {}).get("acceptance")}
        return clf, info


def pseudo_label_experiment(args, seeds, md, work):
    """Tune (real share, filter, rounds) on seed 0's validation split, then run every seed to the test set."""
    # epochs so that A on the 1,000 runs about --steps steps; B's epochs are passes over the same real images
    cfg = load_classifier_config(None, [f"train.epochs={max(1, round(args.steps * 64 / 1000))}",
                                        "train.max_steps=0", "train.batch_size=64"])
    pretrain_cfg = load_classifier_config(None, [f"train.epochs={args.pretrain_epochs}", "train.batch_size=128"])
    finetune_cfg = load_classifier_config(None, [f"train.epochs={args.finetune_epochs}", "train.batch_size=64",
                                                 f"train.learning_rate={args.finetune_lr}"])
    spread = float(args.spreads.split(",")[0])
    grid = [{"real_weight": w if w == "ft" else float(w), "pseudo_confidence": float(pc),
             "min_confidence": None if mc == "none" else float(mc)}
            for w in args.real_weights.split(",") for pc in args.pseudo_confidences.split(",")
            for mc in args.min_confidences.split(",")]
    results = {"method": "pseudo-label", "grid": [], "final": [], "config": vars(args),
               "vae": md.meta["metrics"].get("test")}

    def rounds_for(seed, real, test, tag):
        unl, truth = unlabeled_pool(seed)
        os.makedirs(os.path.join(work, tag), exist_ok=True)
        return PseudoLabelRounds(md, os.path.join(work, tag), seed, real, test, unl, truth, cfg, args.per_class,
                                 spread, args.pool_per_class, pretrain_cfg, finetune_cfg)

    best = arm = None
    for seed in seeds:
        real, val, test = labeled_split(seed)
        if best is None:  # tuning: seed 0, 800 labeled images, validation on the other 200
            rnd = rounds_for(seed, real, test, "tune")
            a_dir = rnd.classifier("A")
            a_val = load_classifier(a_dir).accuracy(*val)
            results["A_val_tuning"] = a_val
            print(f"seed {seed}: A (800 real) validation accuracy {a_val:.4f}", flush=True)
            scored = []
            for arm in grid:
                clf, info = rnd.round("r1-" + "-".join(map(str, arm.values())), a_dir, **arm)
                row = {"round": 1, **arm, "val": load_classifier(clf).accuracy(*val), **info}
                results["grid"].append(row)
                scored.append((row["val"], arm, clf))
                print(f"  grid {row}", flush=True)
            v_best, arm, labeler = max(scored, key=lambda t: t[0])
            best = {**arm, "spread": spread, "per_class": args.per_class, "rounds": 1}
            for r in range(2, args.max_rounds + 1):  # more rounds while validation does not drop
                clf, info = rnd.round(f"r{r}", labeler, **arm)
                row = {"round": r, **arm, "val": load_classifier(clf).accuracy(*val), **info}
                results["grid"].append(row)
                print(f"  grid {row}", flush=True)
                if row["val"] < v_best:
                    break
                best["rounds"], labeler, v_best = r, clf, row["val"]
            print(f"best on validation: {best}", flush=True)
        full = (np.concatenate([real[0], val[0]]), np.concatenate([real[1], val[1]]))
        rnd = rounds_for(seed, full, test, f"seed{seed}")
        labeler = rnd.classifier("A")
        a_test = load_classifier(labeler).accuracy(test.images, test.labels)
        per_round = []
        for r in range(1, best["rounds"] + 1):
            labeler, info = rnd.round(f"r{r}", labeler, **arm)
            per_round.append({"round": r, "test": load_classifier(labeler).accuracy(test.images, test.labels),
                              **info})
            print(f"seed {seed}: round {per_round[-1]}", flush=True)
        b_test = per_round[-1]["test"]
        print(f"seed {seed}: final A test {a_test:.4f}, B test {b_test:.4f}", flush=True)
        results["final"].append({"seed": seed, "A_test": a_test, "B_test": b_test, "rounds": per_round})
    return results, best


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
    ap.add_argument("--spreads", default=None,
                    help="spreads tried in tuning (comma-separated; default 1.0); pseudo-label uses the first, default "
                         "the posterior sampler's")
    ap.add_argument("--real-weights", default="0.75,0.5",
                    help="shares of real images in B's stream tried in tuning; pseudo-label also takes 'ft': "
                         "pretrain on the shards alone, then fine-tune on the real images")
    ap.add_argument("--pretrain-epochs", type=int, default=8, help="ft: epochs over the shards (batch 128)")
    ap.add_argument("--finetune-epochs", type=int, default=32, help="ft: epochs over the real images (batch 64)")
    ap.add_argument("--finetune-lr", type=float, default=3e-4, help="ft: Adam learning rate of the fine-tuning")
    ap.add_argument("--method", choices=["pseudo-label", "direct"], default="pseudo-label",
                    help="pseudo-label: rounds of pseudo-labels over the unlabeled images (see above); direct: class "
                         "statistics of the labeled images only")
    ap.add_argument("--pseudo-confidences", default=str(DEFAULT_PSEUDO_LABEL_CONFIDENCE),
                    help="pseudo-label: `pseudo-label --min-confidence` values tried in tuning")
    ap.add_argument("--max-rounds", type=int, default=3, help="pseudo-label: most rounds tried in tuning")
    ap.add_argument("--pool-per-class", type=int, default=10_000,
                    help="pseudo-label: encodings per class in the posterior pool (all pseudo-labeled ones)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="out/low_data.json")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.method == "direct" and "ft" in args.real_weights.split(","):
        ap.error("--real-weights ft needs --method pseudo-label")
    if args.spreads is None:
        args.spreads = str(default_spread("posterior")) if args.method == "pseudo-label" else "1.0"
    grid = {
        "sampler": args.samplers.split(","),  # default: the two best by CAS in benchmarks/sampler_grid.py
        "spread": [float(x) for x in args.spreads.split(",")],
        "min_confidence": [None if x == "none" else float(x) for x in args.min_confidences.split(",")],
        "real_weight": [x if x == "ft" else float(x) for x in args.real_weights.split(",")],
    }
    if args.quick:
        seeds, args.steps, args.per_class = seeds[:1], 300, 200
        grid = {"sampler": ["classgauss"], "spread": [1.0], "min_confidence": [None, 0.9], "real_weight": [0.5]}
        args.real_weights, args.min_confidences, args.max_rounds = "0.5", "none", 1

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

    if args.method == "pseudo-label":
        results, best = pseudo_label_experiment(args, seeds, md, work)
    else:
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
            write_stats_file(md.path, SOURCE, stats_path, seed, beam_args=LOCAL)
            clf_dir = os.path.join(work, f"clfA{seed}")
            # the filter: classifier A on the 800 tuning images (the test set only gets scored, never tuned on)
            train_classifier((real[0], real[1], test.images, test.labels), clf_dir, cfg.replace_train(seed=seed))
            if best is None:
                write_stats_file(md.path, f"npz:{tune_src}", tune_stats, seed, beam_args=LOCAL)
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
