"""Issue 16's table: `vae-augment augment` over seeds and label budgets, A (real labels only) against B (the
augmented classifier), MNIST test accuracy, mean ± std, and whether B beat A in every seed.

Each run is the CLI command a user types (a subprocess, so nothing here differs from it), resumable: re-running
this script skips finished steps of finished runs and only reprints their numbers.

    python benchmarks/augment.py                                  # 100 and 10 per class, seeds 0-2 (bundled VAE)
    python benchmarks/augment.py --labels 10 --seeds 0 --out /tmp/aug   # one run
    python benchmarks/augment.py --vae train                      # train the VAE on the training split per run
    python benchmarks/augment.py --vae 'out/bench-augment/100pc-seed{seed}-train/vae'  # reuse those, per seed
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {100: 0.985, 10: 0.970}  # issue 16: B's mean test accuracy


def cli() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "vae-augment")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "pipeline.cli"]


def run_one(labels: int, seed: int, out: str, vae: str | None, extra: list[str]) -> dict:
    cmd = [*cli(), "augment", "--data", f"mnist?labeled_per_class={labels}", "--out", out, "--seed", str(seed),
           *(["--vae", vae] if vae else []), *extra]
    t0 = time.time()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=HERE)
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    return {"labels": labels, "seed": seed, "A": rep["test"]["A_test"], "B": rep["test"]["B_test"],
            "steps_seconds": rep["seconds_all_steps"], "wall_seconds": round(time.time() - t0, 1),
            "chosen": rep["choice"]["chosen"], "out": out}


def table(rows: list[dict]) -> str:
    lines = ["| labels per class | seeds | A (real only) | B (augmented) | lift (points) | B > A every seed "
             "| target B | met | minutes per run (steps) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for labels in sorted({r["labels"] for r in rows}, reverse=True):
        rs = [r for r in rows if r["labels"] == labels]
        a, b = [r["A"] for r in rs], [r["B"] for r in rs]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        target = TARGETS.get(labels)
        mean_b = statistics.mean(b)
        lines.append(
            f"| {labels} | {','.join(str(r['seed']) for r in rs)} | {statistics.mean(a):.2%} ± {sd(a):.2%} "
            f"| {mean_b:.2%} ± {sd(b):.2%} | {100 * (mean_b - statistics.mean(a)):+.2f} "
            f"| {'yes' if all(r['B'] > r['A'] for r in rs) else 'no'} "
            f"| {f'{target:.1%}' if target else '-'} | {('yes' if mean_b >= target else 'no') if target else '-'} "
            f"| {statistics.mean(r['steps_seconds'] for r in rs) / 60:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", default="100,10", help="Comma-separated labeled images per class.")
    ap.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds (each draws its own labeled subset).")
    ap.add_argument("--vae", default="bundled-unlabeled",
                    help="--vae for augment; 'train' trains one per run on the training split; a model "
                         "directory path may contain {seed}, replaced by each run's seed.")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "bench-augment"), help="Parent of the run dirs.")
    ap.add_argument("--json", default=None, help="Also write the rows here.")
    args, extra = ap.parse_known_args(argv)
    vae = None if args.vae == "train" else args.vae
    tag = args.vae if args.vae in ("train", "bundled-unlabeled", "bundled") else "given"  # run dir names
    rows = []
    for labels in [int(v) for v in args.labels.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            out = os.path.join(args.out, f"{labels}pc-seed{seed}-{tag}")
            rows.append(run_one(labels, seed, out, vae and vae.replace("{seed}", str(seed)), extra))
            print(f"  {labels}/class seed {seed}: A {rows[-1]['A']:.2%} -> B {rows[-1]['B']:.2%} "
                  f"({rows[-1]['steps_seconds'] / 60:.1f} min of steps)", flush=True)
    print(f"\nvae-augment augment, MNIST test set, --vae {args.vae}, {time.strftime('%Y-%m-%d')}:\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
