"""Exact L2 distances between uint8 images, and image digests for exact-duplicate counting.

Squared distances are ||a||^2 + ||b||^2 - 2ab in float64: for integer pixels every term is an integer below 2^53,
so they are exact (a copy is at distance exactly 0, where float32 would round). The work is done in blocks of at
most `CHUNK_Q` queries x `CHUNK_R` references, so memory stays bounded whatever the dataset size.
"""
from __future__ import annotations

import hashlib

import numpy as np

from vae_model.errors import DataError

CHUNK_Q, CHUNK_R = 1024, 8192


def _flat64(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1).astype(np.float64)


def _sq_norms(flat: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", flat, flat)


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray, chunk_q: int = CHUNK_Q,
                       chunk_r: int = CHUNK_R) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 nearest neighbour of each query among `reference` (uint8 images, any shape (N, ...)).

    Returns (distance float64 (q,), index int64 (q,)) in the images' own units (0..255 pixels); ties go to the
    lowest reference index.
    """
    q, r = len(queries), len(reference)
    if r == 0:
        raise DataError("the real training set is empty; nearest-neighbour distances need real images")
    best = np.full(q, np.inf)
    arg = np.zeros(q, np.int64)
    queries = np.asarray(queries).reshape(q, -1)
    reference = np.asarray(reference).reshape(r, -1)
    for rs in range(0, r, chunk_r):
        ref = _flat64(reference[rs:rs + chunk_r])
        ref_sq = _sq_norms(ref)
        for qs in range(0, q, chunk_q):
            qry = _flat64(queries[qs:qs + chunk_q])
            d2 = _sq_norms(qry)[:, None] + ref_sq[None, :] - 2.0 * (qry @ ref.T)
            j = d2.argmin(axis=1)
            m = d2[np.arange(len(j)), j]
            better = m < best[qs:qs + len(j)]  # strict: an equal distance in a later block keeps the lower index
            best[qs:qs + len(j)][better] = m[better]
            arg[qs:qs + len(j)][better] = j[better] + rs
    return np.sqrt(np.maximum(best, 0.0)), arg


def mean_pairwise_distance(images: np.ndarray) -> float | None:
    """Mean L2 distance over all unordered pairs (exact float64, pixel units); None for fewer than 2 images."""
    n = len(images)
    if n < 2:
        return None
    flat = _flat64(images)
    sq = _sq_norms(flat)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (flat @ flat.T)
    iu = np.triu_indices(n, 1)
    return float(np.sqrt(np.maximum(d2[iu], 0.0)).mean())


def digests(images: np.ndarray) -> list[bytes]:
    """One 16-byte hash per image: equal digests mean equal pixels, so duplicates are counted without keeping
    every image in memory."""
    flat = np.ascontiguousarray(np.asarray(images).reshape(len(images), -1))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
