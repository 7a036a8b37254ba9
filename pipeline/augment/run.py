"""The augment job: the steps in order, each skipped when its outputs are complete and match its fingerprint.

    ingest -> vae -> split -> labeler (A) -> round 1: pseudo-label -> stats -> generate -> pretrain -> finetune
    -> [round 2, 3 while validation improves] -> publish (B, data/, pseudo_labels.npz) -> score -> report

The test split is read by `score` only, after every choice is made.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from pipeline.augment import data as D
from pipeline.augment import decide, report, state, steps
from pipeline.augment.config import AugmentConfig
from vae_model.errors import UsageError, UserError


class Job:
    def __init__(self, source: str, out: str, aug: AugmentConfig, vae: str | None = None, seed: int = 0,
                 log=print, argv=None):
        from vae_model import artifacts

        self.source, self.aug, self.seed, self.log = source, aug, seed, log
        self.vae_arg = vae
        self.vae_given = steps.resolve_vae(vae)
        self.root = os.path.abspath(out)
        self.ledger = state.Ledger(self.root)
        self.command = artifacts.command_line(argv)
        self.argv = argv
        self.records: dict[str, dict] = {}
        self.n = 0
        self.shifts = {"translate": aug.translate, "rotate": aug.rotate}  # every classifier's training images

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    # ------------------------------------------------------------------------------------------ plumbing

    def claim(self) -> None:
        """DIR must be new, empty, or an earlier augment output (its augment.json)."""
        if os.path.lexists(self.root):
            if not os.path.isdir(self.root) or os.path.islink(self.root):
                raise UsageError(f"--out {self.root} is not a directory; choose a new or empty directory")
            if os.listdir(self.root) and not os.path.isfile(self.path(state.OWNER_FILE)):
                raise UsageError(f"--out {self.root} exists and is not an augment output (no {state.OWNER_FILE}); "
                                 "choose a new or empty directory (an earlier augment output is resumed)")
        os.makedirs(self.root, exist_ok=True)
        state.write_json_atomic(self.path(state.OWNER_FILE), {
            "kind": "augment", "source": self.source, "seed": self.seed, "vae": self.vae_arg,
            "config": self.aug.to_dict(), "command": self.command})
        state.remove_temps(self.root)

    def step(self, name: str, title: str, payload: dict, outputs: list[str], body) -> dict:
        """Run `body(tmp_paths)` unless complete; tmp_paths maps each output to its temp path."""
        self.n += 1
        fp = state.fingerprint({"step": name, "code": state.code_identity(), **payload})
        rec = self.ledger.complete(name, fp)
        if rec is not None:
            self.log(f"[{self.n:2d}] {name}: skipped, complete ({title}; fingerprint {fp})")
            self.records[name] = rec
            return rec
        self.ledger.forget(name)
        self.log(f"[{self.n:2d}] {name}: {title} ...")
        t0 = time.time()
        tmp_root = tempfile.mkdtemp(prefix=f".tmp-{name.replace('/', '-')}-", dir=self.root)
        try:
            tmp = {rel: os.path.join(tmp_root, rel.replace("/", "__")) for rel in outputs}
            info = body(tmp) or {}
            for rel in outputs:
                final = self.path(rel)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                state.replace(tmp[rel], final)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
        seconds = round(time.time() - t0, 1)
        rec = self.ledger.write(name, fp, outputs, {"title": title, "seconds": seconds, "info": info,
                                                    "command": self.command})
        extra = info.get("summary", "")
        self.log(f"[{self.n:2d}] {name}: done in {seconds:.1f} s{': ' + extra if extra else ''}")
        self.records[name] = rec
        return rec

    def ident(self, *names) -> dict:
        return {n: self.records[n]["identity"] for n in names}

    # ------------------------------------------------------------------------------------------ the job

    def run(self) -> dict:
        t_start = time.time()
        D.check_source_text(self.source)
        if self.vae_given is not None and not os.path.isfile(os.path.join(self.vae_given, "model.json")):
            raise UsageError(f"--vae {self.vae_arg}: no model.json there; pass a model directory from "
                             f"`vae-augment train` or '{steps.BUNDLED_UNLABELED}'")
        created = not os.path.lexists(self.root)
        self.claim()
        aug, seed = self.aug, self.seed
        try:
            ing = self.step("ingest", f"read the training rows of {self.source}",
                            {"source": self.source, "seed": seed, "inputs": D.source_inputs(self.source)},
                            [D.TRAIN, "input/info.json"],
                            lambda t: _summ(steps.ingest(self.source, seed, t[D.TRAIN], t["input/info.json"]),
                                            lambda i: f"{i['rows']:,} rows, {i['labeled']:,} labeled, classes "
                                                      f"{_classes(i['classes'])}, {i['image_shape'][0]}x"
                                                      f"{i['image_shape'][1]}"))
        except UserError:
            if created:  # a source unfit for augment leaves nothing behind
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        info = ing["info"]
        classes, shape = info["classes"], info["image_shape"]
        k = max(classes) + 1
        train_npz = self.path(D.TRAIN)

        if self.vae_given is not None:
            vmeta = steps.check_vae(self.vae_given, shape, classes)
            self.step("vae", f"copy the VAE {self.vae_arg}", {"given": vmeta["sha256"]}, ["vae"],
                      lambda t: _summ(steps.copy_vae(self.vae_given, t["vae"]), lambda i: f"model {i['model_id']}"))
        else:
            cfg = steps.vae_config(aug, train_npz, shape[0], k, seed)
            cfg_dict = cfg.to_dict()
            cfg_dict["train"]["data"] = "input/train.npz?unlabeled=1"  # the identity says which rows, not where
            self.step("vae", f"train the VAE ({aug.vae_config}) on all {info['rows']:,} training images, "
                             "labels unused", {"config": cfg_dict, **self.ident("ingest")}, ["vae"],
                      lambda t: _summ(steps.train_vae(cfg, t["vae"], self.argv),
                                      lambda i: f"model {i['model_id']}, {i['epochs_run']} epochs"))
        vae = self.path("vae")

        sp = self.step("split", f"hold out {aug.val_fraction:.0%} of each class's labels for validation",
                       {"fraction": aug.val_fraction, "seed": seed, **self.ident("ingest")}, ["splits"],
                       lambda t: _summ(steps.split(train_npz, aug.val_fraction, seed, t["splits"]),
                                       lambda i: f"{i['labeled']:,} labeled to train on, {i['validation']:,} "
                                                 f"validation, {i['unlabeled']:,} unlabeled"))
        n_lab = sp["info"]["labeled"]
        labeled, val, pool = self.path(D.LABELED), self.path(D.VAL), self.path(D.POOL)

        a_cfg = steps.classifier_config(k, seed, n_lab, steps=aug.labeler_steps, **self.shifts)

        def labeler_body(t):
            i = steps.train_labeler(labeled, a_cfg, t["labeler"], self.argv)
            i["val_accuracy"] = steps.val_accuracy(t["labeler"], val)
            i["summary"] = f"validation accuracy {i['val_accuracy']:.2%} ({i['steps']} steps)"
            return i

        a = self.step("labeler", f"classifier A on the {n_lab:,} labeled rows",
                      {"config": a_cfg.to_dict(), **self.ident("split")}, ["labeler"], labeler_body)
        candidates = [decide.Candidate(decide.REAL_ONLY, 0, a["info"]["val_accuracy"])]
        dirs = {decide.REAL_ONLY: self.path("labeler")}
        labeler, rounds = ("labeler", self.path("labeler")), []
        r = 0
        while True:
            r += 1
            made = self.round(r, labeler, vae, pool, labeled, val, classes, k, n_lab)
            for cand, step_name, path in made:
                candidates.append(cand)
                dirs[cand.name] = path
            rounds.append(r)
            if not decide.continue_rounds(candidates, aug.max_rounds):
                break
            best = decide.choose([c for c, _, _ in made])  # the next round's labeler: this round's best
            labeler = next((n, p) for c, n, p in made if c is best)
        chosen = decide.choose(candidates)
        best_round = chosen.round or 1  # real-only B still ships round 1's data as the product
        src = {"pseudo_labels.npz": f"rounds/r{best_round}/pseudo_labels.npz", "data": f"rounds/r{best_round}/data",
               "classifier": os.path.relpath(dirs[chosen.name], self.root)}
        used = ["labeler"] + [f"r{i}/{s}" for i in rounds
                              for s in ("pseudo", "stats", "generate", "finetune", "selftrain")]
        self.step("publish", f"B = {chosen.name} (validation {chosen.val_accuracy:.2%}), data/ from round "
                             f"{best_round}", {"src": src, **self.ident(*used)}, list(src),
                  lambda t: [steps.copy_output(self.path(s), t[d]) for d, s in src.items()] and
                  {"chosen": chosen.name, "round": chosen.round, "val_accuracy": chosen.val_accuracy,
                   "candidates": [c.__dict__ for c in candidates], "summary": f"B = {chosen.name}"})

        def score_body(t):
            return self.score(t, rounds, dirs)

        self.step("score", "final scoring on the test split (read now for the first time) and evaluate data/",
                  {"source": self.source, "seed": seed, "cas_epochs": aug.cas_epochs,
                   "evaluate": [aug.evaluate_max_images, aug.novelty_images, aug.baseline_images],
                   **self.ident("publish", "ingest", *used)}, ["scores.json", "evaluation"], score_body)
        total = round(time.time() - t_start, 1)
        rec = self.step("report", "report.json + report.html", {**self.ident("score", "publish")},
                        [report.REPORT_JSON, report.REPORT_HTML],
                        lambda t: report.write(self, t[report.REPORT_JSON], t[report.REPORT_HTML], total))
        return json.load(open(self.path(report.REPORT_JSON))) if rec else {}

    def round(self, r: int, labeler: tuple[str, str], vae, pool, labeled, val, classes, k, n_lab):
        """Round r's steps; returns its B candidates as (Candidate, step name, classifier directory)."""
        aug, seed, pre = self.aug, self.seed, f"rounds/r{r}/"
        labeler_step, labeler = labeler
        by = "A" if labeler_step == "labeler" else f"round {r - 1}'s best ({labeler_step})"
        self.step(f"r{r}/pseudo", f"round {r}: pseudo-label the unlabeled rows with {by}, "
                                  f"{'/'.join(aug.labelers)} over {aug.neighbours} latent neighbours chosen on "
                                  f"validation, p >= {aug.pseudo_confidence}",
                  {"neighbours": aug.neighbours, "p": aug.pseudo_confidence, "labelers": aug.labelers, "seed": seed,
                   **self.ident("split", "vae", labeler_step)}, [pre + "pseudo_labels.npz"],
                  lambda t: _summ(steps.pseudo_label(pool, labeler, vae, aug, seed, t[pre + "pseudo_labels.npz"],
                                                     val, self.argv),
                                  lambda i: f"{i['pseudo_labels']:,} of {i['pseudo_labels'] + i['left_unlabeled']:,}"
                                            f" unlabeled rows labeled by {i['labeler']} (validation "
                                            "accuracy/log loss: "
                                            + ", ".join(f"{n} {a['accuracy']:.1%}/{a['log_loss']:.3f}" for n, a in
                                                        (i["labeler_validation"] or {}).items()) + ")"))
        pl_path = self.path(pre + "pseudo_labels.npz")
        self.step(f"r{r}/stats", f"round {r}: class statistics (Beam)",
                  {"pool_per_class": aug.pool_per_class, "seed": seed, **self.ident("vae", f"r{r}/pseudo")},
                  [pre + "stats.npz"],
                  lambda t: _summ(steps.class_stats(vae, pl_path, aug, seed, t[pre + "stats.npz"]),
                                  lambda i: f"{i['labeled_images']:,} labeled encodings, pool {i['pool']:,}"))
        stats = self.path(pre + "stats.npz")
        self.step(f"r{r}/generate", f"round {r}: generate {aug.per_class:,} per class (Beam job)",
                  {"per_class": aug.per_class, "classes": classes, "seed": seed,
                   **self.ident("vae", f"r{r}/stats")}, [pre + "data"],
                  lambda t: _summ(steps.generate(vae, stats, classes, aug, seed, t[pre + "data"], self.argv),
                                  lambda i: f"{i['total']:,} records, digest {i['dataset_digest'][:16]}"))
        data_dir = self.path(pre + "data")
        rows = aug.per_class * len(classes)
        p_cfg = steps.classifier_config(k, seed, rows, epochs=aug.pretrain_epochs, batch_size=128,
                                        **self.shifts)
        self.step(f"r{r}/pretrain", f"round {r}: pretrain the reference CNN on the shards",
                  {"config": p_cfg.to_dict(), **self.ident(f"r{r}/generate")}, [pre + "pretrain"],
                  lambda t: _summ(steps.pretrain(data_dir, p_cfg, t[pre + "pretrain"], self.argv),
                                  lambda i: f"{i['steps']:,} steps"))
        f_cfg = steps.classifier_config(k, seed, n_lab, steps=aug.finetune_steps,
                                        learning_rate=aug.finetune_learning_rate, **self.shifts)

        def ft_body(t):
            i = steps.finetune(labeled, self.path(pre + "pretrain"), f_cfg, t[pre + "classifier"], self.argv)
            i["val_accuracy"] = steps.val_accuracy(t[pre + "classifier"], val)
            i["summary"] = f"validation accuracy {i['val_accuracy']:.2%}"
            return i

        ft = self.step(f"r{r}/finetune", f"round {r}: fine-tune on the {n_lab:,} labeled rows (B candidate)",
                       {"config": f_cfg.to_dict(), **self.ident("split", f"r{r}/pretrain")}, [pre + "classifier"],
                       ft_body)
        s_cfg = steps.classifier_config(k, seed, rows + n_lab, epochs=aug.selftrain_epochs, batch_size=128,
                                        **self.shifts)

        def st_body(t):
            i = steps.selftrain(pl_path, data_dir, s_cfg, t[pre + "classifier_real"], self.argv)
            i["val_accuracy"] = steps.val_accuracy(t[pre + "classifier_real"], val)
            i["summary"] = (f"{i['real_rows']:,} real + {i['synthetic_rows']:,} synthetic rows, validation accuracy "
                            f"{i['val_accuracy']:.2%}")
            return i

        st = self.step(f"r{r}/selftrain", f"round {r}: the reference CNN on the shards + the pseudo-labeled real rows "
                                          "(B candidate)",
                       {"config": s_cfg.to_dict(), **self.ident(f"r{r}/pseudo", f"r{r}/generate")},
                       [pre + "classifier_real"], st_body)
        return [(decide.Candidate(decide.candidate_name(r, decide.SHARDS), r, ft["info"]["val_accuracy"],
                                  decide.SHARDS), f"r{r}/finetune", self.path(pre + "classifier")),
                (decide.Candidate(decide.candidate_name(r, decide.SHARDS_REAL), r, st["info"]["val_accuracy"],
                                  decide.SHARDS_REAL), f"r{r}/selftrain", self.path(pre + "classifier_real"))]

    def score(self, t, rounds, dirs) -> dict:
        """Everything that needs the test split or hidden labels: read here, after every choice is made."""
        test = D.test_split(self.source, self.seed)
        out = {"has_test": test is not None, "test_images": 0 if test is None else len(test)}
        if test is not None:
            out["A_test"] = steps.test_accuracy(self.path("labeler"), test)
            out["B_test"] = steps.test_accuracy(self.path("classifier"), test)
            out["lift_points"] = 100 * (out["B_test"] - out["A_test"])
            out["candidates_test"] = {name: steps.test_accuracy(path, test) for name, path in dirs.items()}
        import numpy as np

        rows = np.load(self.path("splits/rows.npz"))["pool"]
        truth = D.hidden_truth(self.source, self.seed, rows)
        out["pseudo_labels"] = {}
        for r in rounds:
            z = np.load(self.path(f"rounds/r{r}/pseudo_labels.npz"))
            pseudo, y = z["pseudo"], z["y_train"]
            unl = int(pseudo.sum() + (y < 0).sum())
            made = self.records.get(f"r{r}/pseudo", {}).get("info", {})
            entry = {"coverage": float(pseudo.sum() / max(1, unl)), "labeled": int(pseudo.sum()), "unlabeled": unl,
                     "labeler": made.get("labeler"), "labeler_validation": made.get("labeler_validation")}
            if truth is not None:
                entry["precision"] = float((y[pseudo] == truth[pseudo]).mean()) if pseudo.any() else None
            out["pseudo_labels"][str(r)] = entry
        kind = __import__("vae_model.data.source", fromlist=["parse_source"]).parse_source(self.source)[0]
        fid_clf = "bundled" if kind == "mnist" else self.path("classifier")
        out["fidelity_classifier"] = "bundled (the reference CNN on all 60,000 MNIST labels)" if kind == "mnist" \
            else "B (classifier/)"
        # the reference for CAS and novelty: every real label the source has (the hidden ones too: scoring only)
        real = D.truth_source(self.source) or self.source
        ev = steps.evaluate_data(self.path("data"), real, fid_clf, self.aug, self.seed, t["evaluation"])
        out["evaluate"] = {**ev, "real_source": real}
        with open(t["scores.json"], "w") as f:
            json.dump(out, f, indent=1, default=float)
        s = f"A {out['A_test']:.2%}, B {out['B_test']:.2%} ({out['lift_points']:+.2f} points)" if test is not None \
            else "no test split: no test accuracy"
        return {**out, "summary": s}


def _summ(info: dict, fmt) -> dict:
    info["summary"] = fmt(info)
    return info


def _classes(cs) -> str:
    return f"{cs[0]}..{cs[-1]}" if cs == list(range(cs[0], cs[-1] + 1)) else ",".join(map(str, cs))


def run_augment(source: str, out: str, aug: AugmentConfig, vae: str | None = None, seed: int = 0, log=print,
                argv=None) -> dict:
    """`vae-augment augment`: run (or resume) the whole job; returns report.json's content."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be an integer >= 0, got {seed!r}")
    return Job(source, out, aug, vae, seed, log, argv).run()
