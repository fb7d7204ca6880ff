"""The default site step on the host in one pass: score control variate and local step.

With the defaults (several chains, ``site_update = "local"``, the score control
variate) every iteration ends with the pooled site step: the worker accumulates the
samples' ``x, x^2, g, x g, g^2`` per chain (:func:`snep.algorithm.score.accumulate_score`),
forms the cross-fitted tilted moments from them (:func:`snep.algorithm.score.score_moments`)
and steps the local posterior towards them
(:func:`snep.maths.oracles.local_step_reference`; Hasenclever et al. 2017, §SNEP;
docs/method.md §1.5).  Written as three passes that is five ``(C, P)`` accumulators
written and read back, ``(2, 8, P)`` float64 sums and a dozen float64 temporaries: on
the paper's 784-500-300-10 with 8 chains it was two thirds of the iteration (issue 14).

:func:`score_site_step` does all of it in one blocked pass over the parameters, for the
last sample of an iteration (the earlier ones, if ``n_samples > 1``, accumulate as
before and are read here), before the fused pass moves the chains; the worker writes
the new site to every chain's row after the pass.  It does the same floating-point
operations in the same order as the three passes (the halves' sums row by row, as
numpy reduces axis 0; the same divisions): the two agree bitwise, and a device run
(array expressions) still equals a host run.

The anchor, site and cavity rows are the same for every chain in the pooled step (one
site for all chains), so row 0 stands for them.
"""

from __future__ import annotations

import numba
import numpy as np

from snep.maths.oracles import GUARD_SLACK
from snep.maths.scalar_ops import clip, maximum, minimum
from snep.state import ChainArrays, PassScalars

__all__ = ["damp_site_to_guard", "score_moments_host", "score_site_step"]

#: parameters per block: the halves' sums of a block (2 x 8 x BLOCK float64) stay in L1/L2
BLOCK = 256


def score_site_step(
    a: ChainArrays,
    grad: np.ndarray,
    acc: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    stats: np.ndarray,
    split: int,
    n_per_chain: int,
    rate: float,
    p: PassScalars,
    prec_min: float,
    out_prec: np.ndarray,
    out_pm: np.ndarray,
    n_threads: int = 1,
) -> None:
    """The pooled site step with the score control variate, from this sample and the
    accumulated ones, in one host pass (module docstring).

    Parameters
    ----------
    a : ChainArrays
        The worker's chain arrays (host, ``(C, P)``), before the fused pass moves ``x``.
        With ``acc`` given, ``a.acc_x`` and ``a.acc_x2`` hold the earlier samples' sums
        and are zeroed; without it they are not read.
    grad : ndarray (C, P)
        The minibatch log-likelihood gradient at ``a.x``.
    acc : (acc_g, acc_xg, acc_g2) or None
        The earlier samples' sums of ``g, x g, g^2`` (zeroed here), or None when this is
        the iteration's only sample (``n_per_chain = 1``).
    stats : ndarray (2, 3, P) float64
        The halves' running estimates (:func:`snep.algorithm.score.score_moments`),
        updated in place.
    split, n_per_chain, rate
        The first half's chain count, the samples per chain, the running average's rate.
    p : PassScalars
        The pass's scalars (``lik_scale``, ``inv_beta``, ``prec_floor``, ``site_step``,
        ``m_lo``, ``m_hi``, ``v_lo``).
    prec_min : float
        The site precision's floor (:func:`snep.algorithm.worker.site_precision_floor`).
    out_prec, out_pm : ndarray (P,)
        The new site, in the chain arrays' dtype.
    n_threads : int
        Threads (numba's, at most ``numba.get_num_threads()``; 0: all of them), each taking
        a contiguous run of blocks; the result is the same bitwise.
    """
    C, P = a.x.shape
    if acc is None and n_per_chain != 1:
        raise ValueError(
            f"score_site_step: n_per_chain={n_per_chain} without accumulators; the earlier "
            "samples' sums (acc) are needed when an iteration draws several samples"
        )
    if not 0 < split < C:
        raise ValueError(f"score_site_step: split={split} must leave chains in both halves of {C}")
    f = a.x.dtype.type
    empty = np.zeros((0, P), a.x.dtype)
    acc_x, acc_x2 = (a.acc_x, a.acc_x2) if acc is not None else (empty, empty)
    acc_g, acc_xg, acc_g2 = acc if acc is not None else (empty, empty, empty)
    eps = p.site_step / p.inv_beta  # power EP's step, as local_step_reference takes it
    guard_scale = p.inv_beta * (1.0 - GUARD_SLACK)
    excess = guard_scale - 1.0
    threads = numba.get_num_threads() if n_threads <= 0 else min(n_threads, numba.get_num_threads())
    n_blocks = (P + BLOCK - 1) // BLOCK
    parts = max(1, min(threads, n_blocks))
    args = (
        a.x, grad, a.anchor_prec[0], a.anchor_pm[0], a.site_prec[0], a.site_pm[0],
        a.cavity_prec[0], a.cavity_pm[0], acc is not None, acc_x, acc_x2, acc_g, acc_xg,
        acc_g2, f(p.lik_scale), f(p.inv_beta), f(p.prec_floor), f(GUARD_SLACK), stats, split,
        float(n_per_chain), float(rate), float(eps), float(p.m_lo), float(p.m_hi),
        1.0 / p.v_lo, float(p.prec_floor), guard_scale, excess, float(prec_min),
        out_prec, out_pm,
    )  # fmt: skip
    if parts > 1:
        _score_site_step_parallel(parts, *args)
    else:
        _score_site_step_serial(*args)


