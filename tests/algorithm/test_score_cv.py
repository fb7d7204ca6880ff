"""The score control variate of the tilted moments (snep.maths.oracles).

Checked against properties known without snep: integration by parts makes the
corrected moments exact for a Gaussian target whose precision is the coefficient's
(whatever the samples), and unbiased for any target and any fixed coefficient (a
two-component Gaussian mixture, exact draws, tolerance from the replicate count).
"""

from __future__ import annotations

import numpy as np
import pytest

from snep.maths.oracles import (
    chain_covariance,
    chain_variance,
    score_corrected_moments,
)


def _sums(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-chain sums over samples (axis 1) of x, x^2, g, x g, g^2: x, g are (C, n, P)."""
    return x.sum(1), (x * x).sum(1), g.sum(1), (x * g).sum(1), (g * g).sum(1)


def test_chain_covariance_of_x_with_itself_is_chain_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 7))
    sx, sx2, *_ = _sums(x, x)
    mean, var = chain_variance(sx, sx2, 5)
    mean_x, mean_y, cov = chain_covariance(sx, sx, sx2, 5)
    np.testing.assert_allclose(mean_x, mean, rtol=1e-12)
    np.testing.assert_allclose(mean_y, mean, rtol=1e-12)
    np.testing.assert_allclose(cov, var, rtol=1e-12)


def test_chain_covariance_is_within_plus_between_chains():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 4, 3, 5))
    within = np.mean([np.cov(x[c], y[c], rowvar=False, bias=True) for c in range(4)], axis=0)
    within = np.array([within[j, 5 + j] for j in range(5)])  # cov(x_j, y_j) blocks
    between = np.array([np.cov(x.mean(1)[:, j], y.mean(1)[:, j])[0, 1] for j in range(5)])
    _, _, cov = chain_covariance(x.sum(1), y.sum(1), (x * y).sum(1), 3)
    np.testing.assert_allclose(cov, within + between, rtol=1e-10)


@pytest.mark.parametrize("noise_var", [None, 0.0, 3.0])
def test_exact_for_a_gaussian_target_whatever_the_samples(noise_var):
    # a weight no datum reaches under a flat site: the tilted distribution is the
    # cavity N(m, 1 / lam) and the score is h - lam x exactly; samples far from it
    lam, m = 2.5, 0.7
    rng = np.random.default_rng(2)
    x = rng.normal(-3.0, 0.1, size=(4, 1, 3))  # 4 chains, 1 sample, 3 coordinates
    g = lam * m - lam * x
    sx, sx2, sg, sxg, _ = _sums(x, g)
    mean_x, var_x = chain_variance(sx, sx2, 1)
    _, mean_g, cov = chain_covariance(sx, sg, sxg, 1)
    nv = None if noise_var is None else np.full(3, noise_var)
    mean, var = score_corrected_moments(mean_x, var_x, mean_g, cov, np.full(3, lam), nv)
    if not noise_var:  # the coefficients are the target's precision's
        np.testing.assert_allclose(mean, m, rtol=1e-12)
        np.testing.assert_allclose(var, 1.0 / lam, rtol=1e-12)
    else:  # shrunk: still unbiased (checked below), not exact
        assert np.all(np.isfinite(var))


@pytest.mark.parametrize("precision, noise_var", [(1.0, None), (0.3, None), (1.0, 5.0)])
def test_unbiased_for_a_non_gaussian_target(precision, noise_var):
    # p = 0.5 N(-1, 0.5^2) + 0.5 N(1.5, 1): exact draws, score in closed form
    w, mu, sd = np.array([0.5, 0.5]), np.array([-1.0, 1.5]), np.array([0.5, 1.0])
    true_mean = float(w @ mu)
    true_var = float(w @ (sd**2 + mu**2)) - true_mean**2

    def score(x):
        dens = w * np.exp(-0.5 * ((x[..., None] - mu) / sd) ** 2) / sd
        return (dens * (mu - x[..., None]) / sd**2).sum(-1) / dens.sum(-1)

    rng = np.random.default_rng(3)
    reps, chains, n = 4000, 8, 4
    comp = rng.random((reps, chains, n)) < w[1]
    x = np.where(comp, rng.normal(mu[1], sd[1], comp.shape), rng.normal(mu[0], sd[0], comp.shape))
    g = score(x)
    means, variances = [], []
    for r in range(reps):  # each replicate: one site step's estimate (coordinate axis of 1)
        sx, sx2, sg, sxg, _ = _sums(x[r][..., None], g[r][..., None])
        mean_x, var_x = chain_variance(sx, sx2, n)
        _, mean_g, cov = chain_covariance(sx, sg, sxg, n)
        nv = None if noise_var is None else np.array([noise_var])
        m, v = score_corrected_moments(mean_x, var_x, mean_g, cov, np.array([precision]), nv)
        means.append(m[0])
        variances.append(v[0])
    means, variances = np.array(means), np.array(variances)
    se_m = means.std() / np.sqrt(reps)
    se_v = variances.std() / np.sqrt(reps)
    assert abs(means.mean() - true_mean) < 4.5 * se_m
    assert abs(variances.mean() - true_var) < 4.5 * se_v


def test_host_accumulation_matches_the_array_expressions_and_float64():
    import types

    from snep.algorithm.score import accumulate_score
    from snep.maths.oracles import GUARD_SLACK
    from snep.state import ChainArrays, PassScalars

    rng = np.random.default_rng(4)
    C, P = 3, 40
    a = ChainArrays.zeros(C, P, np.float32, np)
    for arr in a.arrays():
        arr[...] = rng.normal(size=(C, P))
    a.anchor_prec[...] = np.abs(a.anchor_prec) + 0.1
    a.site_prec[...] = np.abs(a.site_prec) * 2  # some factors improper: the guard binds
    grad = rng.normal(size=(C, P)).astype(np.float32)
    p = PassScalars(lik_scale=3.0, inv_beta=2.0)
    b = a.astype(np.float32)
    f = a.astype(np.float64)  # before accumulating
    host = [np.zeros((C, P), np.float32) for _ in range(3)]
    expr = [np.zeros((C, P), np.float32) for _ in range(3)]
    accumulate_score(a, grad, *host, p)  # numba loop
    accumulate_score(b, grad, *expr, p, types.SimpleNamespace(maximum=np.maximum))
    # float64 oracle of the pass's guarded score
    site_b = f.site_prec * p.inv_beta
    lam = np.maximum(f.anchor_prec - site_b, p.prec_floor - GUARD_SLACK * site_b)
    g = p.lik_scale * grad + (f.anchor_pm - f.site_pm * p.inv_beta) - lam * f.x
    x0 = f.x
    for got in (host, expr):
        np.testing.assert_allclose(got[0], g, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[1], x0 * g, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[2], g * g, rtol=1e-5, atol=1e-4)
    for arrays in (a, b):
        np.testing.assert_allclose(arrays.acc_x - f.acc_x, x0, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arrays.acc_x2 - f.acc_x2, x0 * x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first", [True, False])
def test_host_score_moments_equal_the_array_expressions_bitwise(first):
    from snep.algorithm.score import score_moments
    from snep.state import ChainArrays

    class NotNumpy:  # numpy, but not `np` itself: forces the array-expression path
        def __getattr__(self, name):
            return getattr(np, name)

    C, P = 7, 9  # halves of 3 and 4 chains

    def make():
        rng = np.random.default_rng(5)
        a = ChainArrays.zeros(C, P, np.float32, np)
        for arr in a.arrays():
            arr[...] = rng.normal(size=(C, P))
        a.anchor_prec[...] = np.abs(a.anchor_prec) + 1
        accs = [rng.normal(size=(C, P)).astype(np.float32) for _ in range(3)]
        accs[2] = np.abs(accs[2]) + 3
        stats = np.abs(rng.normal(size=(2, 3, P)))
        stats[0, 2] *= -1  # a positive curvature guess in one half, the anchor's in the other
        if first:
            stats[:, 0] = np.inf
        return a, accs, stats

    out = []
    for xp in (np, NotNumpy()):
        a, accs, stats = make()
        mean, var = score_moments(a, *accs, stats, 3, 2, 0.05, xp)
        assert all(np.all(acc == 0) for acc in accs)
        out.append((mean, var, stats))
    for host, expr in zip(*out, strict=True):
        np.testing.assert_array_equal(host, expr)


@pytest.mark.parametrize("half", [2, 3])
def test_noise_estimate_needs_three_samples_per_half(half):
    """The gradient noise is the residual of g's regression on x (intercept and slope):
    two samples per half fit exactly and leave a zero noise estimate whatever the noise,
    which is why the worker turns the control variate on only with three or more
    (``MIN_CV_HALF_SAMPLES``)."""
    from snep.algorithm.score import score_moments
    from snep.state import ChainArrays

    C, P = 2 * half, 50
    rng = np.random.default_rng(9)
    a = ChainArrays.zeros(C, P, np.float64, np)
    x = rng.normal(size=(C, P))
    g = -2.0 * x + rng.normal(scale=10.0, size=(C, P))  # curvature 2, noise variance 100
    a.acc_x[...], a.acc_x2[...] = x, x * x
    a.anchor_prec[...] = 1.0
    accs = [g.copy(), x * g, g * g]
    stats = np.zeros((2, 3, P))
    stats[:, 0] = np.inf
    score_moments(a, *accs, stats, half, 1, 0.05)
    noise = stats[:, 0]
    if half == 2:
        assert np.all(noise < 1e-9 * 100.0)
    else:
        assert np.median(noise) > 10.0  # one residual degree of freedom: noisy, not zero


@pytest.mark.parametrize(
    ("chains", "samples", "on"), [(4, 1, False), (5, 1, False), (6, 1, True), (4, 2, True)]
)
def test_worker_uses_the_control_variate_with_three_samples_per_half(chains, samples, on):
    from tests.algorithm.models import GaussianMeans

    from snep.algorithm.worker import SnepWorker
    from snep.backends import get_backend
    from snep.config import Config

    config = Config().replace(snep={"n_chains": chains, "n_samples": samples})
    data = np.random.default_rng(0).normal(size=(20, 3))
    worker = SnepWorker(0, 2, GaussianMeans(1.0), data, np.zeros(20, np.int32), config,
                        get_backend("numpy"), np.zeros(3))  # fmt: skip
    assert worker._score_cv is on
