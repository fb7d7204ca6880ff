"""Split R-hat, bulk ESS and ChainTrace against sampling theory and an independent R-hat.

Every tolerance below is derived from the sample size (comments give the
argument); the seeds are fixed, and each statistical check was run locally
over 20 seeds with margin to spare.  Independent replicates ride along as
trailing "statistic" dimensions, so one call checks many at once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats
from scipy.signal import lfilter

from snep.diagnostics import (
    RHAT_WARN,
    ChainTrace,
    _average_ranks,
    _normal_quantile,
    effective_sample_size,
    split_rhat,
)


def classic_split_rhat(draws: np.ndarray) -> np.ndarray:
    """BDA3 split R-hat on the raw draws (no ranks, no folding), written independently."""
    half = draws.shape[0] // 2
    chains = np.concatenate([draws[:half], draws[draws.shape[0] - half :]], axis=1)
    n = chains.shape[0]
    w = chains.var(axis=0, ddof=1).mean(axis=0)
    b = n * chains.mean(axis=0).var(axis=0, ddof=1)
    return np.sqrt(((n - 1) / n * w + b / n) / w)


def ar1(rng: np.random.Generator, rho: float, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) chains with unit marginal variance along axis 0."""
    noise = rng.normal(size=(n, *shape))
    start = rng.normal(size=(1, *shape))  # the draw before the first: already stationary
    return lfilter([math.sqrt(1 - rho**2)], [1.0, -rho], noise, axis=0, zi=rho * start)[0]


# ------------------------------------------------------------------ numerical building blocks


def test_normal_quantile_matches_scipy():
    p = np.concatenate(
        [
            np.logspace(-300, -10, 200),
            np.linspace(1e-10, 1 - 1e-10, 20001),
            1 - np.logspace(-10, -16),
        ]
    )
    want = special.ndtri(p)
    assert np.max(np.abs(_normal_quantile(p) - want) / np.maximum(1.0, np.abs(want))) < 1e-13


def test_average_ranks_match_scipy_with_ties():
    x = np.random.default_rng(0).integers(0, 6, size=(40, 5)).astype(float)
    np.testing.assert_array_equal(_average_ranks(x), stats.rankdata(x, axis=0))


# ------------------------------------------------------------------ R-hat


def test_rhat_iid_normal_is_near_one():
    n, c, reps = 1000, 4, 50
    draws = np.random.default_rng(1).normal(size=(n, c, reps))
    rhat = split_rhat(draws)
    m, h = 2 * c, n // 2  # split chains and draws per split chain
    # R^2 = (h-1)/h + B/(h W) with B >= 0: a deterministic lower bound sqrt(1 - 1/h).
    # For iid (rank-normalised, hence ~normal) draws h*var(chain means)/W ~ F(m-1, m(h-1)),
    # and R - 1 <= (R^2 - 1)/2 = (F - 1)/(2h): with F at its 1e-6 upper quantile each of
    # bulk and tail exceeds the bound with probability ~1e-6 (x1.25 for the normal
    # approximation of the ranks).  Here the bound is ~5/n, i.e. O(1/n) as it should be.
    f_hi = stats.f.isf(1e-6, m - 1, m * (h - 1))
    assert np.all(rhat >= math.sqrt(1 - 1 / h) - 1e-12)
    assert np.all(rhat - 1 <= 1.25 * (f_hi - 1) / (2 * h))


def test_rhat_detects_shifted_chain():
    n = 4000
    draws = np.random.default_rng(2).normal(size=(n, 2, 3))
    draws[:, 0] += 1.0  # one chain offset by one standard deviation
    # split means (1, 1, 0, 0): R^2 ~ 1 + var(means) = 4/3, R ~ 1.155; the split means carry
    # noise of sd sqrt(2/n), which moves R by ~ sqrt(2/n)/(3 * 1.155) ~ 0.007: 1.1 is > 7 sd
    # away.  (With 4 chains and one of them offset by 1 sd, R ~ sqrt(1 + 0.214) = 1.10: at
    # the threshold itself, so not a check of the detector.)
    rhat = split_rhat(draws)
    assert np.all(rhat > RHAT_WARN)
    assert np.all(np.abs(rhat - math.sqrt(4 / 3)) < 5 * math.sqrt(2 / n) / (3 * 1.155))


def test_tail_rhat_detects_different_scales():
    n = 4000
    draws = np.random.default_rng(3).normal(size=(n, 4, 3))
    draws[:, 0] *= 3.0  # same location, three times the spread
    # the location-only R-hat cannot see it: chain means all agree ...
    assert np.all(classic_split_rhat(draws) < 1.01)
    # ... the folded (tail) one does: ~1.146 with sd ~0.005 (measured over 500 replicates)
    assert np.all(split_rhat(draws) > RHAT_WARN)


