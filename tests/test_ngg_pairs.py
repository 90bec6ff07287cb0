"""Pair-index arithmetic, the keyed column shuffle and the counter-based Gaussian numbers."""
from __future__ import annotations

import numpy as np
import pytest

from models.ngg.pairs import (
    FeistelPermutation,
    counter_normal,
    derive_key,
    n_pairs,
    pair_from_index,
    pair_index,
)


@pytest.mark.parametrize("p", list(range(2, 41)) + [97, 128, 257])
def test_round_trip_exhaustive_small_p(p):
    i, j = np.triu_indices(p, k=1)  # row-major order of the upper triangle
    k = pair_index(i, j, p)
    assert k.dtype == np.int64
    np.testing.assert_array_equal(k, np.arange(n_pairs(p)))
    i2, j2 = pair_from_index(np.arange(n_pairs(p)), p)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(j2, j)


def test_closed_form_matches_definition():
    p = 11
    for i in range(p):
        for j in range(i + 1, p):
            assert pair_index(i, j, p) == i * p - i * (i + 1) // 2 + j - i - 1


@pytest.mark.parametrize("p", [346_000, 358_499, 400_000])
def test_extremes_large_p(p):
    N = n_pairs(p)
    assert N == p * (p - 1) // 2 and N > 2**35
    rows = np.array([0, 1, 2, 3, p // 3, p // 2, p - 4, p - 3, p - 2], dtype=np.int64)
    # first and last pair of each row, and the pairs either side of every row boundary
    first = pair_index(rows, rows + 1, p)
    last = pair_index(rows, np.full_like(rows, p - 1), p)
    np.testing.assert_array_equal(last[:-1] + 1, pair_index(rows[:-1] + 1, rows[:-1] + 2, p))
    assert first[0] == 0 and last[-1] == N - 1
    ks = np.unique(np.concatenate([first, last, first - 1, last + 1, [0, 1, N - 2, N - 1]]))
    ks = ks[(ks >= 0) & (ks < N)]
    i, j = pair_from_index(ks, p)
    assert np.all((0 <= i) & (i < j) & (j < p))
    np.testing.assert_array_equal(pair_index(i, j, p), ks)
    i, j = pair_from_index(first, p)
    np.testing.assert_array_equal(i, rows)
    np.testing.assert_array_equal(j, rows + 1)
    i, j = pair_from_index(last, p)
    np.testing.assert_array_equal(i, rows)
    np.testing.assert_array_equal(j, np.full_like(rows, p - 1))


def test_random_round_trip_large_p():
    p = 400_000
    rng = np.random.default_rng(0)
    k = rng.integers(0, n_pairs(p), size=500_000, dtype=np.int64)
    i, j = pair_from_index(k, p)
    assert np.all((0 <= i) & (i < j) & (j < p))
    np.testing.assert_array_equal(pair_index(i, j, p), k)
    # and from pairs: random (i, j)
    a = rng.integers(0, p, size=200_000)
    b = rng.integers(0, p, size=200_000)
    keep = a != b
    i, j = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    i2, j2 = pair_from_index(pair_index(i, j, p), p)
    np.testing.assert_array_equal(i2, i)
    np.testing.assert_array_equal(j2, j)


def test_shapes_and_errors():
    k = np.arange(12).reshape(3, 4)
    i, j = pair_from_index(k, 10)
    assert i.shape == (3, 4) and j.shape == (3, 4)
    with pytest.raises(ValueError):
        pair_index([3], [3], 10)
    with pytest.raises(ValueError):
        pair_index([0], [10], 10)
    with pytest.raises(ValueError):
        pair_from_index([n_pairs(10)], 10)
    with pytest.raises(ValueError):
        pair_from_index([-1], 10)
    with pytest.raises(ValueError):
        pair_from_index([0], 1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 1000, 4097, 65_537])
def test_feistel_is_a_bijection(n):
    perm = FeistelPermutation(n, key=derive_key(7, n))
    v = perm(np.arange(n))
    np.testing.assert_array_equal(np.sort(v), np.arange(n))


def test_feistel_keyed_deterministic_and_mixing():
    n = 100_000
    a = FeistelPermutation(n, key=1)(np.arange(n))
    b = FeistelPermutation(n, key=1)(np.arange(n))
    c = FeistelPermutation(n, key=2)(np.arange(n))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.01
    # element-wise evaluation equals evaluation of the whole range (batching does not matter)
    np.testing.assert_array_equal(FeistelPermutation(n, key=1)(np.arange(500, 900)), a[500:900])
    # well mixed: position and image nearly uncorrelated, pieces of 1000 draw from the whole range
    assert abs(np.corrcoef(np.arange(n), a)[0, 1]) < 0.02
    piece = a[:1000]
    assert piece.min() < n * 0.01 and piece.max() > n * 0.99
    counts = np.bincount(piece // (n // 10), minlength=10)
    assert counts.min() > 60


def test_counter_normal_distribution_and_batch_independence():
    z = counter_normal(derive_key(3), 0, 1_000_000)
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005
    kurt = np.mean(z**4)
    assert abs(kurt - 3) < 0.05
    assert abs(np.mean(z[:-1] * z[1:])) < 0.005  # neighbours (cos/sin of one hash) uncorrelated
    for start, count in [(37, 53), (38, 1), (1, 2), (999_990, 10)]:
        np.testing.assert_array_equal(counter_normal(derive_key(3), start, count), z[start:start + count])
    f32 = counter_normal(derive_key(3), 10, 100, dtype=np.float32)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, z[10:110], rtol=1e-6)
    assert not np.allclose(counter_normal(derive_key(4), 0, 100), z[:100])