# The loops below vectorise (AVX-512 here) only when LLVM can prove their stores alias
# nothing they read with a few runtime checks: scratch is one flat float64 array per
# block, indexed with constant row offsets (rows of a 2-D array carry runtime strides,
# and one array per row needs a check per pair).  Measured at P = 545,810, 8 chains:
# the moments 13.5 -> 2.1 ms with the flat layout.
#: rows of the halves' sums per half: x, x^2, x*x, g, x g, x*g, g^2, g*g
N_SUMS = 8
#: rows of the block's work: mean, variance, then per half fresh (noise, var x, cov)
MEAN, VAR, FRESH = 0, 1, 2


@numba.njit(cache=True, error_model="numpy")
def _half_sums(
    x, grad, ap, apm, sp, spm, with_acc, acc_x, acc_x2, acc_g, acc_xg, acc_g2,
    lik_scale, inv_beta, prec_floor, slack, split, j0, nb, lam, shift, sums,
):  # fmt: skip  # pragma: no cover - compiled
    """Per half, the float64 sums over its chains of ``x, x^2, x*x, g, x g, x*g, g^2,
    g*g`` (the per-chain float32 sums of ``accumulate_score``, this sample added) for
    parameters ``[j0, j0 + nb)``, into ``sums`` (flat: half, then row, then parameter);
    ``lam`` and ``shift`` ``(BLOCK,)`` are scratch for the guarded precision and the
    tilted factor's shift, the same for every chain."""
    C = x.shape[0]
    f = x.dtype.type
    zero = f(0.0)
    for i in range(nb):
        j = j0 + i
        site_b = sp[j] * inv_beta
        lam_i = ap[j] - site_b
        lo = prec_floor - slack * site_b
        lam[i] = lo if lam_i < lo else lam_i  # as the pass guards: NaN stays NaN
        shift[i] = apm[j] - spm[j] * inv_beta
    for r in range(2 * N_SUMS * BLOCK):
        sums[r] = 0.0
    for c in range(C):
        o = (0 if c < split else N_SUMS) * BLOCK
        xr, gr = x[c, j0 : j0 + nb], grad[c, j0 : j0 + nb]
        if with_acc:  # a loop of its own: the accumulators' stores would stop the other
            _add_chain_acc(
                xr, gr, lam, shift, lik_scale, acc_x[c, j0 : j0 + nb], acc_x2[c, j0 : j0 + nb],
                acc_g[c, j0 : j0 + nb], acc_xg[c, j0 : j0 + nb], acc_g2[c, j0 : j0 + nb], o, nb,
                sums,
            )  # fmt: skip
            continue
        for i in range(nb):  # the accumulators' zero plus this sample (0 + v is v, but for -0)
            xv = xr[i]
            g = lik_scale * gr[i] + shift[i] - lam[i] * xv
            sx, sx2 = zero + xv, zero + xv * xv
            sg, sxg, sg2 = zero + g, zero + xv * g, zero + g * g
            _add_sums(sums, o, i, sx, sx2, sg, sxg, sg2)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _add_sums(sums, o, i, sx, sx2, sg, sxg, sg2):  # pragma: no cover - compiled
    """Add one chain's float32 sums of parameter ``i`` to its half's float64 sums."""
    sums[o + i] += np.float64(sx)
    sums[o + BLOCK + i] += np.float64(sx2)
    sums[o + 2 * BLOCK + i] += np.float64(sx * sx)
    sums[o + 3 * BLOCK + i] += np.float64(sg)
    sums[o + 4 * BLOCK + i] += np.float64(sxg)
    sums[o + 5 * BLOCK + i] += np.float64(sx * sg)
    sums[o + 6 * BLOCK + i] += np.float64(sg2)
    sums[o + 7 * BLOCK + i] += np.float64(sg * sg)


