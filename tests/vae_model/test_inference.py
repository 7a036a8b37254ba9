"""BatchDecoder's in-graph quantization and non-finite count against their plain definitions."""
import numpy as np
import pytest
import tensorflow as tf

from vae_model.inference import _count_nonfinite_fast, _quantize


def _reference(x):
    """The definition in the README's Output table: round half to even of clip(x, 0, 1) * 255, as float32 math."""
    return np.rint(np.clip(x, np.float32(0), np.float32(1)) * np.float32(255)).astype(np.uint8)


def test_quantize_matches_definition_at_ties_edges_and_out_of_range():
    k = np.arange(256, dtype=np.float32)
    ties = ((k + 0.5) / 255).astype(np.float32)
    x = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, 1), k / 255,
                        np.linspace(-0.5, 1.5, 400_001, dtype=np.float32),
                        np.random.default_rng(0).random(400_000, dtype=np.float32),
                        np.float32([-np.inf, np.inf, -0.0, 3e38])])
    # x * 255 lands exactly on k + 0.5 for some of these: the rounding mode is what the test is about
    assert np.any(np.modf(ties * np.float32(255))[0] == 0.5)
    got = _quantize(tf.constant(x)).numpy()
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _reference(x))


@pytest.mark.parametrize("values, any_bad", [
    ([0.5, 0.25], False),
    ([np.nan, 0.5, np.nan], True),
    ([np.inf, -np.inf, 1.0], True),
    ([3e38, 3e38, 3e38], False),        # finite pixels whose sum overflows: counted exactly, not guessed
])
def test_nonfinite_count_is_exact(values, any_bad):
    x = np.resize(np.float32(values), (4, 7, 7))
    exact = int(np.sum(~np.isfinite(x)))
    assert (exact > 0) == any_bad
    assert int(_count_nonfinite_fast(tf.constant(x))) == exact


def test_a_row_decodes_to_the_same_bytes_whatever_the_call_size():
    """One full batch, a short call (padded) and several chunks give every row the same bytes, as a writable uint8
    array of the image shape, with the non-finite count summed over the chunks."""
    import keras

    from vae_model.inference import BatchDecoder

    keras.utils.set_random_seed(0)
    decoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4 * 5, activation="sigmoid"),
                                keras.layers.Reshape((4, 5, 1))])
    dec = BatchDecoder(decoder, 8)
    z = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    full, bad_full = dec(z[:8])
    short, _ = dec(z[:5])
    chunks, bad = dec(z)
    assert full.shape == (8, 4, 5) and full.dtype == np.uint8 and full.flags.writeable
    assert np.array_equal(short, full[:5]) and np.array_equal(chunks[:8], full)
    assert chunks.shape == (20, 4, 5) and (bad_full, bad) == (0, 0)
    again, _ = dec(z[8:16])
    assert np.array_equal(again, chunks[8:16])
