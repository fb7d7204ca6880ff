"""Splitting a training set into disjoint worker shards.

In SNEP (Hasenclever et al., "Distributed Bayesian Learning with Stochastic
Natural Gradient Expectation Propagation and the Posterior Server", JMLR 18
(2017), section 2) the data are split into ``n`` disjoint shards ``D_1..D_n``, one
per worker, and worker ``i`` approximates the likelihood of its shard by its site.
This module makes those splits:

- :func:`shard_iid`: a uniformly random split into near-equal shards (the
  paper's setting);
- :func:`shard_dirichlet`: a label-skewed, non-IID split in which the class
  proportions of every shard are drawn from a symmetric Dirichlet distribution
  (the common benchmark of federated learning, e.g. Hsu, Qi and Brown 2019); a
  small concentration ``alpha`` gives shards dominated by few classes.

All randomness comes from ``numpy.random.default_rng(seed)``, so the same seed
gives the same shards. Every shard is an int64 array of row indices into the
training set, sorted in increasing order (so gathering a shard reads memory
forward; the order of examples within a shard carries no information, since the
minibatch stream shuffles them anyway).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from snep.errors import DataError

__all__ = ["SHARDING_METHODS", "make_shards", "shard_dirichlet", "shard_iid"]

#: Methods understood by :func:`make_shards`.
SHARDING_METHODS: tuple[str, ...] = ("iid", "dirichlet")

_MAX_TRIES = 100


def _check_int(value: object, what: str, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in ``[lo, hi]``, else DataError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what} is {value!r}; expected an integer >= {lo}.")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        expected = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise DataError(f"{what} is {v}; expected {expected}.")
    return v


def shard_iid(n_examples: int, n_shards: int, seed: int) -> list[np.ndarray]:
    """Split ``range(n_examples)`` uniformly at random into near-equal disjoint shards.

    Parameters
    ----------
    n_examples : int
        Number of training examples ``N >= 1``.
    n_shards : int
        Number of shards, in ``[1, N]``.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    list of numpy.ndarray
        ``n_shards`` int64 index arrays, disjoint, covering ``0..N-1``, each sorted
        in increasing order; their sizes differ by at most one (the first
        ``N mod n_shards`` shards hold one more).

    Raises
    ------
    snep.errors.DataError
        If ``n_examples`` or ``n_shards`` is out of range.
    """
    n = _check_int(n_examples, "shard_iid: n_examples", 1)
    k = _check_int(n_shards, "shard_iid: n_shards", 1, n)
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64, copy=False)
    return [np.sort(part) for part in np.array_split(perm, k)]


def shard_dirichlet(
    labels: np.ndarray, n_shards: int, alpha: float, seed: int, min_size: int = 1
) -> list[np.ndarray]:
    """Split examples into label-skewed (non-IID) disjoint shards.

    For every class ``c`` the shard proportions ``p_c ~ Dirichlet(alpha * ones(n_shards))``
    are drawn, the class's indices are shuffled and cut into consecutive pieces of
    sizes ``floor(N_c * cumsum(p_c))`` differences, piece ``j`` going to shard ``j``.
    If some shard ends up with fewer than ``min_size`` examples, the whole split is
    drawn again from the next draws of the same generator (so the result is still a
    deterministic function of ``seed``), at most 100 times.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer class labels, shape ``(N,)``.
    n_shards : int
        Number of shards, in ``[1, N]``.
    alpha : float
        Dirichlet concentration ``> 0``: small values (0.05) give shards dominated by
        one or a few classes, large values (1000) give nearly the global label
        histogram in every shard.
    seed : int
        Seed of ``numpy.random.default_rng``.
    min_size : int, default 1
        Minimum number of examples per shard; ``min_size * n_shards <= N``.

    Returns
    -------
    list of numpy.ndarray
        ``n_shards`` int64 index arrays, disjoint, covering ``0..N-1``, each sorted.

    Raises
    ------
    snep.errors.DataError
        If an argument is out of range, or no draw within 100 tries gives every shard
        ``min_size`` examples (increase ``alpha`` or reduce ``n_shards``/``min_size``).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iub"):
        raise DataError(
            f"shard_dirichlet: labels have shape {y.shape} and dtype {y.dtype}; expected a "
            "1-D array of integer class labels."
        )
    n = _check_int(y.shape[0], "shard_dirichlet: number of labels", 1)
    k = _check_int(n_shards, "shard_dirichlet: n_shards", 1, n)
    a = _check_alpha(alpha, "shard_dirichlet")
    m = _check_int(min_size, "shard_dirichlet: min_size", 0)
    if m * k > n:
        raise DataError(
            f"shard_dirichlet: min_size {m} times n_shards {k} is {m * k}, more than the "
            f"{n} examples; expected min_size * n_shards <= {n}."
        )
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(y, return_inverse=True)
    counts = np.bincount(inverse)
    by_class = np.split(np.argsort(inverse, kind="stable").astype(np.int64), np.cumsum(counts)[:-1])
    conc = np.full(k, a)
    smallest = 0
    for _ in range(_MAX_TRIES):
        pieces: list[list[np.ndarray]] = [[] for _ in range(k)]
        for members in by_class:
            shuffled = rng.permutation(members)
            p = rng.dirichlet(conc)
            if not np.all(np.isfinite(p)):  # pragma: no cover - guard for extreme alpha
                p = np.full(k, 1.0 / k)
            cuts = np.floor(np.cumsum(p)[:-1] * len(members)).astype(np.int64)
            cuts = np.clip(cuts, 0, len(members))
            for j, part in enumerate(np.split(shuffled, cuts)):
                pieces[j].append(part)
        shards = [np.sort(np.concatenate(parts)) for parts in pieces]
        smallest = min(len(s) for s in shards)
        if smallest >= m:
            return shards
    raise DataError(
        f"shard_dirichlet: after {_MAX_TRIES} draws with alpha={a:g} some of the {k} shards "
        f"still had fewer than min_size={m} examples (smallest in the last draw: "
        f"{smallest}). Increase alpha, or reduce n_shards or min_size."
    )


