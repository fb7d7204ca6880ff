"""Compute backends behind one small interface (DESIGN §2).

``numpy`` is the float64 oracle; ``cpu`` is float32 BLAS + Numba + the compiled
fused pass; ``cuda`` (CuPy + kernels/*.cu) is loaded only when asked for, so
importing snep never imports CuPy.
"""

from __future__ import annotations

from snep.backends.base import Backend, MLPKernels
from snep.errors import BackendUnavailableError

__all__ = ["Backend", "MLPKernels", "available_backends", "get_backend"]

_NAMES = ("numpy", "cpu", "cuda")


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def available_backends() -> list[str]:
    """Names of the backends that work on this machine."""
    names = ["numpy", "cpu"]
    if _cuda_available():
        names.append("cuda")
    return names


def get_backend(name: str = "auto", n_threads: int = 0) -> Backend:
    """Return a backend by name.

    Parameters
    ----------
    name : {"auto", "numpy", "cpu", "cuda"}
        ``auto`` picks ``cpu`` (the ``cuda`` backend is opt-in).
    n_threads : int
        Threads of the CPU kernels (0: library default).
    """
    if name == "auto":
        name = "cpu"
    if name == "numpy":
        from snep.backends.numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cpu":
        from snep.backends.cpu import CpuBackend

        return CpuBackend(n_threads=n_threads)
    if name == "cuda":
        raise BackendUnavailableError(
            "backend 'cuda' is not available: the CUDA backend is not built into this release "
            f"yet (see the GPU backend issue); available here: {available_backends()[:2]}"
        )
    raise BackendUnavailableError(
        f"unknown backend {name!r}; expected one of {('auto', *_NAMES)}; "
        f"available on this machine: {available_backends()}"
    )
