"""Random shifts and rotations of training batches, for the reference CNN's `train.translate`/`train.rotate`.

Stateless: batch i's transforms are drawn from (train.seed, i), so a resumed or repeated run sees the same images.
"""
from __future__ import annotations

import math


def augments(cfg) -> bool:
    return cfg.train.translate > 0 or cfg.train.rotate > 0


def augment_batches(stream, cfg):
    """Map a batched stream of (float32 [B, H, W, 1], labels) to randomly shifted (up to `translate` of each side,
    uniform) and rotated (up to `rotate` degrees about the centre) images, bilinear, zeros outside."""
    import tensorflow as tf

    t = cfg.train
    seed = tf.constant(t.seed, tf.int64)

    def one(i, batch):
        x, y = batch
        n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        draws = tf.random.stateless_uniform([n, 3], seed=tf.stack([seed, i]), minval=-1.0, maxval=1.0)
        theta = draws[:, 0] * (t.rotate * math.pi / 180.0)
        tx = draws[:, 1] * t.translate * tf.cast(w, tf.float32)
        ty = draws[:, 2] * t.translate * tf.cast(h, tf.float32)
        cx, cy = (tf.cast(w, tf.float32) - 1) / 2, (tf.cast(h, tf.float32) - 1) / 2
        c, s = tf.cos(theta), tf.sin(theta)
        # output pixel -> input pixel: the inverse of "rotate about the centre, then shift"
        a2 = cx - c * (cx + tx) - s * (cy + ty)
        b2 = cy + s * (cx + tx) - c * (cy + ty)
        zeros = tf.zeros_like(c)
        transforms = tf.stack([c, s, a2, -s, c, b2, zeros, zeros], axis=1)
        out = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transforms, output_shape=tf.stack([h, w]),
                                                    fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
        return out, y

    return stream.enumerate().map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
