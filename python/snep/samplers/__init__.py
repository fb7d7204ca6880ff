"""SG-MCMC samplers and the fused worker pass (docs/method.md §1.5)."""

from __future__ import annotations

from snep.samplers.noise import NOISE_STREAM_SAMPLER, philox4x32_10, reference_normals
from snep.samplers.reference import ChainArrays, fused_step_reference
from snep.samplers.scalars import PassScalars, SamplerKind

__all__ = [
    "NOISE_STREAM_SAMPLER",
    "ChainArrays",
    "PassScalars",
    "SamplerKind",
    "fused_step_reference",
    "philox4x32_10",
    "reference_normals",
]
