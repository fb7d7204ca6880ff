"""Accumulation of the score control variate's sums (one pass over the chains).

Before a fused pass moves the chains, the worker adds, per chain and parameter, the
sample ``x``, ``x^2``, the gradient ``g`` of the log tilted density at ``x`` and
``x g`` and ``g^2`` to its accumulators, from which
:func:`snep.samplers.reference.score_corrected_moments` forms the tilted moments.
``g`` is the fused pass's own (``kernels/snep_fused.cuh``, step 1): the minibatch
log-likelihood gradient scaled by ``lik_scale`` plus the Gaussian factor ``anchor -
site / beta`` with its precision guarded as the pass guards it.

On the host one ``numba.njit`` loop reads each array once; on a device the same
arithmetic runs as array expressions of the backend's module (CuPy).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from snep.samplers.reference import GUARD_SLACK, ChainArrays
from snep.samplers.scalars import PassScalars

__all__ = ["accumulate_score"]


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
