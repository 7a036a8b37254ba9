"""Sampler x spread x classifier-filter comparison on the bundled model: label fidelity, CAS and novelty.

    python benchmarks/sampler_grid.py                       # the README table (~25 min on 2 cores)
    python benchmarks/sampler_grid.py --samplers classgauss --spreads 1.0 --per-class 200   # a smoke test

For every combination: `vae-augment generate` (bundled VAE, --per-class N, seed 0; with the filter, the bundled
reference classifier at --min-confidence P), then `vae-augment evaluate` against real MNIST with the bundled
classifier. Prints a Markdown table and writes every report under --out.

Note: label fidelity is measured by the same bundled classifier the filter uses, so with the filter it is high by
construction; CAS (a fresh classifier trained only on the synthetic records, scored on the real test set) is the
independent measure.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline.logs import quiet_libraries  # noqa: E402

quiet_libraries()

from pipeline.evaluation.evaluate import evaluate  # noqa: E402
from pipeline.generate.graph import GenerateJob, run_job  # noqa: E402

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", default="centroid,classgauss,posterior,gmm")
    ap.add_argument("--spreads", default="0.5,1.0")
    ap.add_argument("--min-confidence", type=float, default=0.9, help="filter threshold of the filtered arm")
    ap.add_argument("--no-filter-arm", action="store_true", help="only the unfiltered runs")
    ap.add_argument("--per-class", type=int, default=2000)
    ap.add_argument("--model", default=None, help="VAE directory (default: the bundled one)")
    ap.add_argument("--stats", default=None, help="class statistics file from `vae-augment stats` (default: the "
                                                  "model's latent_stats.npz)")
    ap.add_argument("--out", default="out/sampler_grid")
    args = ap.parse_args(argv)

    filters = [None] if args.no_filter_arm else [None, args.min_confidence]
    rows = []
    for sampler, spread, mc in itertools.product(args.samplers.split(","),
                                                 [float(s) for s in args.spreads.split(",")], filters):
        name = f"{sampler}-{spread}-{'f' + str(mc) if mc else 'nofilter'}"
        out = os.path.join(args.out, name)
        t0 = time.time()
        m = run_job(GenerateJob(out=os.path.join(out, "data"), model=args.model, per_class=args.per_class,
                                sampler=sampler, spread=spread, seed=0, overwrite=True, stats=args.stats,
                                filter_classifier="bundled" if mc else None, min_confidence=mc), LOCAL)
        t_gen = time.time() - t0
        r = evaluate(os.path.join(out, "data"), "mnist", None, os.path.join(out, "report"))
        f, cas, nov, div = r["fidelity"], r["cas"], r["novelty"], r["diversity"]
        row = {"sampler": sampler, "spread": spread, "min_confidence": mc,
               "acceptance": m.get("filter", {}).get("acceptance"),
               "fidelity": f["fidelity"], "fidelity_min_class": min(v["fidelity"] for v in f["per_class"].values()),
               "cas": cas.get("cas"), "cas_ceiling": cas.get("ceiling"),
               "exact_copies": nov.get("exact_duplicates"), "near_dup_rate": nov.get("near_duplicate_rate"),
               "near_dup_baseline": nov.get("baseline_near_duplicate_rate"),
               "diversity_ratio": div.get("mean_ratio"), "generate_s": round(t_gen, 1),
               "evaluate_s": r["timings"]["metrics_total"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(args.out, "grid.json"), "w") as fh:
            json.dump(rows, fh, indent=1)

    print("\n| sampler | spread | filter (acceptance) | label fidelity (worst class) | CAS | exact copies | "
          "near-dup rate (real baseline) | diversity vs real |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        filt = f"p ≥ {r['min_confidence']} ({r['acceptance']:.1%})" if r["min_confidence"] else "none"
        cas = f"{r['cas']:.2%}" if r["cas"] is not None else "n/a"
        print(f"| {r['sampler']} | {r['spread']} | {filt} | {r['fidelity']:.2%} ({r['fidelity_min_class']:.1%}) | "
              f"{cas} | {r['exact_copies']} | {r['near_dup_rate']:.2%} ({r['near_dup_baseline']:.2%}) | "
              f"{r['diversity_ratio']:.2f} |")
    if rows and rows[0]["cas_ceiling"] is not None:
        print(f"\nCAS ceiling (the same CNN trained on the real training set): {rows[0]['cas_ceiling']:.2%}")


if __name__ == "__main__":
    main()