@numba.njit(cache=True, error_model="numpy")
def _add_chain_acc(xr, gr, lam, shift, lik_scale, ax, ax2, ag, axg, ag2, o, nb, sums):
    # pragma: no cover - compiled
    """One chain's block with the earlier samples' sums added (and zeroed)."""
    zero = xr.dtype.type(0.0)
    for i in range(nb):
        xv = xr[i]
        g = lik_scale * gr[i] + shift[i] - lam[i] * xv
        sx, sx2 = ax[i] + xv, ax2[i] + xv * xv
        sg, sxg, sg2 = ag[i] + g, axg[i] + xv * g, ag2[i] + g * g
        ax[i] = zero
        ax2[i] = zero
        ag[i] = zero
        axg[i] = zero
        ag2[i] = zero
        _add_sums(sums, o, i, sx, sx2, sg, sxg, sg2)


@numba.njit(cache=True, error_model="numpy")
def _acc_sums(acc_x, acc_x2, acc_g, acc_xg, acc_g2, split, j0, nb, sums):
    # pragma: no cover - compiled
    """The halves' float64 sums of parameters ``[j0, j0 + nb)`` from the accumulators
    alone (no new sample), zeroing ``acc_g``, ``acc_xg``, ``acc_g2`` as
    :func:`snep.algorithm.score.score_moments` does."""
    zero = acc_g.dtype.type(0.0)
    for r in range(2 * N_SUMS * BLOCK):
        sums[r] = 0.0
    for c in range(acc_x.shape[0]):
        o = (0 if c < split else N_SUMS) * BLOCK
        ax, ax2 = acc_x[c, j0 : j0 + nb], acc_x2[c, j0 : j0 + nb]
        ag, axg, ag2 = acc_g[c, j0 : j0 + nb], acc_xg[c, j0 : j0 + nb], acc_g2[c, j0 : j0 + nb]
        for i in range(nb):
            _add_sums(sums, o, i, ax[i], ax2[i], ag[i], axg[i], ag2[i])
            ag[i] = zero
            axg[i] = zero
            ag2[i] = zero


