"""The score control variate of the tilted moments: its sums and its moments.

Before a fused pass moves the chains, the worker adds, per chain and parameter, the
sample ``x``, ``x^2``, the gradient ``g`` of the log tilted density at ``x`` and
``x g`` and ``g^2`` to its accumulators, from which
:func:`snep.maths.oracles.score_corrected_moments` forms the tilted moments.
``g`` is the fused pass's own (``kernels/snep_fused.cuh``, step 1): the minibatch
log-likelihood gradient scaled by ``lik_scale`` plus the Gaussian factor ``anchor -
site / beta`` with its precision guarded as the pass guards it.

:func:`score_moments` then forms the cross-fitted moments at the site step.  On the
host ``numba.njit`` loops read each array once; on a device the same arithmetic runs
as array expressions of the backend's module (CuPy), and the two agree bitwise.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from snep.algorithm.pooled_host import score_moments_host
from snep.maths.oracles import (
    GUARD_SLACK,
    chain_covariance,
    chain_variance,
    score_corrected_moments,
)
from snep.state import ChainArrays, PassScalars

__all__ = ["accumulate_score", "score_moments"]

_TINY = float(np.finfo(np.float64).tiny)


@numba.njit(cache=True)
def _accumulate_host(
    x, grad, ap, apm, sp, spm, lik_scale, inv_beta, prec_floor, slack,
    acc_x, acc_x2, acc_g, acc_xg, acc_g2,
):  # fmt: skip  # pragma: no cover - compiled
    C, P = x.shape
    for c in range(C):
        for j in range(P):
            site_b = sp[c, j] * inv_beta
            lam = ap[c, j] - site_b
            lo = prec_floor - slack * site_b
            if lam < lo:
                lam = lo
            xv = x[c, j]
            g = lik_scale * grad[c, j] + (apm[c, j] - spm[c, j] * inv_beta) - lam * xv
            acc_x[c, j] += xv
            acc_x2[c, j] += xv * xv
            acc_g[c, j] += g
            acc_xg[c, j] += xv * g
            acc_g2[c, j] += g * g


def accumulate_score(
    a: ChainArrays,
    grad: Any,
    acc_g: Any,
    acc_xg: Any,
    acc_g2: Any,
    p: PassScalars,
    xp: Any = np,
) -> None:
    """Add this iteration's samples to the accumulators (module docstring), in place:
    ``a.acc_x``, ``a.acc_x2`` and ``acc_g``, ``acc_xg``, ``acc_g2``, all ``(C, P)``."""
    if xp is np:
        # scalars in the arrays' precision: the loop rounds as the array expressions
        # below do (numpy keeps float32 arrays float32 against Python floats), so a
        # host run and a device run agree bitwise
        f = a.x.dtype.type
        _accumulate_host(
            a.x, grad, a.anchor_prec, a.anchor_pm, a.site_prec, a.site_pm,
            f(p.lik_scale), f(p.inv_beta), f(p.prec_floor), f(GUARD_SLACK),
            a.acc_x, a.acc_x2, acc_g, acc_xg, acc_g2,
        )  # fmt: skip
        return
    site_b = a.site_prec * p.inv_beta
    lam = xp.maximum(a.anchor_prec - site_b, p.prec_floor - GUARD_SLACK * site_b)
    g = p.lik_scale * grad + (a.anchor_pm - a.site_pm * p.inv_beta) - lam * a.x
    a.acc_x += a.x
    a.acc_x2 += a.x * a.x
    acc_g += g
    acc_xg += a.x * g
    acc_g2 += g * g


def score_moments(
    a: ChainArrays,
    acc_g: Any,
    acc_xg: Any,
    acc_g2: Any,
    stats: Any,
    split: int,
    n_per_chain: int,
    rate: float,
    xp: Any = np,
) -> tuple[Any, Any]:
    """The tilted mean and variance (float64, ``(P,)``) from the accumulated sums with the
    score as a control variate, cross-fitted over the chain halves ``[0, split)`` and
    ``[split, C)``; updates ``stats`` and zeroes ``acc_g``, ``acc_xg``, ``acc_g2``.

    Each half's estimate (:func:`~snep.maths.oracles.score_corrected_moments`)
    takes its coefficients from the *other* half's running estimates in ``stats``
    (``(2, 3, P)`` float64, per half: the gradient noise's variance, ``inf`` before the
    first step; the variance of ``x``; the covariance of ``x`` and ``g``), so they are
    independent of the samples they correct: the curvature guess is the slope
    ``-cov / var`` where positive, else the anchor's precision, and the noise variance
    is the residual variance of ``g`` after its regression on ``x`` (zero for a weight
    no datum reaches, whose score is linear in it).  The halves' estimates, each
    unbiased, are averaged by size; then this step's figures enter ``stats`` (a running
    average at ``rate``).  The host loops (numba: the halves' sums, then the
    moments: :func:`snep.algorithm.pooled_host.score_moments_host`, the blocks of the
    default one-pass site step) do what the array expressions do, in the same order: the
    two agree bitwise.
    """
    if xp is np:
        mean = np.empty(a.x.shape[1])
        var = np.empty(a.x.shape[1])
        score_moments_host(
            a.acc_x, a.acc_x2, acc_g, acc_xg, acc_g2, a.anchor_prec[0], stats, split,
            float(n_per_chain), rate, mean, var,
        )  # fmt: skip
        return mean, var
    f64, C = np.float64, a.x.shape[0]
    anchor = a.anchor_prec[0].astype(f64)
    mean = var = 0.0
    fresh = []
    for h, rows in enumerate((slice(0, split), slice(split, C))):
        acc_x, g = a.acc_x[rows], acc_g[rows]
        mean_x, var_x = chain_variance(acc_x, a.acc_x2[rows], n_per_chain, xp)
        _, mean_g, cov_xg = chain_covariance(acc_x, g, acc_xg[rows], n_per_chain, xp)
        curv = -stats[1 - h, 2] / xp.maximum(stats[1 - h, 1], _TINY)
        guess = xp.where(xp.isfinite(curv) & (curv > 0), curv, anchor)
        m_h, v_h = score_corrected_moments(mean_x, var_x, mean_g, cov_xg, guess, stats[1 - h, 0])
        share = (rows.stop - rows.start) / C
        mean, var = mean + share * m_h, var + share * v_h
        _, var_g = chain_variance(g, acc_g2[rows], n_per_chain, xp)
        explained = cov_xg * cov_xg / xp.maximum(var_x, _TINY)
        fresh.append((xp.maximum(var_g - explained, 0.0), var_x, cov_xg))
    for h, values in enumerate(fresh):
        first = xp.isinf(stats[h, 0])  # no estimate yet: take this one
        for k, value in enumerate(values):
            old = stats[h, k]
            old[...] = xp.where(first, value, (1.0 - rate) * old + rate * value)
    for acc in (acc_g, acc_xg, acc_g2):
        acc[...] = 0.0
    return mean, xp.maximum(var, 0.0)
