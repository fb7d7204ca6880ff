"""The small interface every compute backend implements (docs/method.md §2).

Backends whose arrays live on a device (``cuda``) also define ``xp`` (their array
module, e.g. CuPy), ``to_host(a)`` (a numpy copy), ``to_device(a, dtype)`` and
``take_fired()`` (the guard count accumulated on the device, read only at syncs);
host backends need none of them: :func:`array_module`, :func:`to_host`,
:func:`to_device` and :func:`is_host` supply the numpy defaults.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from snep.errors import ConfigError
from snep.model.spec import ParamSpec
from snep.samplers.reference import ChainArrays
from snep.samplers.scalars import PassScalars, SamplerKind

__all__ = [
    "Backend",
    "MLPKernels",
    "array_module",
    "is_host",
    "require_graph_capture",
    "to_device",
    "to_host",
]


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


def array_module(backend: Any) -> Any:
    """The array module of ``backend``'s arrays (numpy unless it defines ``xp``)."""
    return getattr(backend, "xp", np)


def is_host(backend: Any) -> bool:
    """Whether ``backend``'s arrays are numpy arrays in host memory."""
    return array_module(backend) is np


def to_host(backend: Any, a: Any) -> np.ndarray:
    """``a`` (an array of ``backend``) as a numpy array (a view when already on the host)."""
    f = getattr(backend, "to_host", None)
    return np.asarray(a) if f is None else f(a)


def to_device(backend: Any, a: Any, dtype: Any = None) -> Any:
    """``a`` (host or device) as an array of ``backend`` (of ``dtype`` when given)."""
    f = getattr(backend, "to_device", None)
    return np.asarray(a, dtype) if f is None else f(a, dtype)


def require_graph_capture(backend: Any) -> None:
    """Raise :class:`ConfigError` unless ``backend`` captures CUDA graphs (``train.cuda_graph``;
    such a backend has ``step_inputs``, ``run_eager``, ``capture`` and
    ``fused_step_device_params``, see :mod:`snep.backends.cuda_graph`)."""
    if is_host(backend) or not hasattr(backend, "capture"):
        name = getattr(backend, "name", type(backend).__name__)
        raise ConfigError(
            "train.cuda_graph = true needs a device backend that captures CUDA graphs "
            f"(cuda); the backend is {name!r}. Use --backend cuda, or set "
            "train.cuda_graph = false"
        )