@numba.njit(cache=True, error_model="numpy")
def score_moments_host(
    acc_x, acc_x2, acc_g, acc_xg, acc_g2, anchor, stats, split, n, rate, mean_out, var_out
):  # fmt: skip  # pragma: no cover - compiled
    """:func:`snep.algorithm.score.score_moments` on the host (EP/SMS's window, whose
    samples are all in the accumulators): the same blocks as :func:`score_site_step`'s
    moments and running estimates, without the local step."""
    C, P = acc_x.shape
    sums = np.empty(2 * N_SUMS * BLOCK)
    work = np.empty((FRESH + 6) * BLOCK)
    for j0 in range(0, P, BLOCK):
        nb = min(BLOCK, P - j0)
        _acc_sums(acc_x, acc_x2, acc_g, acc_xg, acc_g2, split, j0, nb, sums)
        _moments(sums, stats, anchor, j0, nb, split, C - split, n, work)
        _update_running(stats, work, j0, nb, rate)
        for i in range(nb):
            mean_out[j0 + i] = work[MEAN * BLOCK + i]
            var_out[j0 + i] = work[VAR * BLOCK + i]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _half_moments(sums, o, i, noise, var_o, cov_o, anchor, cn, cnn, ratio, tiny):
    # pragma: no cover - compiled
    """One half's (sums at offset ``o``) corrected mean and variance terms and its fresh
    (noise, var x, cov), with the other half's running estimates (score.score_moments'
    arithmetic, in its order)."""
    mean_x = sums[o + i] / cn
    mean_x2, mean_m2 = sums[o + BLOCK + i] / cn, sums[o + 2 * BLOCK + i] / cnn
    var_x = (mean_x2 - mean_m2) + (mean_m2 - mean_x * mean_x) * ratio
    mean_g = sums[o + 3 * BLOCK + i] / cn
    mean_xg, mean_mm = sums[o + 4 * BLOCK + i] / cn, sums[o + 5 * BLOCK + i] / cnn
    cov = (mean_xg - mean_mm) + (mean_mm - mean_x * mean_g) * ratio
    curv = -cov_o / maximum(var_o, tiny)
    guess = curv if (curv > 0) & (curv < np.inf) else anchor  # finite and positive
    b = 1.0 / (guess + noise)
    a2 = 2.0 / (2.0 * guess + noise)
    m_h = mean_x + b * mean_g
    v_h = var_x + a2 * (1.0 + cov)
    mean_g2, mean_gg = sums[o + 6 * BLOCK + i] / cn, sums[o + 7 * BLOCK + i] / cnn
    var_g = (mean_g2 - mean_gg) + (mean_gg - mean_g * mean_g) * ratio
    explained = cov * cov / maximum(var_x, tiny)
    return m_h, v_h, maximum(var_g - explained, 0.0), var_x, cov


@numba.njit(cache=True, error_model="numpy")
def _moments(sums, stats, ap, j0, nb, n0, n1, n, work):  # pragma: no cover - compiled
    """The cross-fitted tilted mean and variance of parameters ``[j0, j0 + nb)`` from
    their halves' sums (``n0``, ``n1`` chains), each half's coefficients from the other
    half's running estimates, into ``work``'s rows ``MEAN`` and ``VAR``; the halves' fresh
    (noise, var x, cov) into its rows ``FRESH + 3 h + k``."""
    tiny = np.finfo(np.float64).tiny
    c0, c1 = float(n0), float(n1)
    C = c0 + c1
    cn0, cnn0, ratio0, share0 = c0 * n, c0 * n * n, c0 / (c0 - 1.0), c0 / C
    cn1, cnn1, ratio1, share1 = c1 * n, c1 * n * n, c1 / (c1 - 1.0), c1 / C
    noise0, var0, cov0 = (
        stats[0, 0, j0 : j0 + nb],
        stats[0, 1, j0 : j0 + nb],
        stats[0, 2, j0 : j0 + nb],
    )
    noise1, var1, cov1 = (
        stats[1, 0, j0 : j0 + nb],
        stats[1, 1, j0 : j0 + nb],
        stats[1, 2, j0 : j0 + nb],
    )
    w0, w1 = (FRESH + 0) * BLOCK, (FRESH + 3) * BLOCK
    for i in range(nb):
        anchor = np.float64(ap[j0 + i])
        m0, v0, work[w0 + i], work[w0 + BLOCK + i], work[w0 + 2 * BLOCK + i] = _half_moments(
            sums, 0, i, noise1[i], var1[i], cov1[i], anchor, cn0, cnn0, ratio0, tiny
        )
        m1, v1, work[w1 + i], work[w1 + BLOCK + i], work[w1 + 2 * BLOCK + i] = _half_moments(
            sums, N_SUMS * BLOCK, i, noise0[i], var0[i], cov0[i], anchor, cn1, cnn1, ratio1, tiny
        )
        work[MEAN * BLOCK + i] = (0.0 + share0 * m0) + share1 * m1
        work[VAR * BLOCK + i] = maximum((0.0 + share0 * v0) + share1 * v1, 0.0)


