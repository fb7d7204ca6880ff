"""The ``cpu`` backend: float32, BLAS GEMMs with Numba epilogues, and the
compiled fused pass of ``snep._native`` (OpenMP, in-kernel Philox noise)."""

from __future__ import annotations

import numpy as np

from snep import _native
from snep.model.mlp_cpu import CpuMLP
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["CpuBackend", "native_params"]

_FIELDS = tuple(PassScalars.__dataclass_fields__)


def native_params(scalars: PassScalars, out: _native.FusedParams | None = None):
    """Copy ``scalars`` into the native ``FusedParams`` struct."""
    out = _native.FusedParams() if out is None else out
    for name in _FIELDS:
        setattr(out, name, getattr(scalars, name))
    return out


class CpuBackend:
    """Float32 CPU backend.

    Parameters
    ----------
    n_threads : int
        OpenMP threads of the fused pass; 0 uses OpenMP's default.
    """

    name = "cpu"
    dtype = np.float32

    def __init__(self, n_threads: int = 0) -> None:
        self.n_threads = int(n_threads)
        self._params = _native.FusedParams()

    def mlp(self, spec: ParamSpec, n_chains: int, batch_size: int) -> CpuMLP:
        return CpuMLP(spec, n_chains, batch_size, dtype=np.float32)

    def fused_step(
        self,
        kind: SamplerKind,
        arrays: ChainArrays,
        grad: np.ndarray,
        scalars: PassScalars,
        noise: np.ndarray | None = None,
    ) -> int:
        p = native_params(scalars, self._params)
        return _native.fused_step(
            int(kind),
            arrays.x,
            grad,
            arrays.anchor_prec,
            arrays.anchor_pm,
            arrays.site_prec,
            arrays.site_pm,
            arrays.cavity_prec,
            arrays.cavity_pm,
            arrays.s1,
            arrays.s2,
            arrays.acc_x,
            arrays.acc_x2,
            noise,
            p,
            self.n_threads,
        )

    def normals(
        self, n_chains: int, n_params: int, seed: int, stream: int, step: int
    ) -> np.ndarray:
        out = np.empty((n_chains, n_params), np.float32)
        _native.fill_normal(out, seed, stream, step, 0, self.n_threads)
        return out

    def apply_reply(
        self,
        arrays: ChainArrays,
        cavity: tuple[np.ndarray, np.ndarray],
        scale_momentum: bool,
    ) -> None:
        a = arrays
        # a float64 wire's cavity rounded once, as the kernel's float arithmetic would
        cp, cpm = (np.ascontiguousarray(c, np.float32) for c in cavity)
        for c in range(a.x.shape[0]):  # one chain per call; rows are contiguous views
            row = slice(c, c + 1)
            _native.reply_update(
                a.x[row],
                a.cavity_prec[row],
                a.cavity_pm[row],
                a.anchor_prec[row],
                a.anchor_pm[row],
                a.site_prec[row],
                a.site_pm[row],
                a.s1[row],
                cp,
                cpm,
                scale_momentum,
                self.n_threads,
            )
