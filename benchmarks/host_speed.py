"""How fast is this host right now? The same VAE training step (the bundled conv VAE's architecture, batch 128, one
fixed MNIST batch) timed in consecutive windows, each with the CPU time the process got in it.

On the 2-core development machine the step has two speeds: about 100-120 ms with the process using 1.8 cores, and
phases where the same step takes up to twice as long while the process gets about one core (there is no cgroup
quota inside the guest). `augment`'s VAE step took 699 s on one day and 1,377 s on another
with the same code; run this before timing anything, and report its line with the timing.

    python benchmarks/host_speed.py                 # 12 windows of 30 steps
    python benchmarks/host_speed.py --windows 40 --intra-op 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=12, help="number of timed windows")
    ap.add_argument("--steps", type=int, default=30, help="training steps per window")
    ap.add_argument("--intra-op", type=int, default=0, help="TensorFlow intra-op threads (0 = TF's default)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    from vae_model.config import load_config
    from vae_model.data import load_source
    from vae_model.models import build_vae

    cfg = load_config("conv_unlabeled")
    images = load_source("mnist", validation_split=0.0, seed=0).train.images[:cfg.train.batch_size]
    batch = tf.constant(images[..., None].astype(np.float32) / 255.0)
    vae = build_vae(cfg)
    vae.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate))
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    vae.fit(ds, steps_per_epoch=10, epochs=1, verbose=0)  # trace and warm up

    ms, cores = [], []
    for _ in range(args.windows):
        c0, t0 = os.times(), time.perf_counter()
        vae.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
        wall, c1 = time.perf_counter() - t0, os.times()
        ms.append(wall / args.steps * 1000)
        cores.append((c1.user - c0.user + c1.system - c0.system) / wall)
    print("window ms/step:", " ".join(f"{m:.0f}" for m in ms))
    print("window cores:  ", " ".join(f"{c:.1f}" for c in cores))
    fast = min(ms)
    print(f"VAE step (batch {cfg.train.batch_size}): fastest {fast:.0f} ms, median {statistics.median(ms):.0f} ms, "
          f"slowest {max(ms):.0f} ms; slowest/fastest {max(ms) / fast:.2f}; "
          f"20 epochs of 60,000 images at the median: {statistics.median(ms) * 9380 / 60000:.1f} min")


if __name__ == "__main__":
    main()
