"""A stand-in for a GPU backend on the CPU, for testing device-agnostic code without a GPU.

:class:`DeviceArray` behaves like a CuPy array where it matters: arithmetic, ``out=``
arguments, numpy functions and item assignment refuse host (numpy) arrays, so any
implicit host/device mixing in the code under test raises ``TypeError`` (as CuPy does).
:class:`DeviceBackend` runs the ``cpu`` backend's kernels on the memory of such arrays
and exposes the device-backend interface of :mod:`snep.backends.base` (``xp``,
``to_host``, ``to_device``, ``take_fired``), like :class:`snep.backends.cuda.CudaBackend`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.backends import get_backend
from snep.samplers.reference import ChainArrays


def _is_host(x: Any) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, DeviceArray) and x.ndim > 0


def _bare(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, DeviceArray) else x


def _wrap(x: Any) -> Any:
    if isinstance(x, np.generic):  # CuPy gives 0-d device arrays, not host scalars
        x = np.asarray(x)
    if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
        return x.view(DeviceArray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


class DeviceArray(np.ndarray):
    """An ndarray that refuses to mix with host arrays (a CuPy array's rules)."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        for x in inputs:
            if _is_host(x):
                raise TypeError(f"{ufunc.__name__}: a host array mixed with a device array")
        if out is not None:
            if any(not isinstance(o, DeviceArray) for o in out):
                raise TypeError(f"{ufunc.__name__}: a host out= array for device inputs")
            kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
        result = getattr(ufunc, method)(*(_bare(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        flat = [*args, *kwargs.values()]
        if any(_is_host(x) for x in flat):
            raise TypeError(f"np.{func.__name__}: a host array mixed with a device array")
        result = func(*(_bare(x) for x in args), **{k: _bare(v) for k, v in kwargs.items()})
        return _wrap(result)

    def __getitem__(self, key):
        return _wrap(super().__getitem__(key))

    def __setitem__(self, key, value):
        if _is_host(value):
            raise TypeError("device[...] = host array: copy it to the device first")
        super().__setitem__(key, _bare(value))


class _DeviceArrayModule:
    """``xp`` of :class:`DeviceBackend`: numpy, with array constructors on the device."""

    @staticmethod
    def zeros(shape, dtype=float):
        return np.zeros(shape, dtype).view(DeviceArray)

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


class _DeviceMLP:
    def __init__(self, host_mlp: Any) -> None:
        self.host = host_mlp

    def loglik_and_grad(self, params, x, y, grad_out):
        for name, a in (("params", params), ("x", x), ("y", y), ("grad_out", grad_out)):
            if not isinstance(a, DeviceArray):
                raise TypeError(f"loglik_and_grad: {name} must be a device array")
        return _wrap(self.host.loglik_and_grad(*map(_bare, (params, x, y, grad_out))))

    def predict_proba(self, params, x):
        raise TypeError("predict on the host: the evaluator must not use the device backend")


class DeviceBackend:
    """The ``cpu`` backend's kernels behind a device backend's interface."""

    name = "device-double"
    dtype = np.float32
    xp = _DeviceArrayModule()

    def __init__(self) -> None:
        self.cpu = get_backend("cpu")
        self.fired = 0
        self.fired_reads = 0

    @staticmethod
    def to_host(a: Any) -> np.ndarray:
        if not isinstance(a, DeviceArray):
            raise TypeError(f"to_host of a {type(a).__name__}, expected a device array")
        return np.array(a.view(np.ndarray))

    @staticmethod
    def to_device(a: Any, dtype: Any = None) -> DeviceArray:
        return np.array(_bare(a), dtype=dtype).view(DeviceArray)

    def take_fired(self) -> int:
        self.fired_reads += 1
        n, self.fired = self.fired, 0
        return n

    def mlp(self, spec, n_chains, batch_size):
        return _DeviceMLP(self.cpu.mlp(spec, n_chains, batch_size))

    @staticmethod
    def _bare_arrays(arrays: ChainArrays) -> ChainArrays:
        for a in arrays.arrays():
            if a is not None and not isinstance(a, DeviceArray):
                raise TypeError("fused_step: every chain array must be a device array")
        return ChainArrays(*(None if a is None else _bare(a) for a in arrays.arrays()))

    def fused_step(self, kind, arrays, grad, scalars, noise=None, *, return_fired=False):
        if not isinstance(grad, DeviceArray):
            raise TypeError("fused_step: grad must be a device array")
        self.fired += self.cpu.fused_step(
            kind, self._bare_arrays(arrays), _bare(grad), scalars, _bare(noise)
        )
        return self.take_fired() if return_fired else None

    def normals(self, n_chains, n_params, seed, stream, step):
        return _wrap(self.cpu.normals(n_chains, n_params, seed, stream, step))

    def apply_reply(self, arrays, theta, sent, scale_momentum):
        self.cpu.apply_reply(self._bare_arrays(arrays), theta, sent, scale_momentum)
