"""The interfaces of the compute backends (docs/method.md §2), complete.

:class:`Backend` is what every backend implements (``numpy``, ``cpu``, ``cuda``).
:class:`DeviceBackend` adds what a backend whose arrays live on a device (``cuda``)
implements: ``xp`` (its array module, e.g. CuPy), the host/device copies, the guard
count kept on the device, and the staged, capturable iteration
(:mod:`snep.backends.cuda.graph`).  Code asks ``isinstance(backend, DeviceBackend)``
(:func:`is_device`), never for single attributes; host backends need none of it:
:func:`array_module`, :func:`to_host`, :func:`to_device` and :func:`is_host` supply the
numpy defaults.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from snep.errors import ConfigError
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = [
    "Backend",
    "DeviceBackend",
    "MLPKernels",
    "array_module",
    "is_device",
    "is_host",
    "missing_device_methods",
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

    def apply_reply(
        self,
        arrays: ChainArrays,
        cavity: tuple[Any, Any],
        scale_momentum: bool,
    ) -> None:
        """A server reply: the new cavity (natural parameters, the wire's dtype), the
        anchor moved with it, each chain shifted to keep its standardised position (and
        SGHMC's momentum scaled with it)."""
        ...


@runtime_checkable
class DeviceBackend(Backend, Protocol):
    """A backend whose arrays live on a device: the :class:`Backend` methods plus these."""

    xp: Any

    def to_host(self, a: Any) -> np.ndarray:
        """A numpy copy of a device array."""
        ...

    def to_device(self, a: Any, dtype: Any = None) -> Any:
        """``a`` (host or device) as a device array of ``dtype``."""
        ...

    def synchronize(self) -> None:
        """Wait for the queued device work (before MPI reads device memory)."""
        ...

    def take_fired(self) -> int:
        """Guard firings counted on the device since the last read."""
        ...

    def step_inputs(self, n_samples: int, batch_size: int) -> Any:
        """The staged per-iteration inputs (minibatch indices, pass scalars)."""
        ...

    def run_eager(self, body: Any) -> None:
        """Run one iteration's launches now."""
        ...

    def capture(self, body: Any) -> Any:
        """Capture one iteration's launches in a CUDA graph (replayed later)."""
        ...

    def fused_step_device_params(
        self, kind: SamplerKind, arrays: ChainArrays, grad: Any, params: Any
    ) -> None:
        """The fused pass with its scalars read from device memory (capturable)."""
        ...


#: what a device backend implements beyond :class:`Backend`
DEVICE_METHODS = (
    "to_host", "to_device", "synchronize", "take_fired", "step_inputs", "run_eager",
    "capture", "fused_step_device_params",
)  # fmt: skip


def is_device(backend: Any) -> bool:
    """Whether ``backend`` implements :class:`DeviceBackend`."""
    return not is_host(backend) and isinstance(backend, DeviceBackend)


def missing_device_methods(backend: Any) -> list[str]:
    """The :class:`DeviceBackend` methods ``backend`` lacks (for error messages)."""
    return [m for m in DEVICE_METHODS if not callable(getattr(backend, m, None))]


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
    ``fused_step_device_params``, see :mod:`snep.backends.cuda.graph`)."""
    if not is_device(backend):
        name = getattr(backend, "name", type(backend).__name__)
        raise ConfigError(
            "train.cuda_graph = true needs a device backend that captures CUDA graphs "
            f"(cuda); the backend is {name!r}. Use --backend cuda, or set "
            "train.cuda_graph = false"
        )
