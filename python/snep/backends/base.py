"""The small interface every compute backend implements (DESIGN §2)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from snep.model.spec import ParamSpec
from snep.samplers.reference import ChainArrays
from snep.samplers.scalars import PassScalars, SamplerKind

__all__ = ["Backend", "MLPKernels"]


class MLPKernels(Protocol):
    """Batched MLP forward/backward with preallocated workspaces."""

    def loglik_and_grad(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> np.ndarray:
        """Sum of log p(y|x) per chain (C,) and its gradient written into ``grad_out`` (C, P)."""
        ...

    def predict_proba(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Class probabilities (C, N, K) for inputs (N, D) shared by all chains."""
        ...


class Backend(Protocol):
    """A compute backend: array dtype, MLP kernels, the fused pass and its noise."""

    name: str
    dtype: type

    def mlp(self, spec: ParamSpec, n_chains: int, batch_size: int) -> MLPKernels:
        """MLP kernels for ``n_chains`` chains and minibatches of ``batch_size``."""
        ...

    def fused_step(
        self,
        kind: SamplerKind,
        arrays: ChainArrays,
        grad: np.ndarray,
        scalars: PassScalars,
        noise: np.ndarray | None = None,
    ) -> int:
        """One fused sampler/moment/site pass in place; returns the guard count."""
        ...

    def normals(
        self, n_chains: int, n_params: int, seed: int, stream: int, step: int
    ) -> np.ndarray:
        """The standard normals the fused pass draws for (seed, stream, step)."""
        ...
