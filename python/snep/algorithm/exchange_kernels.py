"""The per-message passes of both ends of the exchange, fused (Hasenclever et al. 2017,
§"The posterior server"; docs/method.md §1.4, docs/architecture.md "The exchange").

A worker's push (:func:`make_delta`): ``Delta = lambda_i - lambda_i^sent`` in float64,
rounded to the wire's dtype, and the new ``lambda_i^sent = lambda_i^sent + Delta_rounded``
(what the server will hold), in one pass over the float32 site, where numpy takes eight.

One push from worker ``i`` is ``theta += Delta``, ``lambda_i += Delta`` and the reply
``c_i = theta - lambda_i`` (the cavity the worker needs, rounded to the wire's dtype),
plus, in the run's last part, the running averages of the posterior's variance and
mean.  Written as numpy statements these are nine passes over P float64 values and a
copy into the message; here they are one pass, writing the reply where the transport
sends it from, after a finiteness check of the delta (a rejected push must leave the
state untouched, so the check cannot ride along).

The arithmetic is IEEE (no fast-math, except the reassociated sum of the finiteness
check); the in-process runner and the MPI transport call these functions alike, so a
synchronous MPI run equals the in-process run bitwise.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "apply_push",
    "apply_push_average",
    "cavity",
    "delta_is_finite",
    "make_delta",
    "start_average",
]


@numba.njit(cache=True, nogil=True)
def make_delta(
    site: np.ndarray, sent: np.ndarray, delta_wire: np.ndarray, new_sent: np.ndarray
) -> None:
    """``delta_wire = wire(site - sent)`` (the difference in float64, then rounded to
    ``delta_wire``'s dtype) and ``new_sent = sent + delta_wire`` (float64), in one pass.

    ``site`` is the worker's site (float32 or float64), ``sent`` and ``new_sent`` float64
    (distinct arrays), ``delta_wire`` the push's array in the wire's dtype.
    """
    for i in range(site.size):
        s = sent[i]
        d = np.float64(site[i]) - s
        delta_wire[i] = d
        new_sent[i] = s + np.float64(delta_wire[i])


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def delta_is_finite(d_prec: np.ndarray, d_pm: np.ndarray) -> bool:
    """True when every entry of both arrays is finite.

    One float64 sum of both arrays (reassociated, so that it vectorises: any NaN or
    infinity still reaches the sum); only when it is not finite (a NaN or an infinity,
    or, for float64 deltas near the top of their range, an overflow of the sum) are the
    entries tested one by one.
    """
    total = 0.0
    for i in range(d_prec.size):
        total += d_prec[i]
        total += d_pm[i]
    if np.isfinite(total):
        return True
    for i in range(d_prec.size):
        if not (np.isfinite(d_prec[i]) and np.isfinite(d_pm[i])):
            return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _push_one(
    i: int,
    theta_prec: np.ndarray,
    theta_pm: np.ndarray,
    site_prec: np.ndarray,
    site_pm: np.ndarray,
    d_prec: np.ndarray,
    d_pm: np.ndarray,
    cav_prec: np.ndarray,
    cav_pm: np.ndarray,
) -> tuple[float, float]:
    """Parameter ``i`` of :func:`apply_push`; its new ``(theta_prec, theta_pm)``."""
    dp = np.float64(d_prec[i])
    dm = np.float64(d_pm[i])
    tp = theta_prec[i] + dp
    tm = theta_pm[i] + dm
    sp = site_prec[i] + dp
    sm = site_pm[i] + dm
    theta_prec[i] = tp
    theta_pm[i] = tm
    site_prec[i] = sp
    site_pm[i] = sm
    cav_prec[i] = tp - sp
    cav_pm[i] = tm - sm
    return tp, tm


@numba.njit(cache=True, nogil=True)
def apply_push(
    theta_prec: np.ndarray,
    theta_pm: np.ndarray,
    site_prec: np.ndarray,
    site_pm: np.ndarray,
    d_prec: np.ndarray,
    d_pm: np.ndarray,
    cav_prec: np.ndarray,
    cav_pm: np.ndarray,
) -> None:
    """``theta += d``, ``site += d`` and ``cav = theta - site`` (cast to ``cav``'s dtype)
    in one pass.

    ``theta`` and ``site`` are float64; ``d`` is the wire's dtype (added in float64,
    exactly).
    """
    for i in range(theta_prec.size):
        _push_one(i, theta_prec, theta_pm, site_prec, site_pm, d_prec, d_pm, cav_prec, cav_pm)


@numba.njit(cache=True, nogil=True)
def apply_push_average(
    theta_prec: np.ndarray,
    theta_pm: np.ndarray,
    site_prec: np.ndarray,
    site_pm: np.ndarray,
    d_prec: np.ndarray,
    d_pm: np.ndarray,
    cav_prec: np.ndarray,
    cav_pm: np.ndarray,
    avg_var: np.ndarray,
    avg_mean: np.ndarray,
    weight: float,
) -> None:
    """:func:`apply_push`, and the running moments in the same pass:
    ``avg_var += (v - avg_var) w``, ``avg_mean += (theta_pm v - avg_mean) w`` with
    ``v = 1/theta_prec`` (float64; ``w`` = 1 / the number of averaged pushes)."""
    for i in range(theta_prec.size):
        tp, tm = _push_one(
            i, theta_prec, theta_pm, site_prec, site_pm, d_prec, d_pm, cav_prec, cav_pm
        )
        var = 1.0 / tp  # one division: the mean is tm * var, as start_average has it
        v = avg_var[i]
        avg_var[i] = v + (var - v) * weight
        m = avg_mean[i]
        avg_mean[i] = m + (tm * var - m) * weight


@numba.njit(cache=True, nogil=True)
def cavity(
    theta_prec: np.ndarray,
    theta_pm: np.ndarray,
    site_prec: np.ndarray,
    site_pm: np.ndarray,
    cav_prec: np.ndarray,
    cav_pm: np.ndarray,
) -> None:
    """``cav = theta - site``, computed in float64 and cast to ``cav``'s dtype."""
    for i in range(theta_prec.size):
        cav_prec[i] = theta_prec[i] - site_prec[i]
        cav_pm[i] = theta_pm[i] - site_pm[i]


def start_average(theta_prec: np.ndarray, theta_pm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first averaged moments: ``(1/theta_prec, theta_pm/theta_prec)`` as the numpy
    statements of the running update compute them (``theta_pm * (1/theta_prec)``)."""
    var = 1.0 / theta_prec
    return var, theta_pm * var