@numba.njit(cache=True, error_model="numpy")
def _update_running(stats, work, j0, nb, rate):  # pragma: no cover - compiled
    """The halves' running estimates move towards their fresh values at ``rate`` (take
    them while there are none: noise ``inf``)."""
    for h in range(2):
        first = stats[h, 0, j0 : j0 + nb]
        for k in (2, 1, 0):  # the noise row, which says "none yet", last
            old = stats[h, k, j0 : j0 + nb]
            new = work[(FRESH + 3 * h + k) * BLOCK : (FRESH + 3 * h + k + 1) * BLOCK]
            for i in range(nb):
                old[i] = new[i] if np.isinf(first[i]) else (1.0 - rate) * old[i] + rate * new[i]


@numba.njit(cache=True, inline="always", error_model="numpy")
def _guard_cap(anchor, c_prec, prec_floor, guard_scale, excess):  # pragma: no cover - compiled
    """oracles.guard_cap of one parameter (``guard_scale = inv_beta (1 - GUARD_SLACK)``,
    ``excess = guard_scale - 1``)."""
    cap = (anchor - prec_floor) / guard_scale
    if excess > 0:
        cap = minimum(cap, (c_prec - prec_floor) / excess)
    return cap


@numba.njit(cache=True, error_model="numpy")
def _local_step(
    work, ap, sp, spm, cp, cpm, j0, nb, eps, m_lo, m_hi, prec_max0, prec_floor,
    guard_scale, excess, prec_min, out_prec, out_pm,
):  # fmt: skip  # pragma: no cover - compiled
    """The step on the local posterior towards ``work``'s (mean, variance) for parameters
    ``[j0, j0 + nb)`` (oracles.local_step_reference with var_hat and the guard's cap),
    in float64."""
    for i in range(nb):
        j = j0 + i
        c_prec, c_pm = np.float64(cp[j]), np.float64(cpm[j])
        v = 1.0 / (c_prec + np.float64(sp[j]))
        m = (c_pm + np.float64(spm[j])) * v
        v_new = (1.0 - eps) * v + eps * work[VAR * BLOCK + i]
        m_new = clip(m + eps * (work[MEAN * BLOCK + i] - m), m_lo, m_hi)
        cap = _guard_cap(np.float64(ap[j]), c_prec, prec_floor, guard_scale, excess)
        prec_max = minimum(prec_max0, maximum(cap, prec_min))
        prec = clip(1.0 / v_new - c_prec, prec_min, prec_max)
        out_prec[j] = prec
        out_pm[j] = m_new * (c_prec + prec) - c_pm


