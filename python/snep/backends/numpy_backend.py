"""The ``numpy`` backend: the float64 oracle, plain and obvious (slow)."""

from __future__ import annotations

import numpy as np

from snep.maths.noise import reference_normals
from snep.maths.oracles import fused_step_reference, reply_update_reference
from snep.model import mlp_numpy
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["NumpyBackend"]


class _NumpyMLP:
    def __init__(self, spec: ParamSpec) -> None:
        self.spec = spec

    def loglik_and_grad(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> np.ndarray:
        loglik, grad = mlp_numpy.loglik_and_grad(self.spec, params, x, y)
        grad_out[...] = grad
        return loglik

    def predict_proba(self, params: np.ndarray, x: np.ndarray) -> np.ndarray:
        return mlp_numpy.predict_proba(self.spec, params, x)


class NumpyBackend:
    """Float64 reference backend; every other backend is tested against it."""

    name = "numpy"
    dtype = np.float64

    def mlp(self, spec: ParamSpec, n_chains: int, batch_size: int) -> _NumpyMLP:
        return _NumpyMLP(spec)

    def fused_step(
        self,
        kind: SamplerKind,
        arrays: ChainArrays,
        grad: np.ndarray,
        scalars: PassScalars,
        noise: np.ndarray | None = None,
    ) -> int:
        if noise is None:
            c, p = arrays.x.shape
            noise = reference_normals(c, p, scalars.seed, scalars.stream, scalars.step)
        return fused_step_reference(kind, arrays, grad, noise, scalars)

    def normals(
        self, n_chains: int, n_params: int, seed: int, stream: int, step: int
    ) -> np.ndarray:
        return reference_normals(n_chains, n_params, seed, stream, step)

    def apply_reply(
        self,
        arrays: ChainArrays,
        cavity: tuple[np.ndarray, np.ndarray],
        scale_momentum: bool,
    ) -> None:
        reply_update_reference(arrays, cavity[0], cavity[1], scale_momentum)
