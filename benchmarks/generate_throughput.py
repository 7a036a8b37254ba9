"""Images/s of `vae-augment generate` against the decoder's ceiling, the stock Beam recipe and the seeds' loop.

    python benchmarks/generate_throughput.py            # the full run (N = 1M, 4M, 100k, 200); ~6 minutes on 2 cores
    python benchmarks/generate_throughput.py --quick    # small N everywhere, no 4M run; ~1.5 minutes

In one run on one machine, each part in a fresh process:

(a) ceiling: the bundled decoder called directly through a fixed-signature tf.function on large batches, no Beam,
    no I/O (best of a few batch sizes, with and without XLA).
(b) `vae-augment generate` end to end through the local runner, both formats, the default sampler, timed from
    process start to manifest written (the CLI as a subprocess); also its steady-state rate (from the per-worker
    progress lines, between 10% and 90% of the records) and the manifest's pipeline time. Peak RSS is the largest
    process of the CLI's tree (getrusage RUSAGE_CHILDREN in a wrapper process) and, sampled from /proc, the sum
    over the tree. Run again at --big-n (default 4M) for the flat-memory check.
(c) the stock recipe: beam.Create of per-example latent vectors | RunInference(TFModelHandlerNumpy(decoder.keras))
    with default batching | Map to dicts | WriteToParquet, on the same local runner.
(d) the seeds' way: decoder.predict on one latent vector at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GB = 1e9


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "apache_beam", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def _latents(n: int, seed: int = 0):
    """n latent codes of the default sampler, 1/10 per class, as the generate job draws them."""
    import numpy as np

    from pipeline.generate.samplers import build_sampler
    from vae_model.model_dir import ModelDir

    md = ModelDir.open(None)
    from pipeline.generate.job import DEFAULT_SAMPLER, default_spread

    sampler = build_sampler(DEFAULT_SAMPLER, md.latent_dim, False, md.stats(), default_spread(DEFAULT_SAMPLER))
    per = -(-n // 10)
    z = np.concatenate([sampler.sample(np.random.default_rng([seed, c]), c, per) for c in range(10)])
    return md, z[:n]


# ------------------------------------------------------------------------------------------------------------
# parts run in child processes; each prints one JSON line
# ------------------------------------------------------------------------------------------------------------


def part_ceiling(args) -> dict:
    _quiet_tf()
    import tensorflow as tf

    md, z = _latents(args.n)
    decoder = md.decoder
    results = []
    for batch in (4096, 16384):
        for jit in (False, True):
            spec = [tf.TensorSpec([batch, md.latent_dim], tf.float32)]
            fn = tf.function(lambda x: decoder(x, training=False), input_signature=spec, jit_compile=jit)
            chunks = [tf.constant(z[i:i + batch]) for i in range(0, len(z) - batch + 1, batch)]
            fn(chunks[0]).numpy()  # trace + warm up
            best = 0.0
            for _ in range(args.repeats):
                t = time.perf_counter()
                for c in chunks:
                    fn(c).numpy()
                best = max(best, len(chunks) * batch / (time.perf_counter() - t))
            results.append({"batch": batch, "xla": jit, "rate": best})
            del fn
    top = max(results, key=lambda r: r["rate"])
    return {"rate": top["rate"], "batch": top["batch"], "xla": top["xla"], "all": results, "n": args.n,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def part_stock(args) -> dict:
    _quiet_tf()
    import apache_beam as beam
    import numpy as np
    import pyarrow as pa
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.generate.runners import make_runner

    md, z = _latents(args.n)
    examples = list(z)  # per-example latent vectors, as a user would Create them
    schema = pa.schema([("image", pa.binary()), ("latent", pa.list_(pa.float32()))])

    def to_dict(result):
        pixels = np.clip(np.round(np.asarray(result.inference) * 255.0), 0, 255).astype(np.uint8)
        return {"image": pixels.tobytes(), "latent": result.example.tolist()}

    out = os.path.join(args.out, "stock")
    options = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    t = time.perf_counter()
    with beam.Pipeline(runner=make_runner(options), options=options) as p:
        (p
         | beam.Create(examples)
         | RunInference(TFModelHandlerNumpy(md.file("decoder.keras")))
         | beam.Map(to_dict)
         | beam.io.WriteToParquet(os.path.join(out, "part"), schema, file_name_suffix=".parquet"))
    seconds = time.perf_counter() - t
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(os.path.join(out, f)).metadata.num_rows for f in os.listdir(out)
               if f.endswith(".parquet"))
    assert rows == args.n, (rows, args.n)
    return {"rate": args.n / seconds, "seconds": seconds, "n": args.n}


def part_seed(args) -> dict:
    _quiet_tf()
    md, z = _latents(args.n)
    decoder = md.decoder
    decoder.predict(z[:1], verbose=0)
    t = time.perf_counter()
    for i in range(args.n):
        decoder.predict(z[i:i + 1], verbose=0)
    seconds = time.perf_counter() - t
    return {"rate": args.n / seconds, "seconds": seconds, "n": args.n}


def _tree_rss(root: int) -> int:
    """Sum of VmRSS (bytes) over `root` and its descendants, from /proc (0 where /proc is unavailable)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/statm") as f:
                rss[pid] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


