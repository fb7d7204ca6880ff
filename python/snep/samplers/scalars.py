"""Scalars of one fused sampler/site pass, shared by every backend.

Mirrors ``struct FusedParams`` in ``kernels/snep_fused.cuh`` field for field;
the numpy oracle reads this dataclass directly and the compiled backends copy
it into the native struct.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["PassScalars", "SamplerKind"]


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
