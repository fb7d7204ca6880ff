"""The posterior server's per-push pass, fused (Hasenclever et al. 2017, §"The posterior
server"; docs/method.md §1.4, docs/architecture.md "The exchange").

One push from worker ``i`` is ``theta += Delta``, ``lambda_i += Delta`` and the reply
``c_i = theta - lambda_i`` (the cavity the worker needs, rounded to the wire's dtype),
plus, in the run's last part, the running averages of the posterior's variance and
mean.  Written as numpy statements these are nine passes over P float64 values; here
they are one pass after a finiteness check of the delta (a rejected push must leave the
state untouched, so the check cannot ride along).

The arithmetic is that of the numpy statements it replaces, operation for operation
(IEEE, no fast-math), so that the result is bitwise the same: the in-process runner and
the MPI transport call these functions alike.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["apply_push", "cavity", "delta_is_finite", "start_average"]


@numba.njit(cache=True, nogil=True)
def delta_is_finite(d_prec: np.ndarray, d_pm: np.ndarray) -> bool:
    """True when every entry of both arrays is finite.

    One float64 sum of both arrays; only when it is not finite (a NaN or an infinity, or,
    for float64 deltas near the top of their range, an overflow of the sum) are the
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
    avg_var: np.ndarray,
    avg_mean: np.ndarray,
    avg_weight: float,
) -> None:
    """``theta += d``, ``site += d``, ``cav = theta - site`` (cast to ``cav``'s dtype) and,
    when ``avg_weight > 0``, ``avg_var += (1/theta_prec - avg_var) w`` and
    ``avg_mean += (theta_pm/theta_prec - avg_mean) w``, in one pass.

    ``theta``, ``site`` and the averages are float64; ``d`` is the wire's dtype (added in
    float64, exactly); ``avg_var``/``avg_mean`` may be empty when ``avg_weight == 0``.
    """
    w = avg_weight
    for i in range(theta_prec.size):
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
        if w > 0.0:
            v = avg_var[i]
            avg_var[i] = v + (1.0 / tp - v) * w
            m = avg_mean[i]
            avg_mean[i] = m + (tm / tp - m) * w


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
