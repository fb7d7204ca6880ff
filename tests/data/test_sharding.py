"""Tests of snep.data.sharding: disjoint covering shards, determinism and label skew."""

from __future__ import annotations

import math

import numpy as np
import pytest

from snep.data.sharding import make_shards, shard_dirichlet, shard_iid
from snep.errors import DataError


def _assert_partition(shards: list[np.ndarray], n: int) -> None:
    """Shards are sorted int64 arrays, pairwise disjoint and cover 0..n-1."""
    for s in shards:
        assert s.dtype == np.int64 and s.ndim == 1
        assert np.all(np.diff(s) > 0)
    allidx = np.concatenate(shards)
    assert allidx.size == n
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize(("n", "k"), [(1, 1), (10, 1), (10, 3), (10, 10), (1001, 8)])
def test_shard_iid_partition_and_sizes(n, k):
    shards = shard_iid(n, k, seed=5)
    assert len(shards) == k
    _assert_partition(shards, n)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert sorted(sizes, reverse=True) == sizes  # the first n mod k shards hold one more


def test_shard_iid_deterministic_and_random():
    a = shard_iid(500, 4, seed=11)
    b = shard_iid(500, 4, seed=11)
    c = shard_iid(500, 4, seed=12)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # Not a contiguous block split: shard 0 of 500 holds indices from the whole range.
    assert a[0].min() < 50 and a[0].max() > 450


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ((0, 1, 0), ["n_examples", "0", ">= 1"]),
        ((10, 0, 0), ["n_shards", "0", "[1, 10]"]),
        ((10, 11, 0), ["n_shards", "11", "[1, 10]"]),
        ((10, 2.0, 0), ["n_shards", "2.0", "integer"]),
    ],
)
def test_shard_iid_invalid(args, fragments):
    with pytest.raises(DataError) as info:
        shard_iid(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


def _labels(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(n_classes), per_class).astype(np.int32)
    return np.random.default_rng(seed).permutation(y)


@pytest.mark.parametrize("alpha", [0.05, 0.5, 1000.0])
def test_shard_dirichlet_partition_and_determinism(alpha):
    y = _labels(10, 50)
    shards = shard_dirichlet(y, 5, alpha, seed=3)
    assert len(shards) == 5
    _assert_partition(shards, y.size)
    assert min(len(s) for s in shards) >= 1
    again = shard_dirichlet(y, 5, alpha, seed=3)
    for x, z in zip(shards, again, strict=True):
        np.testing.assert_array_equal(x, z)
    other = shard_dirichlet(y, 5, alpha, seed=4)
    assert any(not np.array_equal(x, z) for x, z in zip(shards, other, strict=True))


def test_shard_dirichlet_small_alpha_concentrates_each_class():
    """With alpha = 0.05 each class sits mostly in one shard.

    Statistic: S = mean over classes of the largest share of the class held by one
    shard. Its expectation is E[max_j p_j] for p ~ Dirichlet(0.05 * ones(10)) (about
    0.78, computed here by Monte Carlo), against 1/10 + O(1/sqrt(n_c)) for an IID
    split. The tolerance is 5 standard errors of the mean over the C classes plus the
    rounding of shares to multiples of 1/n_c.
    """
    n_classes, per_class, k, alpha = 50, 40, 10, 0.05
    y = _labels(n_classes, per_class, seed=1)
    shards = shard_dirichlet(y, k, alpha, seed=0)
    _assert_partition(shards, y.size)
    counts = np.stack([np.bincount(y[s], minlength=n_classes) for s in shards])  # (k, C)
    max_share = counts.max(axis=0) / per_class
    draws = np.random.default_rng(12345).dirichlet(np.full(k, alpha), size=100_000).max(axis=1)
    expected, sd = float(draws.mean()), float(draws.std())
    tol = 5 * sd / math.sqrt(n_classes) + 1.0 / per_class + 5 * sd / math.sqrt(draws.size)
    assert abs(max_share.mean() - expected) < tol
    # Far from what an IID split would give.
    assert max_share.mean() > 1.0 / k + 2 * tol
    # Most shards are dominated by few classes: the top 3 classes hold most of a shard.
    top3 = np.sort(counts, axis=1)[:, -3:].sum(axis=1) / counts.sum(axis=1)
    iid_top3 = 3.0 / n_classes
    assert np.median(top3) > iid_top3 + 0.2


def test_shard_dirichlet_large_alpha_is_nearly_uniform():
    """With alpha = 1000 every shard's label histogram is close to n_c / k per class.

    The count of class c in shard j is n_c * p_cj up to rounding (< 1), with
    p_cj ~ Beta(alpha, (k-1) alpha), standard deviation
    sqrt(alpha (k-1) alpha / ((k alpha)^2 (k alpha + 1))). Every one of the k*C cells
    must be within 6 standard deviations plus 1 of n_c / k (a union bound over 100
    cells leaves a failure probability below 1e-6).
    """
    n_classes, per_class, k, alpha = 10, 200, 10, 1000.0
    y = _labels(n_classes, per_class, seed=2)
    shards = shard_dirichlet(y, k, alpha, seed=0)
    _assert_partition(shards, y.size)
    counts = np.stack([np.bincount(y[s], minlength=n_classes) for s in shards])
    a0 = k * alpha
    sd_p = math.sqrt(alpha * (a0 - alpha) / (a0**2 * (a0 + 1)))
    tol = 6 * per_class * sd_p + 1.0
    assert np.all(np.abs(counts - per_class / k) <= tol)
    # The shard sizes are then close to N / k as well.
    sizes = np.array([len(s) for s in shards])
    assert np.all(np.abs(sizes - y.size / k) <= n_classes * tol)


def test_shard_dirichlet_min_size_resamples_deterministically():
    y = _labels(10, 100, seed=3)
    shards = shard_dirichlet(y, 4, 0.1, seed=7, min_size=150)
    _assert_partition(shards, y.size)
    assert min(len(s) for s in shards) >= 150
    again = shard_dirichlet(y, 4, 0.1, seed=7, min_size=150)
    for x, z in zip(shards, again, strict=True):
        np.testing.assert_array_equal(x, z)


def test_shard_dirichlet_gives_up_after_100_tries():
    y = _labels(2, 50)
    with pytest.raises(DataError) as info:
        shard_dirichlet(y, 10, 0.001, seed=0, min_size=1)
    msg = str(info.value)
    assert "100 draws" in msg and "alpha=0.001" in msg and "Increase alpha" in msg


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"n_shards": 0}, ["n_shards", "0"]),
        ({"n_shards": 101}, ["n_shards", "101", "[1, 100]"]),
        ({"alpha": 0.0}, ["alpha", "0.0", "> 0"]),
        ({"alpha": math.inf}, ["alpha", "inf"]),
        ({"min_size": 30}, ["min_size 30", "n_shards 4", "120"]),
        ({"min_size": -1}, ["min_size", "-1"]),
    ],
)
def test_shard_dirichlet_invalid(kwargs, fragments):
    args = {"labels": _labels(4, 25), "n_shards": 4, "alpha": 0.5, "seed": 0} | kwargs
    with pytest.raises(DataError) as info:
        shard_dirichlet(**args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_shard_dirichlet_rejects_non_integer_labels():
    with pytest.raises(DataError, match=r"float64"):
        shard_dirichlet(np.zeros(10), 2, 1.0, seed=0)


def test_make_shards_dispatch():
    y = _labels(5, 20)
    iid = make_shards(y, 4, seed=9)
    for x, z in zip(iid, shard_iid(100, 4, 9), strict=True):
        np.testing.assert_array_equal(x, z)
    dirich = make_shards(y, 4, method="dirichlet", alpha=0.3, seed=9)
    for x, z in zip(dirich, shard_dirichlet(y, 4, 0.3, 9), strict=True):
        np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"n_shards": 0}, ["n_shards", "0", "[1, 100]"]),
        ({"n_shards": 101}, ["n_shards", "101", "[1, 100]"]),
        ({"n_shards": True}, ["n_shards", "True"]),
        ({"alpha": -1.0}, ["alpha", "-1.0", "> 0"]),
        ({"alpha": "big"}, ["alpha", "'big'"]),
        ({"method": "shuffle"}, ["method", "'shuffle'", "'iid'", "'dirichlet'"]),
    ],
)
def test_make_shards_invalid(kwargs, fragments):
    args = {"y": _labels(5, 20), "n_shards": 4} | kwargs
    with pytest.raises(DataError) as info:
        make_shards(**args)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_make_shards_rejects_bad_label_arrays():
    with pytest.raises(DataError, match=r"empty"):
        make_shards(np.zeros(0, dtype=np.int32), 1)
    with pytest.raises(DataError, match=r"\(2, 5\)"):
        make_shards(np.zeros((2, 5), dtype=np.int32), 1)
