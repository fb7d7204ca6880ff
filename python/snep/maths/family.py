"""Diagonal Gaussians in natural parameters (docs/method.md §1.2).

A factor is a pair of arrays: ``precision`` (Lambda = 1 / v) and
``precision_mean`` (h = Lambda m), the natural parameters for the statistics
``s(x) = (x, x^2)`` up to sign and scale conventions, which differ between
papers; the descriptive names avoid them.  Products of factors add natural
parameters and quotients subtract them, which is what EP and SNEP do with
sites and cavities (Hasenclever et al. 2017; Minka 2001).  Mean parameters are
``(m, m^2 + v)``.  Pure functions on arrays of any shape; no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "DiagGaussian",
    "divide",
    "from_mean_params",
    "from_moments",
    "grad_log_density",
    "is_proper",
    "log_density",
    "mean_params",
    "moments",
    "product",
    "project",
]


class DiagGaussian(NamedTuple):
    """Natural parameters of a diagonal Gaussian factor (may be improper)."""

    precision: np.ndarray
    precision_mean: np.ndarray


def product(*factors: DiagGaussian) -> DiagGaussian:
    """Product of factors: the sum of their natural parameters."""
    if not factors:
        raise ValueError("product() needs at least one factor")
    prec = sum((f.precision for f in factors[1:]), start=np.asarray(factors[0].precision))
    pm = sum((f.precision_mean for f in factors[1:]), start=np.asarray(factors[0].precision_mean))
    return DiagGaussian(prec, pm)


def divide(a: DiagGaussian, b: DiagGaussian) -> DiagGaussian:
    """Quotient ``a / b``: the difference of natural parameters (may be improper)."""
    return DiagGaussian(a.precision - b.precision, a.precision_mean - b.precision_mean)


def is_proper(f: DiagGaussian) -> bool:
    """True when every precision is strictly positive and finite."""
    p = np.asarray(f.precision)
    return bool(np.all(np.isfinite(p)) and np.all(p > 0))


def moments(f: DiagGaussian) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a proper factor."""
    var = 1.0 / f.precision
    return f.precision_mean * var, var


def from_moments(mean: np.ndarray, var: np.ndarray) -> DiagGaussian:
    """Natural parameters of N(mean, var)."""
    prec = 1.0 / np.asarray(var)
    return DiagGaussian(prec, np.asarray(mean) * prec)


def mean_params(f: DiagGaussian) -> tuple[np.ndarray, np.ndarray]:
    """Mean parameters ``(E[x], E[x^2]) = (m, m^2 + v)``."""
    m, v = moments(f)
    return m, m * m + v


def from_mean_params(mu1: np.ndarray, mu2: np.ndarray) -> DiagGaussian:
    """Natural parameters from mean parameters; needs ``mu2 > mu1^2``."""
    return from_moments(mu1, mu2 - mu1 * mu1)


def project(
    mu1: np.ndarray,
    mu2: np.ndarray,
    m_lo: float = -10.0,
    m_hi: float = 10.0,
    v_lo: float = 1e-2,
    v_hi: float = 1e2,
) -> DiagGaussian:
    """SNEP's ``Proj``: clip the mean to ``[m_lo, m_hi]`` and the variance to
    ``[v_lo, v_hi]``; the result is always proper."""
    var = np.clip(mu2 - mu1 * mu1, v_lo, v_hi)
    mean = np.clip(mu1, m_lo, m_hi)
    return from_moments(mean, var)


def log_density(f: DiagGaussian, x: np.ndarray) -> np.ndarray:
    """Normalised log density of a proper factor at ``x``, summed over the last axis."""
    m, v = moments(f)
    return -0.5 * np.sum(np.log(2 * np.pi * v) + (x - m) ** 2 / v, axis=-1)


def grad_log_density(f: DiagGaussian, x: np.ndarray) -> np.ndarray:
    """Gradient ``h - Lambda x`` of the log density (also valid for improper factors)."""
    return f.precision_mean - f.precision * x
