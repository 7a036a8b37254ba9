"""Random shifts and rotations of the reference CNN's training batches (train.translate / train.rotate)."""
import json

import numpy as np
import pytest

from vae_model.classifier.augmentation import augment_batches, augments
from vae_model.classifier.config import ClassifierConfig


def _cfg(translate=0.0, rotate=0.0, seed=0):
    cfg = ClassifierConfig()
    cfg.train.translate, cfg.train.rotate, cfg.train.seed = translate, rotate, seed
    return cfg


def _stream(images, batch=4):
    import tensorflow as tf

    x = images[..., None].astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(len(x)))).batch(batch)


def _run(images, cfg, batch=4):
    out = [(x.numpy()[..., 0], y.numpy()) for x, y in augment_batches(_stream(images, batch), cfg)]
    return np.concatenate([x for x, _ in out]), np.concatenate([y for _, y in out])


def _dots(n=8, side=28, at=(14, 14)):
    img = np.zeros((n, side, side), np.float32)
    img[:, at[0], at[1]] = 255.0
    return img


def test_the_same_seed_gives_the_same_images_and_another_seed_others():
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28)).astype(np.float32)
    a, ya = _run(images, _cfg(0.1, 10.0, seed=3))
    b, yb = _run(images, _cfg(0.1, 10.0, seed=3))
    c, _ = _run(images, _cfg(0.1, 10.0, seed=4))
    assert np.array_equal(a, b) and np.array_equal(ya, yb) and np.array_equal(ya, np.arange(12))
    assert not np.array_equal(a, c) and not np.array_equal(a, images)
    # each batch draws its own transforms: the same image in two batches moves differently
    twice, _ = _run(np.concatenate([images[:4], images[:4]]), _cfg(0.1, 10.0, seed=3))
    assert not np.array_equal(twice[:4], twice[4:])


def test_zero_ranges_leave_the_images_alone_and_switch_augmentation_off():
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.float32)
    assert not augments(_cfg()) and augments(_cfg(translate=0.05)) and augments(_cfg(rotate=1.0))
    out, _ = _run(images, _cfg())
    np.testing.assert_array_equal(out, images)


def test_shifts_stay_within_translate_and_keep_the_ink():
    out, _ = _run(_dots(64), _cfg(translate=0.1, seed=2), batch=16)
    mass = out.sum(axis=(1, 2))
    np.testing.assert_allclose(mass, 255.0, rtol=1e-4)  # bilinear shifts of an interior dot keep its ink
    rows, cols = np.indices((28, 28))
    cy = (out * rows).sum(axis=(1, 2)) / mass - 14
    cx = (out * cols).sum(axis=(1, 2)) / mass - 14
    assert np.abs(cx).max() <= 2.8 + 1e-4 and np.abs(cy).max() <= 2.8 + 1e-4  # 0.1 x 28 pixels
    assert np.abs(cx).max() > 1.5 and np.abs(cy).max() > 1.5  # and they do move, both ways
    assert (cx > 0.5).any() and (cx < -0.5).any()


def test_rotations_turn_about_the_centre_by_at_most_rotate_degrees():
    # a dot 10 px right of the centre (13.5, 13.5): rotation keeps its distance, the angle stays within 15 degrees
    out, _ = _run(_dots(64, at=(13, 23)) + _dots(64, at=(14, 23)), _cfg(rotate=15.0, seed=5), batch=16)
    rows, cols = np.indices((28, 28))
    mass = out.sum(axis=(1, 2))
    cy = (out * rows).sum(axis=(1, 2)) / mass - 13.5
    cx = (out * cols).sum(axis=(1, 2)) / mass - 13.5
    np.testing.assert_allclose(np.hypot(cx, cy), 9.5, atol=0.35)
    angle = np.degrees(np.arctan2(cy, cx))
    assert np.abs(angle).max() <= 15.5 and np.abs(angle).max() > 8


def test_training_records_the_ranges_and_is_repeatable(tmp_path):
    from vae_model.classifier import train_classifier

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 28, 28)).astype(np.uint8), np.arange(64) % 10
    cfg = ClassifierConfig().replace_train(epochs=1, max_steps=2, batch_size=16, translate=0.1, rotate=10.0)
    from vae_model.classifier import load_classifier

    plain = cfg.replace_train(translate=0.0, rotate=0.0)
    for name, c in (("a", cfg), ("b", cfg), ("plain", plain)):
        train_classifier((x, y), str(tmp_path / name), c)
    rec = json.loads((tmp_path / "a" / "classifier.json").read_text())
    assert rec["config"]["train"]["translate"] == 0.1 and rec["config"]["train"]["rotate"] == 10.0
    w = {name: load_classifier(str(tmp_path / name)).model.get_weights() for name in ("a", "b", "plain")}
    assert all(np.array_equal(p, q) for p, q in zip(w["a"], w["b"]))  # same seed, same shifted batches
    assert not all(np.array_equal(p, q) for p, q in zip(w["a"], w["plain"]))  # the shifts reached training


@pytest.mark.parametrize("key,value", [("translate", 0.5), ("translate", -0.1), ("rotate", 181.0),
                                       ("rotate", float("nan"))])
def test_out_of_range_values_are_config_errors(key, value):
    from vae_model.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{key} must be in"):
        ClassifierConfig().replace_train(**{key: value})
