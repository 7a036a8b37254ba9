"""Exact nearest-neighbour and pairwise distances, and image digests."""
import numpy as np
import pytest

from pipeline.evaluation.distances import digests, mean_pairwise_distance, nearest_neighbours
from vae_model.errors import DataError


def _brute(qry, ref):
    return np.sqrt(((qry.reshape(len(qry), 1, -1).astype(np.int64) - ref.reshape(1, len(ref), -1)) ** 2).sum(-1))


def test_nearest_neighbours_equal_brute_force_numpy():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (300, 7, 5), dtype=np.uint8)
    qry = rng.integers(0, 256, (70, 7, 5), dtype=np.uint8)
    qry[:5] = ref[[3, 299, 150, 0, 3]]  # exact copies
    brute = _brute(qry, ref)
    for chunk_q, chunk_r in ((1024, 8192), (16, 64), (1, 7)):  # chunking must not change anything
        d, j = nearest_neighbours(qry, ref, chunk_q=chunk_q, chunk_r=chunk_r)
        np.testing.assert_array_equal(d, brute.min(1))
        np.testing.assert_array_equal(j, brute.argmin(1))
    assert (d[:5] == 0).all() and list(j[:5]) == [3, 299, 150, 0, 3]


def test_ties_go_to_the_lowest_reference_index_whatever_the_chunks():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (40, 3, 3), dtype=np.uint8)
    ref[[5, 17, 33]] = ref[5]  # the same image three times, in different reference chunks below
    for chunk_r in (40, 8, 1):
        d, j = nearest_neighbours(ref[[33, 17]], ref, chunk_q=1, chunk_r=chunk_r)
        assert list(j) == [5, 5] and list(d) == [0.0, 0.0]


def test_distances_are_exact_for_bright_images_where_float32_would_round():
    # all-255 images: ||a||^2 = 784 * 65025 = 5.1e7 > 2^24, where float32 matrix arithmetic loses units
    a = np.full((2, 28, 28), 255, np.uint8)
    b = a.copy()
    b[1, 0, 0] = 254  # squared distance exactly 509 from a[0]
    d, _ = nearest_neighbours(a[:1], b[1:])
    assert d[0] == 1.0
    d, _ = nearest_neighbours(a[:1], b)
    assert d[0] == 0.0


def test_an_empty_reference_set_is_a_data_error():
    with pytest.raises(DataError, match="empty"):
        nearest_neighbours(np.zeros((2, 3, 3), np.uint8), np.zeros((0, 3, 3), np.uint8))


def test_mean_pairwise_distance_equals_brute_force():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    f = x.reshape(40, -1).astype(np.float64)
    brute = [np.linalg.norm(f[i] - f[j]) for i in range(40) for j in range(i + 1, 40)]
    assert mean_pairwise_distance(x) == pytest.approx(np.mean(brute), rel=1e-12)
    assert mean_pairwise_distance(x[:1]) is None


def test_digests_are_equal_exactly_when_the_pixels_are():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4, 5, 5), dtype=np.uint8)
    x[2] = x[0]
    y = x.copy()
    y[3, 4, 4] ^= 1  # one bit of one pixel
    dx, dy = digests(x), digests(y)
    assert len(dx) == 4 and len(set(dx)) == 3 and dx[0] == dx[2]
    assert dx[:3] == dy[:3] and dx[3] != dy[3]
    assert digests(x[:, ::-1])[1] == digests(np.ascontiguousarray(x[:, ::-1]))[1]  # views hash like copies
