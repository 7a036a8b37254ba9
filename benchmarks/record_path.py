"""The record path's cost: `vae-augment generate` with a decoder of negligible cost, against the bundled decoder.

    python benchmarks/record_path.py            # 1M stand-in + 1M bundled + 4M bundled + ceiling; ~5 min on 2 cores
    python benchmarks/record_path.py --quick    # 200k / 200k / no big run

In one run on one machine:

(s) stand-in decoder: a model directory made by this script, a copy of the bundled one whose decoder is one
    Dense(784, sigmoid) layer (weights fit by least squares to the bundled decoder's logits, so the images look
    like digits and compress like them). `generate --num N`, both formats, run in-process with per-stage CPU
    timers (thread CPU seconds of each stage, summed over threads): sample + decode, dataset digest, Parquet
    encode + write, TFRecord encode + write (checksums and file writes included), plus the CPU of the
    process's native threads (TensorFlow's kernels run there while the calling thread waits); the rest is Beam.
    Records/s is the manifest's pipeline time.
(b) the bundled decoder, 1M and 4M, the CLI as a subprocess, start -> manifest, with peak RSS
    (benchmarks/generate_throughput.py's part, fresh process each).
(a) the decode ceiling (generate_throughput.py's part: the decoder in a tf.function, no Beam, no I/O).
(s/a) the stand-in's own decode ceiling: its decoder through the job's BatchDecoder (the same tf.function with
    the uint8 quantization, batch 4096), no Beam, no I/O. On a CPU the stand-in is not free (784 sigmoids and
    roundings per record), so this rate bounds (s) from above.
(w) the write floor: the stand-in run's shard bytes written again with plain file writes of 4 MB (no encoding,
    no Beam), twice: the kernel's copy into the page cache is the part of (s) no code of ours can remove. The
    first pass may be slower (the VM touching memory it has not used for a while).
(t) start-up: `vae-augment --help`, `vae-augment verify` on an output, and `from pipeline.readers import
    load_parquet`, best of 3, with a check that none of them imported TensorFlow, Keras or Beam's runners.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
GB = 1e9
HEAVY = ("tensorflow", "keras", "apache_beam.runners")


# ------------------------------------------------------------------------------------------------ stand-in model

def make_standin(model_dir: str) -> str:
    """A copy of the bundled model dir whose decoder is Dense(784, sigmoid) (+ reshape), recorded like train does:
    model.json's sha256 map and model_id (first 16 hex of decoder.keras's sha256) match the new file."""
    import keras
    import numpy as np

    from vae_model.artifacts import sha256_file
    from vae_model.model_dir import ModelDir, bundled_model_dir

    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(bundled_model_dir(), model_dir)
    md = ModelDir.open(bundled_model_dir())
    d, (h, w) = md.latent_dim, md.image_shape
    z = np.random.default_rng(0).standard_normal((8192, d)).astype(np.float32)
    x = np.clip(md.decoder.predict(z, batch_size=4096, verbose=0).reshape(len(z), -1), 1e-3, 1 - 1e-3)
    coef, *_ = np.linalg.lstsq(np.c_[z, np.ones(len(z))], np.log(x / (1 - x)), rcond=None)
    out_shape = tuple(md.decoder.outputs[0].shape[1:])
    dec = keras.Sequential([keras.Input((d,)), keras.layers.Dense(h * w, activation="sigmoid"),
                            keras.layers.Reshape(out_shape)])
    dec.layers[0].set_weights([coef[:-1].astype(np.float32), coef[-1].astype(np.float32)])
    dec.save(os.path.join(model_dir, "decoder.keras"))
    meta_path = os.path.join(model_dir, "model.json")
    meta = json.load(open(meta_path))
    sha = sha256_file(os.path.join(model_dir, "decoder.keras"))
    meta["sha256"]["decoder.keras"] = sha
    meta["model_id"] = sha[:16]
    meta["name"] = "standin-dense784"
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    return model_dir


def _cpu_since(r0) -> float:
    """User + system CPU seconds of this process since the getrusage snapshot r0."""
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


# ------------------------------------------------------------------------------------------------ stage timers

class StageTimers:
    """Thread CPU seconds per stage, summed over all threads; installed by wrapping the stage functions."""

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrap(self, owner, name: str, stage: str):
        fn = getattr(owner, name)

        def timed(*a, **k):
            t = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                dt = time.thread_time() - t
                with self._lock:
                    self.cpu[stage] = self.cpu.get(stage, 0.0) + dt

        setattr(owner, name, timed)


class NativeThreadCPU:
    """CPU seconds of this process's threads that are not Python threads (TensorFlow's and Arrow's thread pools,
    where a stage's kernels run while its Python thread waits), read from /proc/self/task every 50 ms."""

    def __init__(self):
        self._tick = os.sysconf("SC_CLK_TCK")
        self._cpu: dict[int, float] = {}
        self._python: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="native-cpu", daemon=True)

    def _read(self):
        self._python.update(t.native_id for t in threading.enumerate())
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # the thread ended
                continue
            self._cpu[int(tid)] = (int(fields[11]) + int(fields[12])) / self._tick

    def _poll(self):
        while not self._stop.wait(0.05):
            self._read()

    def __enter__(self):
        self._read()
        self._base = dict(self._cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._read()

    @property
    def seconds(self) -> float:
        return sum(v - self._base.get(t, 0.0) for t, v in self._cpu.items() if t not in self._python)


def part_standin(args) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    model = make_standin(os.path.join(args.out, "standin-model"))
    from pipeline.cli import cli
    from pipeline.dataset.layout import read_manifest
    from pipeline.generate import sinks, transforms

    timers = StageTimers()
    timers.wrap(transforms._GenerateShardFn, "_make", "sample + decode (helper threads)")
    timers.wrap(transforms, "batch_digest", "dataset digest")
    timers.wrap(sinks.ParquetBatchSink, "_write_batch", "Parquet: Arrow + encode + checksum + write")
    timers.wrap(sinks.TFRecordBatchSink, "_write_batch", "TFRecord: Example + framing + checksum + write")
    out = os.path.join(args.out, f"standin-{args.n}")
    argv = ["generate", "--num", str(args.n), "--formats", "parquet,tfrecord", "--model", model, "--out", out,
            "--overwrite", *args.generate_args.split()]
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with NativeThreadCPU() as native:
        try:
            cli.main(argv, standalone_mode=False)
        except SystemExit as e:
            if e.code:
                raise
    cpu, wall = _cpu_since(r0), time.perf_counter() - w0
    timers.cpu["native threads (TensorFlow's kernels, Arrow's pool)"] = native.seconds
    m = read_manifest(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"n": args.n, "pipeline_seconds": m["pipeline_seconds"], "run_job_seconds": m["elapsed_seconds"],
            "wall": wall, "cpu_seconds": cpu, "stages": timers.cpu, "cores": os.cpu_count(),
            "bytes": sum(s["bytes"] for s in m["shards"]),
            "command": "vae-augment " + " ".join(argv).replace(model, "STANDIN").replace(out, "OUT")}


def part_standin_ceiling(args) -> dict:
    """The stand-in decoder alone, as the job calls it (vae_model.inference.BatchDecoder), best of --repeats."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from vae_model.inference import BatchDecoder
    from vae_model.model_dir import ModelDir

    path = os.path.join(args.out, "standin-model")  # part_standin's, when it ran first in this --out
    md = ModelDir.open(path if os.path.isfile(os.path.join(path, "model.json")) else make_standin(path))
    batch = 4096
    z = np.random.default_rng(0).standard_normal((max(batch, args.n // batch * batch), md.latent_dim))
    z = z.astype(np.float32)
    dec = BatchDecoder(md.decoder, batch)
    dec(z[:batch])  # trace + warm up
    best, r0 = 0.0, resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.repeats):
        t = time.perf_counter()
        dec(z)
        best = max(best, len(z) / (time.perf_counter() - t))
    cpu = _cpu_since(r0)
    return {"rate": best, "batch": batch, "n": len(z), "core_seconds_per_1m": cpu / (args.repeats * len(z)) * 1e6,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def part_write_floor(out_dir: str, nbytes: int, passes: int = 2) -> list[dict]:
    """Seconds and core-seconds (user + sys) to write `nbytes` to a file in out_dir in 4 MB writes, per pass."""
    buf = os.urandom(4 << 20)
    path = os.path.join(out_dir, "write-floor.bin")
    res = []
    for _ in range(passes):
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(-(-nbytes // len(buf))):
                f.write(buf)
        wall, cpu = time.perf_counter() - t, _cpu_since(r0)
        os.remove(path)
        res.append({"seconds": wall, "cpu_seconds": cpu, "gb_per_s": nbytes / wall / GB})
    return res


def part_startup(args) -> dict:
    cli = [sys.executable, "-c", "import sys; sys.argv=['vae-augment','--help']; from pipeline.cli import main; "
           "main()"]
    exe = os.path.join(os.path.dirname(sys.executable), "vae-augment")
    probe = ("import sys, runpy; sys.argv={argv!r}\ntry:\n    {body}\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras') "
             "or m.startswith('apache_beam.runners')))")
    out = os.path.join(args.out, "startup-out")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        subprocess.run([exe, "generate", "--num", "2000", "--out", out, "--overwrite"], check=True,
                       capture_output=True, cwd=ROOT)
    cases = {
        "vae-augment --help": ([exe, "--help"], ["vae-augment", "--help"], "from pipeline.cli import main; main()"),
        "vae-augment verify OUT (2,000 records)": ([exe, "verify", out], ["vae-augment", "verify", out],
                                                   "from pipeline.cli import main; main()"),
        "python -c 'from pipeline.readers import load_parquet'": (
            [sys.executable, "-c", "from pipeline.readers import load_parquet"], [],
            "from pipeline.readers import load_parquet"),
    }
    res = {}
    for name, (cmd, argv, body) in cases.items():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, cwd=ROOT)
            best = min(best, time.perf_counter() - t)
        p = subprocess.run([sys.executable, "-c", probe.format(argv=argv, body=body)], capture_output=True,
                           text=True, cwd=ROOT)
        heavy = [ln for ln in p.stdout.splitlines() if ln.startswith("HEAVY")]
        res[name] = {"seconds": best, "heavy": json.loads(heavy[-1][6:].replace("'", '"')) if heavy else None}
    del cli
    return res


def _run(name: str, n: int, args) -> dict:
    import generate_throughput as gt

    if name in ("generate", "ceiling"):
        return gt._run_part(name, n, args)
    return gt.run_script_part(__file__, name, n, args.out, args.generate_args, ["--repeats", str(args.repeats)])


def _load() -> str:
    import generate_throughput as gt

    return gt._load()


def report(r: dict) -> None:
    s, cores = r["standin"], r["standin"]["cores"]
    print(f"machine: {cores} cores; load average (1/5/15 min) before {r['load_before']}, after {r['load_after']}")
    rate = s["n"] / s["pipeline_seconds"]
    print(f"{'':58}{'N':>11}{'seconds':>9}{'records/s':>12}{'per core':>10}")
    print(f"{'(s) stand-in Dense(784) decoder, pipeline time':58}{s['n']:>11,}{s['pipeline_seconds']:>9.1f}"
          f"{rate:>12,.0f}{rate / cores:>10,.0f}   (target >= 300,000)")
    print(f"{'      run_job (plan + pipeline + publish)':58}{'':>11}{s['run_job_seconds']:>9.1f}"
          f"{s['n'] / s['run_job_seconds']:>12,.0f}")
    print(f"      CPU {s['cpu_seconds']:.1f} core-s in-process = {s['cpu_seconds'] / s['n'] * 1e6:.1f} core-s per 1M "
          f"records ({s['cpu_seconds'] / s['wall'] / cores:.0%} of {cores} cores over {s['wall']:.1f} s); "
          f"{s['bytes'] / GB:.2f} GB of shards")
    print("      per stage, thread CPU seconds per 1M records:")
    staged = 0.0
    for stage, sec in sorted(s["stages"].items(), key=lambda kv: -kv[1]):
        staged += sec
        print(f"        {stage:52}{sec / s['n'] * 1e6:>7.2f}")
    print(f"        {'rest (Beam, bookkeeping: Python threads, no stage)':52}"
          f"{(s['cpu_seconds'] - staged) / s['n'] * 1e6:>7.2f}")
    sa = r.get("standin_ceiling")
    if sa:
        print(f"{'(s/a) stand-in decoder alone: BatchDecoder, batch ' + str(sa['batch']) + ', no Beam':58}"
              f"{sa['n']:>11,}{'':>9}{sa['rate']:>12,.0f}{sa['rate'] / cores:>10,.0f}")
        print(f"      {sa['core_seconds_per_1m']:.1f} core-s per 1M records: (s) cannot be faster than this; "
              f"(s)/(s/a) = {rate / sa['rate']:.2f}")
    for i, w in enumerate(r.get("write_floor") or []):
        label = f"(w) write floor, pass {i + 1}: the same {s['bytes'] / GB:.2f} GB, 4 MB writes"
        print(f"{label:58}{'':>11}{w['seconds']:>9.1f}{s['n'] / w['seconds']:>12,.0f}   {w['gb_per_s']:.2f} GB/s, "
              f"{w['cpu_seconds'] / s['n'] * 1e6:.1f} core-s per 1M records")
    if sa and r.get("write_floor"):
        floor = sa["core_seconds_per_1m"] + min(w["cpu_seconds"] for w in r["write_floor"]) / s["n"] * 1e6
        print(f"      floor for (s): decode alone + the fastest write pass = {floor:.1f} core-s per 1M records, so at "
              f"most {cores * 1e6 / floor:,.0f} records/s on {cores} cores with nothing else done (no sampling, "
              "Arrow, Example encoding, CRC32C, digest or Beam)")
    for key in ("bundled", "big"):
        b = r.get(key)
        if not b:
            continue
        print(f"{'(b) bundled decoder, start -> manifest':58}{b['n']:>11,}{b['seconds']:>9.1f}{b['rate']:>12,.0f}"
              f"{b['rate'] / cores:>10,.0f}")
        print(f"{'      pipeline only (manifest pipeline_seconds)':58}{'':>11}{b['pipeline_seconds']:>9.1f}"
              f"{b['pipeline_rate']:>12,.0f}")
        print(f"      peak RSS {b['peak_rss'] / GB:.2f} GB (largest process; whole tree {b['peak_tree_rss'] / GB:.2f} GB)"
              f"; start-up before run_job {b['startup_seconds']:.1f} s")
    a = r["ceiling"]
    print(f"{'(a) decode ceiling: tf.function, batch ' + str(a['batch']) + (' XLA' if a['xla'] else ''):58}"
          f"{a['n']:>11,}{'':>9}{a['rate']:>12,.0f}")
    big = r.get("big") or r["bundled"]
    print(f"(b)/(a) at N={big['n']:,}: {big['rate'] / a['rate']:.2f} start -> manifest, "
          f"{big['pipeline_rate'] / a['rate']:.2f} pipeline only (target >= 0.65 at 4M); "
          f"peak RSS {big['peak_rss'] / GB:.2f} GB (target < 1.5)")
    print("(t) start-up, best of 3:")
    for name, v in r["startup"].items():
        heavy = "none" if v["heavy"] == [] else ", ".join(sorted({m.split('.')[0] for m in v["heavy"] or []})) or "?"
        print(f"      {name:58}{v['seconds']:>6.2f} s   heavy modules imported: {heavy}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--big-n", type=int, default=4_000_000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--part", default=None)
    ap.add_argument("--generate-args", default="")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: bundled,big,startup")
    args = ap.parse_args(argv)
    if args.part:
        fn = {"standin": part_standin, "standin_ceiling": part_standin_ceiling, "startup": part_startup}[args.part]
        print(json.dumps(fn(args)))
        return 0
    n = args.n or (200_000 if args.quick else 1_000_000)
    own = args.out is None
    args.out = args.out or tempfile.mkdtemp(prefix="vae-augment-record-path-")
    skip = set(filter(None, args.skip.split(",")))
    try:
        r = {"load_before": _load()}
        r["standin"] = _run("standin", n, args)
        r["standin_ceiling"] = _run("standin_ceiling", n, args)
        r["write_floor"] = part_write_floor(args.out, r["standin"]["bytes"])
        r["bundled"] = None if "bundled" in skip else _run("generate", n, args)
        r["big"] = None if args.quick or "big" in skip else _run("generate", args.big_n, args)
        r["ceiling"] = _run("ceiling", 163_840, args)
        r["startup"] = {} if "startup" in skip else _run("startup", 0, args)
        r["load_after"] = _load()
        if r["bundled"] is None:
            r["bundled"] = r["big"]
        report(r)
    finally:
        if own:
            shutil.rmtree(args.out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