@numba.njit(cache=True, error_model="numpy")
def _blocks(
    b0, b1, x, grad, ap, apm, sp, spm, cp, cpm, with_acc, acc_x, acc_x2, acc_g, acc_xg, acc_g2,
    lik_scale, inv_beta, prec_floor32, slack, stats, split, n, rate, eps, m_lo, m_hi,
    prec_max0, prec_floor, guard_scale, excess, prec_min, out_prec, out_pm,
):  # fmt: skip  # pragma: no cover - compiled
    """Blocks ``[b0, b1)`` of BLOCK parameters, one after the other, with their scratch."""
    C, P = x.shape
    sums = np.empty(2 * N_SUMS * BLOCK)
    work = np.empty((FRESH + 6) * BLOCK)
    lam = np.empty(BLOCK, x.dtype)
    shift = np.empty(BLOCK, x.dtype)
    for b in range(b0, b1):
        j0 = b * BLOCK
        nb = min(BLOCK, P - j0)
        _half_sums(
            x, grad, ap, apm, sp, spm, with_acc, acc_x, acc_x2, acc_g, acc_xg, acc_g2,
            lik_scale, inv_beta, prec_floor32, slack, split, j0, nb, lam, shift, sums,
        )  # fmt: skip
        _moments(sums, stats, ap, j0, nb, split, C - split, n, work)
        _update_running(stats, work, j0, nb, rate)
        _local_step(
            work, ap, sp, spm, cp, cpm, j0, nb, eps, m_lo, m_hi, prec_max0, prec_floor,
            guard_scale, excess, prec_min, out_prec, out_pm,
        )  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def _score_site_step_serial(*args):  # pragma: no cover - compiled
    """Every block, one after the other."""
    _blocks(0, (args[0].shape[1] + BLOCK - 1) // BLOCK, *args)


@numba.njit(cache=True, error_model="numpy", parallel=True)
def _score_site_step_parallel(parts, *args):  # pragma: no cover - compiled
    """Every block, in ``parts`` contiguous runs of blocks, one per thread; each
    parameter's arithmetic is the same whatever the split.  (A function of its own, not
    the serial one compiled with ``parallel=True``: numba's cache index is named after
    the function and does not record the flag, so the two would share one entry.)"""
    n_blocks = (args[0].shape[1] + BLOCK - 1) // BLOCK
    for t in numba.prange(parts):
        _blocks(t * n_blocks // parts, (t + 1) * n_blocks // parts, *args)


def damp_site_to_guard(a: ChainArrays, p: PassScalars, prec_min: float) -> None:
    """After a reply: the site's precision down to the guard's cap where it exceeds it
    (at least ``prec_min``), keeping the local posterior's mean, in one host pass over
    row 0, written to every chain's row (what ``SnepWorker._damp_site_to_guard`` does with
    array expressions, bitwise)."""
    guard_scale = p.inv_beta * (1.0 - GUARD_SLACK)
    prec, pm = np.empty_like(a.site_prec[0]), np.empty_like(a.site_pm[0])
    _damp_to_guard_host(
        a.anchor_prec[0], a.site_prec[0], a.site_pm[0], a.cavity_prec[0], a.cavity_pm[0],
        float(p.prec_floor), guard_scale, guard_scale - 1.0, float(prec_min), prec, pm,
    )  # fmt: skip
    a.site_prec[...] = prec
    a.site_pm[...] = pm


@numba.njit(cache=True, error_model="numpy")
def _damp_to_guard_host(
    ap, sp, spm, cp, cpm, prec_floor, guard_scale, excess, prec_min, out_prec, out_pm
):  # fmt: skip  # pragma: no cover - compiled
    for j in range(ap.shape[0]):
        c_prec, c_pm = np.float64(cp[j]), np.float64(cpm[j])
        s_prec, s_pm = np.float64(sp[j]), np.float64(spm[j])
        cap = maximum(
            _guard_cap(np.float64(ap[j]), c_prec, prec_floor, guard_scale, excess), prec_min
        )
        m = (c_pm + s_pm) / (c_prec + s_prec)
        over = s_prec > cap
        prec = cap if over else s_prec
        out_prec[j] = prec
        out_pm[j] = m * (c_prec + prec) - c_pm if over else s_pm
