"""Compute backends behind one small interface (docs/method.md §2).

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


def get_backend(name: str = "auto", n_threads: int = 0, device: int | None = None) -> Backend:
    """Return a backend by name.

    Parameters
    ----------
    name : {"auto", "numpy", "cpu", "cuda"}
        ``auto`` picks ``cpu`` (the ``cuda`` backend is opt-in).
    n_threads : int
        Threads of the CPU kernels (0: library default).
    device : int, optional
        CUDA device of the ``cuda`` backend (default: CuPy's current device); under MPI
        :func:`snep.transport.launch.rank_backend` picks one per rank.
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
        try:
            import cupy
        except ImportError:
            raise BackendUnavailableError(
                "backend 'cuda' is not available: CuPy is not installed (pip install "
                "cupy-cuda12x, or cupy-cuda13x for CUDA 13; or pip install -e '.[cuda]'); "
                f"available here: {available_backends()}"
            ) from None
        try:
            n_devices = cupy.cuda.runtime.getDeviceCount()
            why = "no CUDA device is visible"
        except Exception as e:  # no driver, or the driver refused
            n_devices, why = 0, f"no CUDA device is usable ({type(e).__name__}: {e})"
        if n_devices <= 0:
            raise BackendUnavailableError(
                f"backend 'cuda' is not available: {why} (CuPy {cupy.__version__} is "
                f"installed); available here: {available_backends()}"
            )
        if device is not None and not 0 <= device < n_devices:
            raise BackendUnavailableError(
                f"CUDA device {device} does not exist: {n_devices} device(s) are visible "
                "(check CUDA_VISIBLE_DEVICES)"
            )
        from snep.backends.cuda.backend import CudaBackend

        return CudaBackend(device)
    raise BackendUnavailableError(
        f"unknown backend {name!r}; expected one of {('auto', *_NAMES)}; "
        f"available on this machine: {available_backends()}"
    )
