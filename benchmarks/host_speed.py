"""How fast is this host right now? The same VAE training step (the bundled conv VAE's architecture, one fixed
MNIST batch) timed in consecutive windows, each with the CPU time the process got in it. The development host has
phases in which the same step runs up to twice as slow on about one core (README, "Few labels: vae-augment
augment"); run this before timing anything, and report its line with the timing.

    python benchmarks/host_speed.py                 # 12 windows of 30 steps
    python benchmarks/host_speed.py --windows 40 --intra-op 1
"""
from __future__ import annotations

import argparse
import math
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
    from pipeline.augment.config import AugmentConfig
    from vae_model.config import load_config
    from vae_model.data import load_source
    from vae_model.models import build_vae

    cfg = load_config("conv_unlabeled")
    train = load_source("mnist", validation_split=0.0, seed=0).train
    batch = tf.constant(train.images[:cfg.train.batch_size, ..., None].astype(np.float32) / 255.0)
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
    epochs = AugmentConfig().vae_epochs or cfg.train.epochs
    steps = epochs * math.ceil(len(train) / cfg.train.batch_size)
    print(f"VAE step (batch {cfg.train.batch_size}): fastest {fast:.0f} ms, median {statistics.median(ms):.0f} ms, "
          f"slowest {max(ms):.0f} ms; slowest/fastest {max(ms) / fast:.2f}; augment's VAE step ({epochs} epochs of "
          f"{len(train):,} images, {steps:,} steps) at the median: {statistics.median(ms) * steps / 60_000:.1f} min")


if __name__ == "__main__":
    main()
