"""The site steps after the pass: the step on the local posterior, the pooled chain
variance and the guard's cap (python/snep/maths/oracles.py)."""

from __future__ import annotations

import numpy as np

from snep.maths.oracles import (
    GUARD_SLACK,
    chain_variance,
    guard_cap,
    local_step_reference,
)
from snep.state import PassScalars


def test_chain_variance_is_within_plus_between_and_unbiased_for_ar1_chains():
    rng = np.random.default_rng(0)
    c, n, p, rho = 8, 20, 4000, 0.9
    # stationary AR(1) chains with unit marginal variance, started independently
    x = np.empty((n, c, p))
    x[0] = rng.standard_normal((c, p))
    for t in range(1, n):
        x[t] = rho * x[t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal((c, p))
    ax, ax2 = x.sum(0), (x * x).sum(0)
    mean, var = chain_variance(ax, ax2, n)
    means = ax / n
    plain = (ax2 / n - means**2).mean(0) + means.var(0, ddof=1)
    np.testing.assert_allclose(var, plain, rtol=1e-10)
    np.testing.assert_allclose(mean, means.mean(0), rtol=1e-10, atol=1e-14)
    # unbiased: the average over p independent coordinates is 1 within 5 SE; the pooled
    # variance about the grand mean alone would be low by Var(chain mean) ~ 0.4 / c
    se = var.std(ddof=1) / np.sqrt(p)
    assert abs(var.mean() - 1.0) < 5 * se, (var.mean(), se)
    naive = (ax2.sum(0) / (n * c)) - mean**2
    assert naive.mean() < 1.0 - 10 * se


def test_local_step_keeps_a_site_whose_local_posterior_has_the_tilted_moments():
    rng = np.random.default_rng(1)
    p = PassScalars(site_step=0.3, inv_beta=1.0, v_lo=1e-4, v_hi=1e4)
    cp, cpm = rng.uniform(1, 3, 50), rng.normal(0, 1, 50)
    sp, spm = rng.uniform(0.5, 5, 50), rng.normal(0, 2, 50)
    v, m = 1 / (cp + sp), (cpm + spm) / (cp + sp)
    prec, pm = local_step_reference(sp, spm, cp, cpm, m, m * m + v, p, 1 / p.v_hi, 8, var_hat=v)
    np.testing.assert_allclose(prec, sp, rtol=1e-10)
    np.testing.assert_allclose(pm, spm, rtol=1e-10, atol=1e-12)
    # moved towards other moments by eps: q_loc's variance and mean interpolate
    prec, pm = local_step_reference(sp, spm, cp, cpm, m + 1, 0, p, 1 / p.v_hi, 8, var_hat=2 * v)
    v_new = 1 / (cp + prec)
    np.testing.assert_allclose(v_new, 0.7 * v + 0.3 * 2 * v, rtol=1e-10)
    np.testing.assert_allclose((cpm + pm) * v_new, m + 0.3, rtol=1e-10)


def test_guard_cap_keeps_the_tilted_factor_above_the_guard_threshold():
    rng = np.random.default_rng(2)
    for beta in (1.0, 0.5, 0.25, 0.125):
        p = PassScalars(inv_beta=1 / beta, prec_floor=1e-3)
        cavity = rng.uniform(0.5, 5, 1000)
        site_old = rng.uniform(0.01, 3, 1000)
        anchor = cavity + site_old
        cap = guard_cap(anchor, cavity, p)
        site = np.minimum(rng.uniform(0.01, 30, 1000), cap)
        threshold = p.prec_floor - GUARD_SLACK * site / beta
        assert np.all(anchor - site / beta >= threshold - 1e-9)  # now
        assert np.all(cavity + site - site / beta >= threshold - 1e-9)  # after a refresh
