"""The numba scalar ``maximum``, ``minimum`` and ``clip`` equal numpy's to the bit,
signed zeros, NaNs and infinities included (the host loops that use them must agree
bitwise with the array expressions a device runs)."""

from __future__ import annotations

import itertools

import numba
import numpy as np

from snep.maths.scalar_ops import clip, maximum, minimum

VALUES = [-0.0, 0.0, 1.0, -1.0, 2.5, np.inf, -np.inf, np.nan]


@numba.njit
def _pairwise(xs, ys, out):
    for i in range(xs.size):
        out[0, i] = maximum(xs[i], ys[i])
        out[1, i] = minimum(xs[i], ys[i])


@numba.njit
def _clipped(xs, los, his, out):
    for i in range(xs.size):
        out[i] = clip(xs[i], los[i], his[i])


def _same(got, want):
    """Bitwise, with every NaN equal to every NaN."""
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.int64), want[~nan].view(np.int64))


def test_maximum_and_minimum_are_numpys():
    xs, ys = (np.array(v) for v in zip(*itertools.product(VALUES, VALUES), strict=True))
    out = np.empty((2, xs.size))
    _pairwise(xs, ys, out)
    _same(out[0], np.maximum(xs, ys))
    _same(out[1], np.minimum(xs, ys))
    # the tie numpy settles by its second argument, where Python's max keeps the first
    tie = (xs == 0) & (ys == 0) & ~np.signbit(xs) & np.signbit(ys)  # maximum(0.0, -0.0)
    assert tie.sum() == 1 and np.signbit(out[0][tie]).all()


def test_clip_is_numpys():
    triples = [t for t in itertools.product(VALUES, VALUES, VALUES) if not np.isnan(t[1:]).any()]
    xs, los, his = (np.array(v) for v in zip(*triples, strict=True))
    out = np.empty(xs.size)
    _clipped(xs, los, his, out)
    want = np.array([np.clip(np.array([x]), lo, hi)[0] for x, lo, hi in triples])
    _same(out, want)