_PROGRESS = re.compile(r"decoded ([\d,]+) / ([\d,]+) records in this worker \(pid (\d+)")


def _steady_rate(events, total) -> float | None:
    """Records/s between 10% and 90% of `total`, from (time, pid, done) progress events summed over workers."""
    latest: dict[int, int] = {}
    series = []
    for t, pid, done in events:
        latest[pid] = done
        series.append((t, sum(latest.values())))
    lo = next(((t, n) for t, n in series if n >= 0.1 * total), None)
    hi = next(((t, n) for t, n in series if n >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def part_generate(args) -> dict:
    """Runs the CLI as a child of this (fresh) process, so RUSAGE_CHILDREN covers exactly its process tree."""
    from pipeline.dataset.layout import read_manifest

    out = os.path.join(args.out, f"generate-{args.n}")
    cmd = [_cli(), "generate", "--num", str(args.n), "--formats", "parquet,tfrecord",
           "--out", out, "--overwrite", *args.generate_args.split()]
    peak_tree = [0]
    events = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            peak_tree[0] = max(peak_tree[0], _tree_rss(proc.pid))

    def read_stderr(lines):
        for line in proc.stderr:
            lines.append(line)
            m = _PROGRESS.search(line)
            if m:
                events.append((time.perf_counter(), int(m.group(3)), int(m.group(1).replace(",", ""))))

    stderr_lines: list[str] = []
    threads = [threading.Thread(target=sample, daemon=True),
               threading.Thread(target=read_stderr, args=(stderr_lines,), daemon=True)]
    for th in threads:
        th.start()
    stdout = proc.stdout.read()
    proc.wait()
    seconds = time.perf_counter() - start
    done.set()
    for th in threads:
        th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout}\n{''.join(stderr_lines[-20:])}")
    manifest = read_manifest(out)
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    result = {
        "n": args.n, "seconds": seconds, "rate": args.n / seconds,
        "steady_rate": _steady_rate(events, args.n),
        "pipeline_seconds": manifest["pipeline_seconds"], "run_job_seconds": manifest["elapsed_seconds"],
        "pipeline_rate": args.n / manifest["pipeline_seconds"],
        "startup_seconds": seconds - manifest["elapsed_seconds"],
        "peak_rss": maxrss, "peak_tree_rss": peak_tree[0], "workers": len({e[1] for e in events}),
        "shards": manifest["num_shards"], "formats": manifest["formats"],
        "bytes": sum(s["bytes"] for s in manifest["shards"]), "command": " ".join(cmd[1:]),
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def _cli() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "vae-augment")
    return exe if os.path.exists(exe) else shutil.which("vae-augment") or "vae-augment"


PARTS = {"ceiling": part_ceiling, "stock": part_stock, "seed": part_seed, "generate": part_generate}


# ------------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------------


def _run_part(name: str, n: int, args) -> dict:
    return run_script_part(__file__, name, n, args.out, args.generate_args, ["--repeats", str(args.repeats)])


def run_script_part(script: str, name: str, n: int, out: str, generate_args: str, extra=()) -> dict:
    """Run `script --part name` in a fresh process; its last stdout line starting with '{' is the result."""
    cmd = [sys.executable, os.path.abspath(script), "--part", name, "--n", str(n), "--out", out, *extra,
           f"--generate-args={generate_args}"]
    print(f"  running ({name}, N={n:,}) ...", file=sys.stderr, flush=True)
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise SystemExit(f"part {name} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return json.loads(lines[-1])


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _fmt_rate(r) -> str:
    return f"{r:>12,.0f}" if r else f"{'n/a':>12}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N everywhere and no big run (a smoke test)")
    ap.add_argument("--n-generate", type=int, default=None, help="N for (b) (default 1,000,000; quick 100,000)")
    ap.add_argument("--big-n", type=int, default=None, help="N for the flat-memory run of (b) (default 4,000,000)")
    ap.add_argument("--no-big", action="store_true", help="skip the flat-memory run")
    ap.add_argument("--n-stock", type=int, default=None, help="N for (c) (default 100,000; quick 10,000)")
    ap.add_argument("--n-seed", type=int, default=None, help="N for (d) (default 200; quick 50)")
    ap.add_argument("--n-ceiling", type=int, default=None, help="latents per pass for (a) (default 163,840)")
    ap.add_argument("--repeats", type=int, default=3, help="passes per ceiling configuration (best is kept)")
    ap.add_argument("--generate-args", default="", help="extra CLI/Beam args for (b), e.g. '--workers 2'")
    ap.add_argument("--out", default=None, help="scratch directory (default: a new temp dir, removed after)")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.part:  # child mode
        sys.path.insert(0, ROOT)
        print(json.dumps(PARTS[args.part](args)), flush=True)
        return 0

    quick = args.quick
    n_gen = args.n_generate or (100_000 if quick else 1_000_000)
    n_big = None if (args.no_big or quick) else (args.big_n or 4_000_000)
    n_stock = args.n_stock or (10_000 if quick else 100_000)
    n_seed = args.n_seed or (50 if quick else 200)
    n_ceiling = args.n_ceiling or (16384 * (4 if quick else 10))
    own_out = args.out is None
    args.out = args.out or tempfile.mkdtemp(prefix="vae-augment-bench-")
    load_before = _load()
    try:
        r = {"cores": os.cpu_count(), "load_before": load_before}
        r["a"] = _run_part("ceiling", n_ceiling, args)
        r["b"] = _run_part("generate", n_gen, args)
        r["b_big"] = _run_part("generate", n_big, args) if n_big else None
        r["c"] = _run_part("stock", n_stock, args)
        r["d"] = _run_part("seed", n_seed, args)
        r["load_after"] = _load()
    finally:
        if own_out:
            shutil.rmtree(args.out, ignore_errors=True)
    report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


def report(r: dict) -> None:
    a, b, big, c, d = r["a"], r["b"], r["b_big"], r["c"], r["d"]
    print(f"machine: {r['cores']} cores; load average (1/5/15 min) before {r['load_before']}, after "
          f"{r['load_after']}")
    print(f"{'':62}{'N':>11}{'seconds':>9}{'images/s':>12}")
    ceiling = f"(a) ceiling: decoder in a tf.function, batch {a['batch']}{', XLA' if a['xla'] else ''}"
    print(f"{ceiling:62}{a['n']:>11,}{'':>9}{_fmt_rate(a['rate'])}")
    print(f"{'(b) vae-augment generate, parquet+tfrecord, start -> manifest':62}{b['n']:>11,}"
          f"{b['seconds']:>9.1f}{_fmt_rate(b['rate'])}")
    print(f"{'      steady state (progress lines, 10%..90% of records)':62}{'':>20}{_fmt_rate(b['steady_rate'])}")
    print(f"{'      pipeline only (manifest pipeline_seconds)':62}{'':>11}{b['pipeline_seconds']:>9.1f}"
          f"{_fmt_rate(b['pipeline_rate'])}")
    print(f"{'      start-up before run_job (imports)':62}{'':>11}{b['startup_seconds']:>9.1f}")
    print(f"{'(c) stock: Create | RunInference(TFModelHandlerNumpy) | WriteToParquet':62}{c['n']:>11,}"
          f"{c['seconds']:>9.1f}{_fmt_rate(c['rate'])}")
    print(f"{'(d) seeds: decoder.predict, one latent vector per call':62}{d['n']:>11,}{d['seconds']:>9.1f}"
          f"{_fmt_rate(d['rate'])}")
    steady = b["steady_rate"] or b["pipeline_rate"]
    print(f"(b)/(a) = {b['rate'] / a['rate']:.2f} start->manifest, {steady / a['rate']:.2f} steady state "
          "(target >= 0.5)")
    print(f"(b)/(c) = {b['rate'] / c['rate']:.1f} start->manifest, {steady / c['rate']:.1f} steady state "
          "(target >= 20)")
    print(f"(b)/(d) = {b['rate'] / d['rate']:,.0f}")
    line = (f"peak RSS of (b): {b['peak_rss'] / GB:.2f} GB at N={b['n']:,} (largest process; whole tree "
            f"{b['peak_tree_rss'] / GB:.2f} GB, {b['workers']} worker process(es))")
    print(line + " (target < 2 GB)")
    if big:
        grow = big["peak_rss"] / b["peak_rss"] - 1
        print(f"peak RSS of (b): {big['peak_rss'] / GB:.2f} GB at N={big['n']:,} ({grow:+.1%} vs N={b['n']:,}; "
              f"whole tree {big['peak_tree_rss'] / GB:.2f} GB; target <= +10%), "
              f"{_fmt_rate(big['rate']).strip()} images/s start -> manifest = {big['rate'] / a['rate']:.2f} of (a) "
              "(target >= 0.65 at 4M)")


if __name__ == "__main__":
    sys.exit(main())
