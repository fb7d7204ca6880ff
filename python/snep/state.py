"""The state a worker's fused pass reads and writes: the per-chain arrays
(:class:`ChainArrays`), the pass's scalars (:class:`PassScalars`) and the sampler kinds.

The scalars of one fused sampler/site pass are shared by every backend.

Mirrors ``struct FusedParams`` in ``kernels/snep_fused.cuh`` field for field;
the numpy oracle reads this dataclass directly and the compiled backends copy
it into the native struct.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

__all__ = ["ChainArrays", "PassScalars", "SamplerKind"]


class SamplerKind(IntEnum):
    """SG-MCMC rules of docs/method.md §1.5 (values match ``enum SamplerKind`` in C++)."""

    SGLD = 0  #: Welling & Teh (2011)
    PSGLD = 1  #: Li, Chen, Carlson & Carin (2016), RMSprop preconditioner
    SGHMC = 2  #: Chen, Fox & Guestrin (2014), momentum form with friction
    ADAM_SGLD = 3  #: Adam-preconditioned Langevin of the SNEP reference code


@dataclass
class PassScalars:
    """Scalars of one pass; see ``kernels/snep_fused.cuh`` for the maths."""

    lik_scale: float = 1.0
    inv_beta: float = 1.0
    prec_floor: float = 1e-3
    step_size: float = 1e-3
    noise_scale: float = 1.0
    rms_decay: float = 0.99
    rms_eps: float = 1e-5
    friction: float = 0.1
    beta1: float = 0.0
    beta2: float = 0.999
    adam_eps: float = 1e-8
    bias_corr1: float = 1.0  # 1 - beta1^t (so 1 when beta1 = 0)
    bias_corr2: float = 1.0  # Adam: 1 - beta2^t; pSGLD: 1 - rms_decay^t
    kappa: float = 1.0
    gamma_term: int = 0
    accumulate: int = 0
    update_site: int = 1
    inv_n_acc: float = 0.0
    site_step: float = 0.02
    m_lo: float = -10.0
    m_hi: float = 10.0
    v_lo: float = 1e-2
    v_hi: float = 1e2
    seed: int = 0
    step: int = 0
    stream: int = 0

    def set_step(self, kind: SamplerKind, t: int) -> None:
        """Step ``t`` (1-based) of a chain: the noise counter and the bias corrections
        ``1 - beta1^t`` and ``1 - decay^t``, with decay = pSGLD's ``rms_decay`` or
        Adam's ``beta2``."""
        self.step = t
        self.bias_corr1 = 1.0 - self.beta1**t
        decay2 = self.rms_decay if kind == SamplerKind.PSGLD else self.beta2
        self.bias_corr2 = 1.0 - decay2**t


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
