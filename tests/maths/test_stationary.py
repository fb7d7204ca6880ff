"""The samplers sample: stationary moments on a Gaussian target.

The fused pass is element-wise, so with a diagonal Gaussian target every
parameter is an independent chain.  After burn-in, snapshots of P = 16,384
coordinates taken far apart in time are iid draws from the chain's stationary
law; their sample mean and variance have standard errors ``sqrt(v / n)`` and
``v sqrt(2 / n)`` (n draws), so the tolerances below follow from the sample
size.  The stationary law of SGLD and SGHMC on a Gaussian is known exactly
(a linear recursion: discrete Lyapunov equation), including the O(h)
discretisation bias, so that bias is not hidden in the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from snep.backends import get_backend
from snep.state import ChainArrays, PassScalars, SamplerKind

P = 16_384
MEAN, PREC = 1.5, 4.0  # target N(1.5, 0.25)


def run_chain(
    kind: SamplerKind, scalars: PassScalars, burn_in: int, snapshots: int, gap: int, s1: float = 0
):
    a = ChainArrays.zeros(1, P, np.float32)
    a.s1[...] = s1
    a.anchor_prec[...] = PREC
    a.anchor_pm[...] = PREC * MEAN
    a.site_prec[...] = 1.0  # unused: inv_beta = 0 makes eta = anchor
    a.cavity_prec[...] = 1.0
    grad = np.zeros_like(a.x)
    backend = get_backend("cpu")
    draws = []
    for t in range(1, burn_in + snapshots * gap + 1):
        scalars.step = t
        backend.fused_step(kind, a, grad, scalars)
        if t > burn_in and (t - burn_in) % gap == 0:
            draws.append(a.x[0].astype(np.float64).copy())
    return np.concatenate(draws)


def check_moments(draws: np.ndarray, mean: float, var: float) -> None:
    n = draws.size
    assert abs(draws.mean() - mean) < 5 * np.sqrt(var / n), (draws.mean(), mean)
    assert abs(draws.var() - var) < 5 * var * np.sqrt(2 / n), (draws.var(), var)


def scalars(**kw) -> PassScalars:
    return PassScalars(inv_beta=0.0, update_site=0, prec_floor=1e-6, seed=123, **kw)


def test_sgld_stationary_moments():
    h = 0.05 / PREC
    # x' = a x + sqrt(h) xi, a = 1 - h PREC / 2: var = h / (1 - a^2) = v / (1 - h PREC / 4)
    a = 1 - h * PREC / 2
    exact_var = h / (1 - a * a)
    draws = run_chain(SamplerKind.SGLD, scalars(step_size=h), burn_in=600, snapshots=8, gap=100)
    check_moments(draws, MEAN, exact_var)
    assert exact_var == pytest.approx(1 / PREC / (1 - h * PREC / 4))


def test_sghmc_stationary_moments():
    eta, alpha = 0.01 / PREC, 0.2
    # state (x, v): v' = (1 - alpha) v - eta PREC (x - m) + sqrt(2 alpha eta) xi; x' = x + v'
    A = np.array([[1 - eta * PREC, 1 - alpha], [-eta * PREC, 1 - alpha]])
    b = np.sqrt(2 * alpha * eta) * np.array([1.0, 1.0])
    exact_var = solve_discrete_lyapunov(A, np.outer(b, b))[0, 0]
    s = scalars(step_size=eta, friction=alpha)
    draws = run_chain(SamplerKind.SGHMC, s, burn_in=2000, snapshots=8, gap=300)
    check_moments(draws, MEAN, exact_var)
    assert abs(exact_var * PREC - 1) < 0.05  # and it is close to the target's


@pytest.mark.parametrize("gamma_term", [0, 1])
def test_psgld_stationary_moments(gamma_term):
    # With a slowly adapting preconditioner (decay 0.9999) V ~ E[g^2] = PREC
    # (g = -PREC (x - m), var 1/PREC), so G ~ 1/sqrt(PREC) and pSGLD is SGLD with
    # step h G: var = v / (1 - h G PREC / 4).  A fast decay (0.99) lets V follow the
    # chain's excursions, which is not a Markov chain in x: measured +20% variance
    # on this target, which the Gamma term (O(1 - decay)) does not remove.
    # V starts at its stationary value PREC; h is large enough (h G PREC / 4 = 0.1)
    # that a wrong G would show.
    h, decay = 0.2, 0.9999
    s = scalars(step_size=h, rms_decay=decay, rms_eps=1e-5, gamma_term=gamma_term)
    draws = run_chain(SamplerKind.PSGLD, s, burn_in=500, snapshots=8, gap=100, s1=PREC)
    g = 1 / np.sqrt(PREC)
    exact_var = 1 / PREC / (1 - h * g * PREC / 4)
    check_moments(draws, MEAN, exact_var)


@pytest.mark.parametrize("kind", [SamplerKind.SGLD, SamplerKind.SGHMC, SamplerKind.PSGLD])
def test_zero_temperature_noise_off_converges_to_the_mode(kind):
    s = scalars(step_size=0.05 / PREC, noise_scale=0.0, friction=0.5)
    draws = run_chain(kind, s, burn_in=3000, snapshots=1, gap=1)
    np.testing.assert_allclose(draws, MEAN, atol=1e-4)
