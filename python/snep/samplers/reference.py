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

from dataclasses import dataclass
from typing import Any

import numpy as np

from snep.samplers.scalars import PassScalars, SamplerKind

__all__ = ["ChainArrays", "fused_step_reference", "reply_update_reference"]


@dataclass
class ChainArrays:
    """Per-chain arrays of a worker, each of shape (n_chains, P).

    ``s1``/``s2`` are the sampler state: pSGLD's running mean square in ``s1``;
    SGHMC's momentum in ``s1``; Adam's first and second moments in ``s1`` and
    ``s2``.  ``acc_x``/``acc_x2`` accumulate the samples' moments.
    """

    x: np.ndarray
    anchor_prec: np.ndarray
    anchor_pm: np.ndarray
    site_prec: np.ndarray
    site_pm: np.ndarray
    cavity_prec: np.ndarray
    cavity_pm: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    acc_x: np.ndarray
    acc_x2: np.ndarray

    @classmethod
    def zeros(
        cls, n_chains: int, n_params: int, dtype: type = np.float32, xp: Any = np
    ) -> ChainArrays:
        """All-zero arrays of array module ``xp`` (precisions must be filled before use)."""
        return cls(*(xp.zeros((n_chains, n_params), dtype) for _ in range(11)))

    @classmethod
    def random(
        cls, rng: np.random.Generator, n_chains: int, n_params: int, dtype: type = np.float32
    ) -> ChainArrays:
        """A random proper worker state for tests and checks: about 5% of the
        elements have a negative tilted precision, so the guard fires there."""
        c, p = n_chains, n_params
        a = cls.zeros(c, p, dtype)
        a.x[...] = rng.normal(0, 1, (c, p))
        a.site_prec[...] = rng.uniform(0.5, 20, (c, p))
        a.site_pm[...] = a.site_prec * rng.normal(0, 1, (c, p))
        a.cavity_prec[...] = rng.uniform(1, 50, (c, p))
        a.cavity_pm[...] = a.cavity_prec * rng.normal(0, 1, (c, p))
        a.anchor_prec[...] = a.cavity_prec + a.site_prec
        bad = rng.random((c, p)) < 0.05
        a.anchor_prec[bad] = 0.5 * a.site_prec[bad]
        a.anchor_pm[...] = a.cavity_pm + a.site_pm
        a.s1[...] = rng.uniform(0.0, 2.0, (c, p))
        a.s2[...] = rng.uniform(0.1, 2.0, (c, p))
        a.acc_x[...] = rng.normal(0, 1, (c, p))
        a.acc_x2[...] = a.acc_x**2 + rng.uniform(0, 1, (c, p))
        return a

    def astype(self, dtype: type) -> ChainArrays:
        """A copy with every array converted to ``dtype``."""
        return ChainArrays(*(np.array(a, dtype=dtype) for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays in field order."""
        return (
            self.x,
            self.anchor_prec,
            self.anchor_pm,
            self.site_prec,
            self.site_pm,
            self.cavity_prec,
            self.cavity_pm,
            self.s1,
            self.s2,
            self.acc_x,
            self.acc_x2,
        )


def fused_step_reference(
    kind: SamplerKind, a: ChainArrays, grad: np.ndarray, noise: np.ndarray, p: PassScalars
) -> int:
    """One fused pass in float64, in place on ``a``; returns how often the guard fired."""
    ap, apm = a.anchor_prec, a.anchor_pm
    sp, spm = a.site_prec.copy(), a.site_pm.copy()
    lam_eta = ap - sp * p.inv_beta
    h_eta = apm - spm * p.inv_beta
    fired = lam_eta < p.prec_floor
    lam_eta = np.where(fired, p.prec_floor, lam_eta)
    h_eta = np.where(fired, p.prec_floor * (apm / ap), h_eta)
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
            drift = drift + G * G * (1.0 - p.rms_decay) * g * lam_eta / (sv + 1e-30)
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
        loc_var = 1.0 / (a.cavity_prec + sp)
        loc_mean = (a.cavity_pm + spm) * loc_var
        site_var = 1.0 / sp
        site_mean = spm * site_var
        g1 = site_mean + p.site_step * (sx - loc_mean)
        g2 = site_mean**2 + site_var + p.site_step * (sx2 - (loc_mean**2 + loc_var))
        var = np.clip(g2 - g1 * g1, p.v_lo, p.v_hi)
        mean = np.clip(g1, p.m_lo, p.m_hi)
        a.site_prec[...] = 1.0 / var
        a.site_pm[...] = mean / var
    return int(fired.sum())


def reply_update_reference(
    a: ChainArrays,
    theta_prec: np.ndarray,
    theta_pm: np.ndarray,
    sent_prec: np.ndarray,
    sent_pm: np.ndarray,
    scale_momentum: bool,
    xp: Any = np,
) -> None:
    """A server reply, in place (oracle of ``reply_update`` in kernels/snep_fused.cuh).

    The cavity becomes ``theta - sent``, the anchor moves with the cavity, and the
    chain is shifted to keep its standardised position under the local posterior
    ``cavity + site``: ``x <- m_new + sqrt(v_new / v_old) (x - m_old)`` (DESIGN §1.3);
    with ``scale_momentum`` (SGHMC) the momentum is scaled by the same factor.
    ``xp`` is the array module of the arrays (numpy; CuPy for the ``cuda`` backend, which
    runs this same code on the device).
    """
    old_prec = a.cavity_prec + a.site_prec
    old_mean = (a.cavity_pm + a.site_pm) / old_prec
    new_cp = theta_prec - sent_prec
    new_cpm = theta_pm - sent_pm
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