@pytest.mark.parametrize("spread", [0.25, 0.5, 1.0])
def test_rhat_agrees_with_classic_split_rhat_on_normal_draws(spread):
    n = 2000
    offsets = spread * np.array([-1.0, -1 / 3, 1 / 3, 1.0])
    draws = np.random.default_rng(4).normal(size=(n, 4, 5)) + offsets[None, :, None]
    classic = classic_split_rhat(draws)
    # Within each chain the draws are normal; the pool is a symmetric normal mixture whose
    # excess kurtosis is -0.02 (spread 0.5) to -0.17 (spread 1), so rank normalisation is
    # an affine map up to a few per cent, and R-hat is affine invariant: allow 5 % of
    # R-1, plus 1/n for the noise of the empirical quantiles.  The folded R-hat is only
    # fourth order in the offsets, so the maximum is the bulk value.
    assert np.all(classic > 1.01)
    assert np.all(np.abs(split_rhat(draws) - classic) <= 0.05 * (classic - 1) + 1 / n)


def test_rhat_constant_chains():
    same = np.full((10, 3, 2), 2.5)
    np.testing.assert_array_equal(split_rhat(same), [1.0, 1.0])
    stuck = np.broadcast_to(np.array([0.0, 1.0, 2.0])[None, :, None], (10, 3, 2))
    np.testing.assert_array_equal(split_rhat(stuck), [np.inf, np.inf])


# ------------------------------------------------------------------ ESS


def test_ess_iid_normal_is_near_total_draws():
    n, c, reps = 1000, 4, 64
    total = n * c
    ess = effective_sample_size(np.random.default_rng(5).normal(size=(n, c, reps))) / total
    # tau - 1 is dominated by 2 * rho_1, of sd 2/sqrt(S), plus the positive pairs that the
    # initial-sequence truncation keeps (sd sqrt(2/S) each); the relative sd of ESS is about
    # 3/sqrt(S) (measured 2.8/sqrt(S)).  Keeping only positive pairs biases tau upwards by
    # ~2 E[max(P, 0)] = 2/sqrt(pi S) at most ~1.5/sqrt(S).  So the mean over the replicates
    # is within 1.5/sqrt(S) + 5 * 3/sqrt(S * reps) of 1 and each one within 8 sd.
    sd = 3 / math.sqrt(total)
    assert abs(ess.mean() - 1) < 1.5 / math.sqrt(total) + 5 * sd / math.sqrt(reps)
    assert np.all(np.abs(ess - 1) < 8 * sd)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_ar1_matches_theory(rho):
    n, c, reps = 20_000, 4, 8
    total = n * c
    want = total * (1 - rho) / (1 + rho)
    ess = effective_sample_size(ar1(np.random.default_rng(6), rho, n, (c, reps))) / want
    # Sokal's variance of a windowed estimate of tau: var(tau_hat)/tau^2 ~ 2(2L+1)/S, with
    # the window L where rho^L sinks into the autocorrelation noise 1/sqrt(S), where the
    # initial positive sequence stops: L = log(S) / (2 log(1/rho)).  That gives 2.1 %
    # (rho = 0.5) and 5.2 % (rho = 0.9) here; measured 1.9 % and 4.8 %.  Each replicate is
    # held to 5 sd (10 % and 26 %) and their mean to 5 sd / sqrt(reps) (3.7 % and 9.2 %).
    window = math.log(total) / (2 * math.log(1 / rho))
    sd = math.sqrt(2 * (2 * window + 1) / total)
    assert np.all(np.abs(ess - 1) < 5 * sd)
    assert abs(ess.mean() - 1) < 5 * sd / math.sqrt(reps)


def test_ess_constant_draws():
    assert effective_sample_size(np.full((10, 3), 1.0)) == pytest.approx(30.0)
    stuck = np.broadcast_to(np.arange(4.0)[None, :], (1000, 4))
    # every split chain constant at its own value: rho_t = 1 at all 500 lags, so
    # tau = -1 + 2 * 250 * 2 = 999 and ESS = 8 * 500 / 999 ~ M/2 = 4
    assert effective_sample_size(stuck) == pytest.approx(4000 / 999)


# ------------------------------------------------------------------ shapes and edge cases


def test_shapes_nan_and_short_draws():
    rng = np.random.default_rng(7)
    draws = rng.normal(size=(50, 3, 2, 4))
    assert split_rhat(draws).shape == (2, 4)
    assert effective_sample_size(draws).shape == (2, 4)
    assert split_rhat(draws[:, :, 0, 0]).shape == ()
    for short in (draws[:3], draws[:0]):
        assert np.all(np.isnan(split_rhat(short)))
        assert np.all(np.isnan(effective_sample_size(short)))
    assert np.all(np.isfinite(split_rhat(draws[:4])))
    assert np.all(np.isfinite(split_rhat(draws[:5])))  # odd length: the middle draw is dropped
    bad = draws.copy()
    bad[7, 1, 1, 2] = np.nan
    bad[3, 0, 0, 0] = np.inf
    rhat, ess = split_rhat(bad), effective_sample_size(bad)
    nonfinite = np.zeros((2, 4), bool)
    nonfinite[1, 2] = nonfinite[0, 0] = True
    assert np.all(np.isnan(rhat[nonfinite])) and np.all(np.isfinite(rhat[~nonfinite]))
    assert np.all(np.isnan(ess[nonfinite])) and np.all(np.isfinite(ess[~nonfinite]))
    np.testing.assert_allclose(rhat[~nonfinite], split_rhat(draws)[~nonfinite])


