"""A stand-in for a GPU backend on the CPU, for testing device-agnostic code without a GPU.

:class:`DeviceArray` behaves like a CuPy array where it matters: arithmetic, ``out=``
arguments, numpy functions and item assignment refuse host (numpy) arrays, so any
implicit host/device mixing in the code under test raises ``TypeError`` (as CuPy does).
:class:`DeviceBackend` runs the ``cpu`` backend's kernels on the memory of such arrays
and exposes the device-backend interface of :mod:`snep.backends.base` (``xp``,
``to_host``, ``to_device``, ``take_fired``), like :class:`snep.backends.cuda.backend.CudaBackend`.

It also stands in for CUDA-graph capture (``step_inputs``, ``capture``,
``fused_step_device_params``; :mod:`snep.backends.cuda.graph`).  A "graph" here replays by
calling the body again, so the double enforces what makes that equal to a real replay:
while a body runs, every host/device transfer, every host read of the device and the
by-value ``fused_step`` raise :class:`GraphRuleError` (the body may only launch work whose
inputs are device buffers), and the step record is only read from device memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.backends import get_backend
from snep.backends.cuda.fused import FUSED_PARAMS_DTYPE
from snep.backends.cuda.graph import step_record_dtype
from snep.state import ChainArrays, PassScalars


class GraphRuleError(RuntimeError):
    """The code under test did something inside a captured body that a CUDA graph cannot
    replay (a transfer, a host read, scalars passed by value)."""


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


class _StepInputs:
    """The double's :class:`snep.backends.cuda.graph.CudaStepInputs`: one host record, one
    device copy of its bytes."""

    def __init__(self, backend: DeviceBackend, n_samples: int, batch_size: int) -> None:
        self.backend = backend
        self.dtype = step_record_dtype(n_samples, batch_size)
        self._host = np.zeros((), self.dtype)
        self.device = np.zeros(self.dtype.itemsize, np.uint8).view(DeviceArray)
        n_idx = self.dtype.fields["idx"][0].itemsize
        self.idx = self.device[:n_idx].view(np.int64).reshape(n_samples, batch_size)
        self._params_off = self.dtype.fields["params"][1]
        self.uploads = 0

    def params(self, k: int) -> DeviceArray:
        size = FUSED_PARAMS_DTYPE.itemsize
        off = self._params_off + k * size
        return self.device[off : off + size]

    def host(self) -> np.ndarray:
        self.backend.outside_graph("step_inputs.host")
        return self._host

    def upload(self) -> None:
        self.backend.outside_graph("step_inputs.upload")
        self.device.view(np.ndarray)[...] = self._host.reshape(1).view(np.uint8)
        self.uploads += 1


class _ReplayGraph:
    def __init__(self, backend: DeviceBackend, body: Any) -> None:
        self.backend, self.body = backend, body

    def launch(self) -> None:
        self.backend.launches += 1
        self.backend.run_body(self.body)


class DeviceBackend:
    """The ``cpu`` backend's kernels behind a device backend's interface."""

    name = "device-double"
    dtype = np.float32
    xp = _DeviceArrayModule()

    def __init__(self) -> None:
        self.cpu = get_backend("cpu")
        self.fired = 0
        self.fired_reads = 0
        self.in_body = False
        self.captures = 0
        self.launches = 0
        self.eager_runs = 0
        self.gemms: list[str] = []
        self.syncs = 0

    # -- graphs ------------------------------------------------------------------------------
    def outside_graph(self, what: str) -> None:
        if self.in_body:
            raise GraphRuleError(f"{what} inside a captured body: a graph cannot replay it")

    def run_body(self, body: Any) -> None:
        self.outside_graph("a nested capture")
        self.in_body = True
        try:
            body()
        finally:
            self.in_body = False

    def step_inputs(self, n_samples: int, batch_size: int) -> _StepInputs:
        return _StepInputs(self, n_samples, batch_size)

    def run_eager(self, body: Any) -> None:
        self.eager_runs += 1
        self.run_body(body)

    def capture(self, body: Any) -> _ReplayGraph:
        self.captures += 1
        self.run_body(body)  # this iteration, as CudaGraphs.capture runs it
        return _ReplayGraph(self, body)

    def fused_step_device_params(self, kind, arrays, grad, params) -> None:
        if not isinstance(grad, DeviceArray) or not isinstance(params, DeviceArray):
            raise TypeError("fused_step_device_params: grad and params must be device arrays")
        if params.dtype != np.uint8 or params.size != FUSED_PARAMS_DTYPE.itemsize:
            raise TypeError(f"fused_step_device_params: params is {params.dtype} {params.shape}")
        record = params.view(np.ndarray).view(FUSED_PARAMS_DTYPE)[0]  # read when it runs
        scalars = PassScalars(**{name: record[name].item() for name in FUSED_PARAMS_DTYPE.names})
        self.fired += self.cpu.fused_step(kind, self._bare_arrays(arrays), _bare(grad), scalars)

    # -- host/device ---------------------------------------------------------------------------
    def to_host(self, a: Any) -> np.ndarray:
        self.outside_graph("to_host")
        if not isinstance(a, DeviceArray):
            raise TypeError(f"to_host of a {type(a).__name__}, expected a device array")
        return np.array(a.view(np.ndarray))

    def to_device(self, a: Any, dtype: Any = None) -> DeviceArray:
        self.outside_graph("to_device")
        return np.array(_bare(a), dtype=dtype).view(DeviceArray)

    def synchronize(self) -> None:
        self.outside_graph("synchronize")
        self.syncs += 1

    def take_fired(self) -> int:
        self.outside_graph("take_fired")
        self.fired_reads += 1
        n, self.fired = self.fired, 0
        return n

    def mlp(self, spec, n_chains, batch_size, gemm="matmul"):
        self.gemms.append(gemm)  # the cpu kernels stand in for every GEMM choice
        return _DeviceMLP(self.cpu.mlp(spec, n_chains, batch_size))

    @staticmethod
    def _bare_arrays(arrays: ChainArrays) -> ChainArrays:
        for a in arrays.arrays():
            if a is not None and not isinstance(a, DeviceArray):
                raise TypeError("fused_step: every chain array must be a device array")
        return ChainArrays(*(None if a is None else _bare(a) for a in arrays.arrays()))

    def fused_step(self, kind, arrays, grad, scalars, noise=None, *, return_fired=False):
        self.outside_graph("fused_step with scalars by value")
        if not isinstance(grad, DeviceArray):
            raise TypeError("fused_step: grad must be a device array")
        self.fired += self.cpu.fused_step(
            kind, self._bare_arrays(arrays), _bare(grad), scalars, _bare(noise)
        )
        return self.take_fired() if return_fired else None

    def normals(self, n_chains, n_params, seed, stream, step):
        return _wrap(self.cpu.normals(n_chains, n_params, seed, stream, step))

    def apply_reply(self, arrays, cavity, scale_momentum):
        self.cpu.apply_reply(self._bare_arrays(arrays), tuple(map(_bare, cavity)), scale_momentum)