def _check_alpha(alpha: object, where: str) -> float:
    """Return ``alpha`` as float if it is a finite number > 0, else DataError."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise DataError(f"{where}: alpha is {alpha!r}; expected a finite number > 0.")
    a = float(alpha)
    if not (math.isfinite(a) and a > 0.0):
        raise DataError(f"{where}: alpha is {a!r}; expected a finite number > 0.")
    return a


def make_shards(
    y: np.ndarray, n_shards: int, method: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Split a training set into ``n_shards`` disjoint worker shards.

    Parameters
    ----------
    y : numpy.ndarray
        Training labels, shape ``(N,)`` (only their number is used by "iid").
    n_shards : int
        Number of shards (workers), in ``[1, N]``.
    method : {"iid", "dirichlet"}
        :func:`shard_iid` or :func:`shard_dirichlet`.
    alpha : float, default 0.5
        Dirichlet concentration ``> 0`` (used by "dirichlet", validated always).
    seed : int, default 0
        Seed; the same seed gives the same shards.

    Returns
    -------
    list of numpy.ndarray
        Sorted int64 index arrays, disjoint and covering ``0..N-1``.

    Raises
    ------
    snep.errors.DataError
        If ``method`` is unknown or ``n_shards``/``alpha`` are out of range; the
        message names the value and the allowed range.
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise DataError(f"make_shards: y has shape {labels.shape}; expected a 1-D label array.")
    n = labels.shape[0]
    if n < 1:
        raise DataError("make_shards: y is empty; expected at least one training example.")
    k = _check_int(n_shards, "make_shards: n_shards", 1, n)
    a = _check_alpha(alpha, "make_shards")
    if method == "iid":
        return shard_iid(n, k, seed)
    if method == "dirichlet":
        return shard_dirichlet(labels, k, a, seed)
    raise DataError(
        f"make_shards: method is {method!r}; expected one of "
        f"{', '.join(repr(m) for m in SHARDING_METHODS)}."
    )