@pytest.mark.parametrize("func", [split_rhat, effective_sample_size])
def test_bad_draws_raise(func):
    with pytest.raises(ValueError, match=r"expected \(n_draws, n_chains, \.\.\.\)"):
        func(np.zeros(10))
    with pytest.raises(ValueError, match="at least one chain"):
        func(np.zeros((10, 0, 2)))
    with pytest.raises(ValueError, match="real numeric"):
        func(np.array([["a", "b"]] * 5))
    with pytest.raises(ValueError, match="complex"):
        func(np.ones((5, 2)) * 1j)


# ------------------------------------------------------------------ ChainTrace


def test_chain_trace_thins_with_consistent_stride():
    cap = 8
    trace = ChainTrace(n_chains=2, n_stats=3, capacity=cap)
    for i in range(100):
        trace.append(np.full((2, 3), float(i)))
        assert len(trace) <= cap
        kept = trace.draws()[:, 0, 0]
        # stored draws are appends 0, stride, 2 stride, ... up to the latest one due
        np.testing.assert_array_equal(kept, trace.stride * np.arange(len(trace)))
        assert kept[-1] == i - i % trace.stride
    assert trace.n_appended == 100
    assert trace.stride == 16  # multiples of 8 in 0..99 would be 13 > cap draws
    assert len(trace) == 7
    trace.reset()
    assert (len(trace), trace.stride, trace.n_appended) == (0, 1, 0)


def test_chain_trace_odd_capacity_keeps_even_spacing():
    trace = ChainTrace(2, 1, capacity=5)
    for i in range(37):
        trace.append(np.full((2, 1), float(i)))
        kept = trace.draws()[:, 0, 0]
        np.testing.assert_array_equal(kept, trace.stride * np.arange(len(trace)))


def test_chain_trace_copies_values():
    trace = ChainTrace(2, 2, capacity=4)
    values = np.ones((2, 2))
    trace.append(values)
    values[:] = 5.0
    np.testing.assert_array_equal(trace.draws()[0], np.ones((2, 2)))


def test_chain_trace_summary():
    keys = {"rhat_max", "ess_min", "ess_per_chain_min"}
    rng = np.random.default_rng(8)
    trace = ChainTrace(n_chains=3, n_stats=2, capacity=256)
    assert set(trace.summary()) == keys and all(math.isnan(v) for v in trace.summary().values())
    for _ in range(3):
        trace.append(rng.normal(size=(3, 2)))
    assert all(math.isnan(v) for v in trace.summary().values())
    for _ in range(997):
        trace.append(rng.normal(size=(3, 2)))
    out = trace.summary()
    assert set(out) == keys
    draws = trace.draws()
    assert out["rhat_max"] == pytest.approx(np.max(split_rhat(draws)))
    assert out["ess_min"] == pytest.approx(np.min(effective_sample_size(draws)))
    assert out["ess_per_chain_min"] == pytest.approx(out["ess_min"] / 3)
    assert out["rhat_max"] < RHAT_WARN
    trace.reset()
    for _ in range(1000):
        values = rng.normal(size=(3, 2))
        values[0] += 2.0  # one chain two sd away
        trace.append(values)
    assert trace.summary()["rhat_max"] > RHAT_WARN


def test_chain_trace_validation():
    with pytest.raises(ValueError, match="n_chains must be >= 1, got 0"):
        ChainTrace(0, 2)
    with pytest.raises(ValueError, match="n_stats must be an integer"):
        ChainTrace(2, 2.0)
    with pytest.raises(ValueError, match="capacity must be >= 4, got 3"):
        ChainTrace(2, 2, capacity=3)
    trace = ChainTrace(2, 3)
    with pytest.raises(ValueError, match=r"shape \(3, 2\); expected \(n_chains, n_stats\)"):
        trace.append(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        trace.append(np.zeros(3))
    with pytest.raises(ValueError, match="real host"):
        trace.append([["a"] * 3] * 2)
    with pytest.raises(ValueError, match="complex"):
        trace.append(np.ones((2, 3)) * 1j)
    assert len(trace) == 0 and trace.n_appended == 0


def test_chain_trace_restores_from_its_draws_and_counters():
    rng = np.random.default_rng(3)
    a, b = ChainTrace(2, 3, capacity=8), ChainTrace(2, 3, capacity=8)
    for _ in range(21):
        a.append(rng.normal(size=(2, 3)))
    b.restore(a.draws(), *a.counters()[1:])
    assert b.counters() == a.counters()
    for _ in range(9):
        v = rng.normal(size=(2, 3))
        a.append(v)
        b.append(v)
    np.testing.assert_array_equal(a.draws(), b.draws())
    with pytest.raises(ValueError, match="saved draws have shape"):
        b.restore(np.zeros((9, 2, 3)), 1, 9)
