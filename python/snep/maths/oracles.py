"""Float64 numpy oracle of the fused worker pass.

Plain, obvious code that every compiled backend is tested against (with the
noise passed in, so that the comparison is exact up to rounding).  It mirrors
``fused_element`` in ``kernels/snep_fused.cuh`` line by line:

1. tilted factor ``eta = anchor - site / beta`` with the precision guard
   (Hasenclever et al. 2017, §SNEP: the tilted distribution
   ``p_i(x) ∝ exp(<theta'_i - lambda_i / beta, s(x)>) exp(l_i(x) / beta)``);
2. one SG-MCMC step (SGLD, Welling & Teh 2011; pSGLD, Li et al. 2016; SGHMC,
   Chen et al. 2014; the reference Adam-SGLD);
3. moment accumulation;
4. the SNEP inner step ``gamma <- Proj(gamma + eps (s(x) - mu_loc))`` on the
   site's mean parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = [
    "GUARD_SLACK",
    "chain_variance",
    "fused_step_reference",
    "guard_cap",
    "local_step_reference",
    "reply_update_reference",
    "site_step_reference",
]


#: share of the site's precision / beta (the likelihood curvature the site stands
#: for) by which the tilted factor's precision may fall below ``prec_floor`` before the
#: guard raises it (``GUARD_SLACK`` in kernels/snep_fused.cuh)
GUARD_SLACK = 0.5


def fused_step_reference(
    kind: SamplerKind, a: ChainArrays, grad: np.ndarray, noise: np.ndarray, p: PassScalars
) -> int:
    """One fused pass in float64, in place on ``a``; returns how often the guard fired."""
    ap, apm = a.anchor_prec, a.anchor_pm
    sp, spm = a.site_prec.copy(), a.site_pm.copy()
    lam_eta = ap - sp * p.inv_beta
    h_eta = apm - spm * p.inv_beta
    # the guard (see GUARD_SLACK): the precision may fall below the floor by half the
    # site's precision / beta, the likelihood curvature the site stands for; below
    # that it is raised, and the precision-mean (the cavity's coupling force) is kept
    lam_min = p.prec_floor - GUARD_SLACK * sp * p.inv_beta
    fired = lam_eta < lam_min
    lam_eta = np.where(fired, lam_min, lam_eta)
    x = a.x
    g = p.lik_scale * grad + (h_eta - lam_eta * x)
    eps = p.step_size
    if kind == SamplerKind.SGLD:
        x += 0.5 * eps * g + p.noise_scale * np.sqrt(eps) * noise
    elif kind == SamplerKind.PSGLD:
        v = p.rms_decay * a.s1 + (1.0 - p.rms_decay) * g * g
        a.s1[...] = v
        sv = np.sqrt(v / p.bias_corr2)  # bias-corrected like Adam's second moment
        G = 1.0 / (p.rms_eps + sv)
        drift = G * g
        if p.gamma_term:
            # dG/dx = G^2 (1 - rms_decay) g Lambda_eta / (sqrt(V / bc2) bc2): the
            # bias correction's 1 / bc2 is part of the derivative
            gamma = G * G * (1.0 - p.rms_decay) * g * lam_eta / ((sv + 1e-30) * p.bias_corr2)
            drift = drift + gamma
        x += 0.5 * eps * drift + p.noise_scale * np.sqrt(eps * G) * noise
    elif kind == SamplerKind.SGHMC:
        mom = (1.0 - p.friction) * a.s1 + eps * g
        mom += p.noise_scale * np.sqrt(2.0 * p.friction * eps) * noise
        a.s1[...] = mom
        x += mom
    elif kind == SamplerKind.ADAM_SGLD:
        m = p.beta1 * a.s1 + (1.0 - p.beta1) * g
        v = p.beta2 * a.s2 + (1.0 - p.beta2) * g * g
        a.s1[...] = m
        a.s2[...] = v
        alpha = eps / (np.sqrt(v / p.bias_corr2) + p.adam_eps)
        direction = m / p.bias_corr1  # bias_corr1 = 1 - beta1^t, so = g when beta1 = 0
        sd = np.minimum(eps * p.kappa, np.sqrt(2.0 * alpha))
        x += alpha * direction + p.noise_scale * sd * noise
    else:
        raise ValueError(f"unknown sampler kind {kind!r}; expected one of {list(SamplerKind)}")

    sx, sx2 = x.copy(), x * x
    if p.accumulate:
        a.acc_x += x
        a.acc_x2 += x * x
        if p.update_site and p.inv_n_acc > 0.0:
            sx, sx2 = a.acc_x * p.inv_n_acc, a.acc_x2 * p.inv_n_acc
            a.acc_x[...] = 0.0
            a.acc_x2[...] = 0.0

    if p.update_site:
        a.site_prec[...], a.site_pm[...] = site_step_reference(
            sp, spm, a.cavity_prec, a.cavity_pm, sx, sx2, p
        )
    return int(fired.sum())


def site_step_reference(
    site_prec: Any,
    site_pm: Any,
    cavity_prec: Any,
    cavity_pm: Any,
    sx: Any,
    sx2: Any,
    p: PassScalars,
    xp: Any = np,
) -> tuple[Any, Any]:
    """The SNEP inner step on the site (Hasenclever et al. 2017, §SNEP), elementwise.

    ``gamma <- Proj(gamma + eps (s - mu_loc))`` on the site's mean parameters
    ``gamma = (m, m^2 + v)``, with ``s = (sx, sx2)`` the sample moments and ``mu_loc``
    those of the local posterior ``cavity + site``; ``Proj`` clips the mean to
    ``[m_lo, m_hi]`` and the variance to ``[v_lo, v_hi]``.  Returns the new
    ``(precision, precision_mean)``.  The variance ``gamma2 - gamma1^2`` is expanded as
    in ``kernels/snep_fused.cuh`` so that no large squares cancel.  ``xp`` is the array
    module: the oracle calls it with numpy on one chain; a worker with several chains
    calls it with the chains' pooled moments (numpy or CuPy).
    """
    loc_var = 1.0 / (cavity_prec + site_prec)
    loc_mean = (cavity_pm + site_pm) * loc_var
    site_var = 1.0 / site_prec
    site_mean = site_pm * site_var
    eps = p.site_step
    d = sx - loc_mean
    g1 = site_mean + eps * d
    var = site_var + eps * (d * (sx + loc_mean - 2.0 * site_mean) + (sx2 - sx * sx) - loc_var)
    var = xp.clip(var - eps * eps * d * d, p.v_lo, p.v_hi)
    mean = xp.clip(g1, p.m_lo, p.m_hi)
    return 1.0 / var, mean / var


def local_step_reference(
    site_prec: Any,
    site_pm: Any,
    cavity_prec: Any,
    cavity_pm: Any,
    sx: Any,
    sx2: Any,
    p: PassScalars,
    prec_min: Any,
    n_chains: int = 1,
    anchor_prec: Any = None,
    xp: Any = np,
    var_hat: Any = None,
) -> tuple[Any, Any]:
    """The SNEP inner step taken on the local posterior's moments (``site_update =
    "local"``), elementwise; returns the new site ``(precision, precision_mean)``.

    The local posterior ``q_loc = cavity + site`` (mean ``m``, variance ``v``) is moved
    towards the tilted moments estimated from this iteration's samples, then the site
    is set by subtraction, ``site = natural(q_loc) - cavity``: a damped EP update in
    moment space (So & Turner 2024, "Fearless stochasticity in expectation
    propagation", study such steps under Monte Carlo noise), with the same fixed
    points as the step on the site's own mean parameters (:func:`site_step_reference`:
    the tilted moments equal q_loc's)::

        m <- m + eps (sx - m)
        v <- (1 - eps) v + eps C / (C - 1) (sx2 - sx^2)              (C >= 2 chains)
        v <- (1 - eps) v + eps (sx2 - sx^2) + eps (1 - eps) (sx - m)^2   (one chain)

    With several chains the variance moves towards their unbiased cross-chain variance
    (``var_hat`` when given: the worker passes :func:`chain_variance`, which is
    unbiased also for several autocorrelated samples per chain), so a drift of the chains away from
    q's mean (a network learning) moves the mean without inflating the variance; one
    chain needs the mean-parameter form, whose ``(sx - m)^2`` term is its only
    variance information.  A site that should flatten (a weight its shard does not
    inform: the tilted distribution is the cavity) does so geometrically, at rate
    ``eps``, where the step on the site's own mean parameters moves its variance by
    ``eps (v_tilted - v_loc)``, which vanishes as the site flattens.  The step is
    ``beta eps``: power EP moves a site by ``beta (natural(proj(tilted)) -
    natural(q))`` (Minka 2004), and p-SNEP's tilted factor ``anchor - site / beta``
    reacts to a site change ``1 / beta`` times as strongly (measured: with ``eps``
    unscaled, 8-worker p-SNEP on the wine regression diverged).

    ``Proj``: ``m`` is clipped to ``[m_lo, m_hi]`` and the site's precision to
    ``[prec_min, min(1 / v_lo, guard_cap)]`` keeping ``m`` (a flat site's own mean is
    not clipped: it may be large, and clipping it would move q).

    :func:`guard_cap` (with ``anchor_prec`` given) keeps the tilted factor
    ``anchor - site / beta``, now and after the next anchor refresh, at or above the
    guard's threshold: the site step is damped where the guard would fire, as SMS damps
    its EP step to keep the cavity proper (measured on the wine regression, 8-worker
    p-SNEP: the guard fired 224-1544 times after the first tenth of the run without it;
    with it, and the same damping after each reply, never).  At a power-EP fixed point
    with similar sites it does not bind.

    ``prec_min`` is ``1 / v_hi`` (a proper site), or, where the worker allows it
    (:func:`snep.algorithm.worker.site_precision_floor`), a negative bound: an improper
    site, as EP allows.  A site that should be flat fluctuates around zero precision,
    and a floor above zero keeps its upward noise (a reflected random walk): measured on
    the wine regression with ``1 / v_hi``, a weight no datum reaches kept 92% of its
    prior variance with one worker, 67% with four.
    """
    loc_prec = cavity_prec + site_prec
    v = 1.0 / loc_prec
    m = (cavity_pm + site_pm) * v
    eps = p.site_step / p.inv_beta  # power EP's step: beta (proj(tilted) - q)
    d = sx - m
    if var_hat is not None:
        v_new = (1.0 - eps) * v + eps * var_hat
    elif n_chains > 1:
        v_new = (1.0 - eps) * v + eps * (n_chains / (n_chains - 1.0)) * (sx2 - sx * sx)
    else:
        v_new = (1.0 - eps) * v + eps * (sx2 - sx * sx) + eps * (1.0 - eps) * d * d
    m_new = xp.clip(m + eps * d, p.m_lo, p.m_hi)
    prec_max = 1.0 / p.v_lo
    if anchor_prec is not None:
        cap = guard_cap(anchor_prec, cavity_prec, p, xp)
        prec_max = xp.minimum(prec_max, xp.maximum(cap, prec_min))
    prec = xp.clip(1.0 / v_new - cavity_prec, prec_min, prec_max)
    return prec, m_new * (cavity_prec + prec) - cavity_pm


def chain_variance(acc_x: Any, acc_x2: Any, n_per_chain: int, xp: Any = np) -> tuple[Any, Any]:
    """Pooled mean and variance estimate from per-chain sums of ``x`` and ``x^2`` over
    ``n_per_chain`` samples each (rows of ``acc_x``/``acc_x2``, two or more chains).

    ``var = mean_c(within_c) + B``, the within-chain variance (about each chain's own
    mean, normalised by ``n``) plus the variance of the chain means (``ddof = 1``):
    for stationary chains started independently ``E[within_c] = v - Var(mean_c)`` and
    ``E[B] = Var(mean_c)`` whatever the autocorrelation, so the sum is unbiased (it is
    Gelman & Rubin's ``var+`` without the ``(n - 1) / n``); one sample per chain leaves
    the cross-chain variance ``C / (C - 1) (sx2 - sx^2)``.
    """
    f64 = np.float64
    c, n = acc_x.shape[0], float(n_per_chain)
    # sums over the chains in float64 without (C, P) float64 temporaries
    mean = acc_x.sum(axis=0, dtype=f64) / (c * n)
    mean_x2 = acc_x2.sum(axis=0, dtype=f64) / (c * n)  # mean_c of each chain's E[x^2]
    mean_m2 = (acc_x * acc_x).sum(axis=0, dtype=f64) / (c * n * n)  # mean_c(mean_c^2)
    between = (mean_m2 - mean * mean) * (c / (c - 1.0))
    return mean, (mean_x2 - mean_m2) + between


def chain_covariance(
    acc_x: Any, acc_y: Any, acc_xy: Any, n_per_chain: int, xp: Any = np
) -> tuple[Any, Any, Any]:
    """Pooled means of ``x`` and ``y`` and their covariance estimate from per-chain sums
    of ``x``, ``y`` and ``x y`` over ``n_per_chain`` samples each (two or more chains):
    :func:`chain_variance`'s estimator with ``y`` for the second ``x`` (within-chain
    covariance plus the covariance of the chain means, ``ddof = 1``)."""
    f64 = np.float64
    c, n = acc_x.shape[0], float(n_per_chain)
    mean_x = acc_x.sum(axis=0, dtype=f64) / (c * n)
    mean_y = acc_y.sum(axis=0, dtype=f64) / (c * n)
    mean_xy = acc_xy.sum(axis=0, dtype=f64) / (c * n)
    mean_mm = (acc_x * acc_y).sum(axis=0, dtype=f64) / (c * n * n)
    between = (mean_mm - mean_x * mean_y) * (c / (c - 1.0))
    return mean_x, mean_y, (mean_xy - mean_mm) + between


def score_corrected_moments(
    mean_x: Any, var_x: Any, mean_g: Any, cov_xg: Any, precision: Any, noise_var: Any = None
) -> tuple[Any, Any]:
    """Tilted moments with the score as a control variate (zero-variance MCMC, Assaraf &
    Caffarel 1999; Mira, Solgi & Imparato 2013), elementwise.

    ``g`` is the gradient of the log tilted density at the samples (any unbiased
    estimate: the minibatch gradient will do) and ``precision`` a fixed guess of the
    tilted precision, chosen before the samples were drawn (the anchor's).  Under the
    tilted distribution ``E[g] = 0`` and ``E[(x - m) g] = -1`` (integration by parts), so::

        m_hat = mean_x + mean_g / precision
        v_hat = var_x + (1 + cov_xg) / precision

    are unbiased whatever ``precision`` (and ``noise_var``, below); where the tilted
    distribution is Gaussian with that precision (a weight no datum reaches, whose site
    is flat: the tilted distribution is the cavity), the sampling noise cancels exactly,
    and the estimate is the target's even where the chain's discretisation biases its
    own spread.  The noise left grows with the likelihood's departure from the guess,
    so it is small for weakly informed weights, where the plain sample variance's
    noise, turned into a site precision and clipped at a proper site, sharpened the
    sites (docs/method.md §1.5).

    ``noise_var`` (optional, chosen before the samples as ``precision`` is): the
    variance of the gradient estimates' noise, the part of ``g`` that ``x`` does not
    explain.  Minibatch noise enters the corrections undamped (an MLP's chains diverged
    with the plain coefficients on MNIST), so the coefficients shrink towards zero, the
    plain sample moments, as it grows: the minimum-variance ones for a Gaussian tilted
    distribution of that precision, ``1 / (precision + noise_var)`` for the mean and
    ``2 / (2 precision + noise_var)`` for the variance; with no noise, the plain ones.
    """
    if noise_var is None:
        return mean_x + mean_g / precision, var_x + (1.0 + cov_xg) / precision
    b = 1.0 / (precision + noise_var)
    a = 2.0 / (2.0 * precision + noise_var)
    return mean_x + b * mean_g, var_x + a * (1.0 + cov_xg)


def guard_cap(anchor_prec: Any, cavity_prec: Any, p: PassScalars, xp: Any = np) -> Any:
    """The largest site precision that keeps the tilted factor ``anchor - site / beta``,
    now and after the next anchor refresh (``anchor = cavity + site``), at or above the
    guard's threshold ``prec_floor - GUARD_SLACK * site / beta`` (elementwise)."""
    cap = (anchor_prec - p.prec_floor) / (p.inv_beta * (1.0 - GUARD_SLACK))
    excess = p.inv_beta * (1.0 - GUARD_SLACK) - 1.0  # > 0 for beta < 1 / 2
    if excess > 0:
        cap = xp.minimum(cap, (cavity_prec - p.prec_floor) / excess)
    return cap


def reply_update_reference(
    a: ChainArrays,
    cavity_prec: np.ndarray,
    cavity_pm: np.ndarray,
    scale_momentum: bool,
    xp: Any = np,
) -> None:
    """A server reply, in place (oracle of ``reply_update`` in kernels/snep_fused.cuh).

    The cavity becomes the reply's (the server's ``theta - lambda_i``, rounded to the
    chain arrays' dtype), the anchor moves with the cavity, and the
    chain is shifted to keep its standardised position under the local posterior
    ``cavity + site``: ``x <- m_new + sqrt(v_new / v_old) (x - m_old)`` (docs/method.md §1.3);
    with ``scale_momentum`` (SGHMC) the momentum is scaled by the same factor.
    ``xp`` is the array module of the arrays (numpy, or one with its API).  Both compiled
    backends run ``snep::reply_update`` instead (the CPU extension, and the CUDA kernel
    ``reply_update_float32``); tests hold them to this oracle.
    """
    old_prec = a.cavity_prec + a.site_prec
    old_mean = (a.cavity_pm + a.site_pm) / old_prec
    new_cp = xp.asarray(cavity_prec).astype(a.cavity_prec.dtype, copy=False)
    new_cpm = xp.asarray(cavity_pm).astype(a.cavity_pm.dtype, copy=False)
    a.anchor_prec[...] = a.anchor_prec - a.cavity_prec + new_cp
    a.anchor_pm[...] = a.anchor_pm - a.cavity_pm + new_cpm
    a.cavity_prec[...] = new_cp
    a.cavity_pm[...] = new_cpm
    new_prec = a.cavity_prec + a.site_prec
    new_mean = (a.cavity_pm + a.site_pm) / new_prec
    ratio = xp.sqrt(old_prec / new_prec)
    a.x[...] = new_mean + ratio * (a.x - old_mean)
    if scale_momentum:
        a.s1[...] *= ratio
