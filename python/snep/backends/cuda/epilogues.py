"""MLP epilogue kernels for the GPU: :mod:`snep.model.epilogues` compiled with numba.cuda.

The elementwise passes between the GEMMs of the MLP of Hasenclever et al., JMLR 18 (2017),
§6 (ReLU hidden layers, softmax output, multinomial log-likelihood), batched over a
leading chain axis ``C`` (docs/method.md §2, "Batched over chains"):

* :func:`bias_relu_`: ``z[c,i,j] = max(z[c,i,j] + p[c,off+j], 0)``, in place
  (``epilogues.bias_relu``);
* :func:`bias_`: ``z[c,i,j] += p[c,off+j]``, the output layer (a plain add);
* :func:`softmax_xent`: per row, ``dlogits = onehot(y) - softmax(z)`` and the row's
  log-likelihood (``epilogues.softmax_xent_row``); :func:`loglik_sum` adds the rows of each
  chain in float64, in a fixed order;
* :func:`relu_backward_`: ``dz *= (h > 0)``, in place (``epilogues.relu_grad``);
* :func:`bias_grad`: ``g[c,off+j] = Σ_i dz[c,i,j]`` (a plain sum);
* :func:`relu_backward_bias_grad`: the two above fused in one pass over ``dz``
  (``epilogues.relu_grad``);
* :func:`softmax_`: softmax of each row in place, for prediction (``epilogues.softmax_row``).

The scalar functions are the single source of truth of this maths (docs/method.md §2; the table
in ``docs/architecture.md``): :mod:`snep.model.mlp_cpu` compiles the same functions with
``numba.njit``, this module with ``numba.cuda.jit(device=True)``.  They are compiled
without ``fastmath`` here (the GPU's fast ``exp``/``log`` approximations are not needed:
the epilogues are a small fraction of the GEMMs' time).

Every kernel is a grid-stride loop, so any grid covers any size; the host wrappers pick
the grid (``threads`` per block, at most ``max_blocks`` blocks) and skip empty launches.
Biases are read from (and bias gradients written into) the whole flat ``(C, P)``
parameter (gradient) array at an offset, as in :mod:`snep.model.mlp_cpu`.

The wrappers take numba device arrays, or any array with ``__cuda_array_interface__``
(CuPy arrays; imported without a stream synchronisation: launch on the producer's stream,
see ``stream``), or numpy arrays (numba copies them in and out; what the simulator uses).
Under ``NUMBA_ENABLE_CUDASIM=1`` everything runs in Numba's CUDA simulator.

:class:`EpilogueMLP` is the whole forward/backward pass: GEMMs through a ``matmul``
callable (numpy under the simulator, ``cupy.matmul``/cuBLAS on a GPU) and these kernels
in between, or (``gemm="tiled"``) the hand-written batched GEMMs of
:mod:`snep.backends.cuda.gemm` with the bias/ReLU epilogues fused into them (and, on CuPy
arrays, ``"tiled-cpp"``/``"tiled-tf32"``: the CUDA C++ kernels of ``kernels/mlp_gemm.cu``);
:func:`cuda_loglik_and_grad` is its one-call form.

This module imports ``numba.cuda``; nothing imports it but the CUDA backend and its tests
(``import snep`` and the CPU path never do).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import config as _numba_config
from numba import cuda

from snep.backends.cuda import gemm as cuda_gemm
from snep.backends.cuda.gemm_common import TILES, GemmTiles
from snep.config import GEMMS
from snep.errors import ConfigError
from snep.model import epilogues
from snep.model.spec import LayerSpec, ParamSpec

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "DEFAULT_THREADS",
    "GEMMS",
    "SIMULATOR",
    "EpilogueMLP",
    "bias_",
    "bias_grad",
    "bias_relu_",
    "cuda_loglik_and_grad",
    "launch_dims",
    "loglik_sum",
    "relu_backward_",
    "relu_backward_bias_grad",
    "softmax_",
    "softmax_xent",
]

#: True when numba.cuda is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)
SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
if not SIMULATOR:  # the simulator has no device arrays to recognise
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray as _is_numba_device_array

#: threads per block of every launch
DEFAULT_THREADS = 256
#: cap on the blocks of one launch (the loops are grid-stride, so any cap is correct)
DEFAULT_MAX_BLOCKS = 4096

# ---------------------------------------------------------------------------------------
# the scalar epilogues, compiled as device functions (inlined by NVVM)
# ---------------------------------------------------------------------------------------
_dev_bias_relu = cuda.jit(device=True)(epilogues.bias_relu)
_dev_relu_grad = cuda.jit(device=True)(epilogues.relu_grad)
_dev_softmax_xent_row = cuda.jit(device=True)(epilogues.softmax_xent_row)
_dev_softmax_row = cuda.jit(device=True)(epilogues.softmax_row)


# ---------------------------------------------------------------------------------------
# kernels (grid-stride loops; element t of a (C, B, n) array is (c, i, j) with j fastest,
# so neighbouring threads touch neighbouring addresses)
# ---------------------------------------------------------------------------------------
@cuda.jit
def _bias_relu_kernel(z, p, off):
    """``z = bias_relu(z, p[c, off + j])`` in place; uses ``epilogues.bias_relu``."""
    n_chains, n_rows, n = z.shape
    total = n_chains * n_rows * n
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % n
        r = t // n
        i = r % n_rows
        c = r // n_rows
        z[c, i, j] = _dev_bias_relu(z[c, i, j], p[c, off + j])


@cuda.jit
def _bias_kernel(z, p, off):
    """``z += p[c, off + j]`` in place (the output layer: no activation)."""
    n_chains, n_rows, n = z.shape
    total = n_chains * n_rows * n
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % n
        r = t // n
        i = r % n_rows
        c = r // n_rows
        z[c, i, j] += p[c, off + j]


@cuda.jit
def _softmax_xent_kernel(logits, y, dlogits, row_ll):
    """One thread per row; uses ``epilogues.softmax_xent_row``.

    A label outside ``[0, K)`` cannot raise on the device: its row gets NaN in ``row_ll``
    and ``dlogits`` (so the chain's log-likelihood and gradient are NaN).
    """
    n_chains, n_rows, k = logits.shape
    total = n_chains * n_rows
    for r in range(cuda.grid(1), total, cuda.gridsize(1)):
        c = r // n_rows
        i = r - c * n_rows
        label = y[c, i]
        if label < 0 or label >= k:
            row_ll[r] = math.nan
            for kk in range(k):
                dlogits[c, i, kk] = math.nan
        else:
            row_ll[r] = _dev_softmax_xent_row(logits[c, i], label, dlogits[c, i])


@cuda.jit
def _loglik_sum_kernel(row_ll, out):
    """``out[c] = Σ_i row_ll[c * B + i]`` in float64, in a fixed order (reproducible)."""
    n_chains = out.shape[0]
    n_rows = row_ll.shape[0] // n_chains
    for c in range(cuda.grid(1), n_chains, cuda.gridsize(1)):
        acc = 0.0
        for i in range(n_rows):
            acc += row_ll[c * n_rows + i]
        out[c] = acc


@cuda.jit
def _relu_backward_kernel(dz, h):
    """``dz = relu_grad(h, dz)`` in place; uses ``epilogues.relu_grad``."""
    n_chains, n_rows, n = dz.shape
    total = n_chains * n_rows * n
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = t % n
        r = t // n
        i = r % n_rows
        c = r // n_rows
        dz[c, i, j] = _dev_relu_grad(h[c, i, j], dz[c, i, j])


@cuda.jit
def _bias_grad_kernel(dz, g, off):
    """``g[c, off + j] = Σ_i dz[c, i, j]``: one thread per (c, j), rows summed in order."""
    n_chains, n_rows, n = dz.shape
    total = n_chains * n
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        c = t // n
        j = t - c * n
        acc = numba.float32(0.0)
        for i in range(n_rows):
            acc += dz[c, i, j]
        g[c, off + j] = acc


@cuda.jit
def _relu_backward_bias_grad_kernel(dz, h, g, off):
    """Fused ``dz = relu_grad(h, dz)`` and ``g[c, off + j] = Σ_i dz[c, i, j]``.

    One thread per (c, j) walks the rows (coalesced across j); uses ``epilogues.relu_grad``.
    """
    n_chains, n_rows, n = dz.shape
    total = n_chains * n
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        c = t // n
        j = t - c * n
        acc = numba.float32(0.0)
        for i in range(n_rows):
            d = numba.float32(_dev_relu_grad(h[c, i, j], dz[c, i, j]))
            dz[c, i, j] = d
            acc += d
        g[c, off + j] = acc


@cuda.jit
def _softmax_kernel(z):
    """Softmax of every row in place; uses ``epilogues.softmax_row``."""
    n_chains, n_rows, _ = z.shape
    total = n_chains * n_rows
    for r in range(cuda.grid(1), total, cuda.gridsize(1)):
        c = r // n_rows
        i = r - c * n_rows
        _dev_softmax_row(z[c, i], z[c, i])


# ---------------------------------------------------------------------------------------
# host wrappers
# ---------------------------------------------------------------------------------------
def launch_dims(
    total: int, threads: int = DEFAULT_THREADS, max_blocks: int = DEFAULT_MAX_BLOCKS
) -> tuple[int, int]:
    """``(blocks, threads)`` of a grid-stride launch over ``total`` work items.

    Enough blocks to give every item its own thread, capped at ``max_blocks`` (the loops
    stride over the rest); ``threads`` is lowered to ``total`` when that is smaller, so
    tiny launches (the simulator runs one Python thread per CUDA thread) stay cheap.
    """
    if threads <= 0 or max_blocks <= 0:
        raise ConfigError(
            f"launch_dims: threads={threads}, max_blocks={max_blocks}; both must be positive"
        )
    threads = max(1, min(int(threads), int(total)))
    blocks = max(1, min(int(max_blocks), -(-int(total) // threads)))
    return blocks, threads


def _device(a: Any) -> Any:
    """An array numba.cuda kernels accept, without a host synchronisation.

    numba device arrays and numpy arrays pass through; other ``__cuda_array_interface__``
    exporters (CuPy) are wrapped with ``sync=False``: the caller orders the launch after
    the producer by launching on the producer's stream.
    """
    if SIMULATOR or isinstance(a, np.ndarray):
        return a
    if _is_numba_device_array(a):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    raise ConfigError(
        f"cuda_epilogues: got a {type(a).__name__}, expected a numba device array, an array "
        "with __cuda_array_interface__ (e.g. a CuPy array) or a numpy array"
    )


def _check3(where: str, a: Any, shape: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    s = tuple(getattr(a, "shape", ()))
    if len(s) != 3 or (shape is not None and s != shape):
        want = shape if shape is not None else "(C, B, n)"
        raise ConfigError(f"{where}: got an array of shape {s}, expected {want}")
    return s  # type: ignore[return-value]


def _check_flat(where: str, flat: Any, n_chains: int, off: int, n: int) -> None:
    s = tuple(getattr(flat, "shape", ()))
    if len(s) != 2 or s[0] != n_chains or off < 0 or off + n > s[1]:
        raise ConfigError(
            f"{where}: flat array of shape {s} with offset {off} cannot hold a bias of {n} "
            f"entries per chain for {n_chains} chains; pass the whole (C, P) array and the "
            "layer's b_offset"
        )


def _run(kernel: Any, total: int, args: tuple, threads: int, max_blocks: int, stream: Any) -> None:
    if total <= 0:
        return
    blocks, thr = launch_dims(total, threads, max_blocks)
    kernel[blocks, thr, stream](*(_device(a) if hasattr(a, "shape") else a for a in args))


def bias_relu_(
    z: Any,
    params: Any,
    off: int,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``z[c, i, j] = max(z[c, i, j] + params[c, off + j], 0)`` in place.

    Kernel ``_bias_relu_kernel``, scalar function ``epilogues.bias_relu``.

    Parameters
    ----------
    z : device array, shape (C, B, n)
        Pre-activations; overwritten with the layer's output.
    params : device array, shape (C, P)
        Flat parameters; the bias of chain ``c`` is ``params[c, off:off + n]``.
    off : int
        The layer's ``b_offset``.
    threads, max_blocks : int
        Launch configuration (see :func:`launch_dims`).
    stream : numba stream or 0
        Stream of the launch (0: numba's default stream).
    """
    c, b, n = _check3("bias_relu_", z)
    _check_flat("bias_relu_", params, c, off, n)
    _run(_bias_relu_kernel, c * b * n, (z, params, int(off)), threads, max_blocks, stream)


def bias_(
    z: Any,
    params: Any,
    off: int,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``z[c, i, j] += params[c, off + j]`` in place (the output layer; kernel ``_bias_kernel``).

    Arguments as in :func:`bias_relu_`.
    """
    c, b, n = _check3("bias_", z)
    _check_flat("bias_", params, c, off, n)
    _run(_bias_kernel, c * b * n, (z, params, int(off)), threads, max_blocks, stream)


def softmax_xent(
    logits: Any,
    y: Any,
    dlogits_out: Any,
    row_ll_out: Any,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """Softmax log-likelihood of every row and its gradient, one thread per row.

    Kernel ``_softmax_xent_kernel``, scalar function ``epilogues.softmax_xent_row``.

    Parameters
    ----------
    logits : device array, shape (C, B, K)
    y : device array of int, shape (C, B)
        Labels in ``[0, K)``; a row with a label outside gets NaN (the device cannot raise:
        validate labels on the host, as :class:`EpilogueMLP` does for host labels).
    dlogits_out : device array, shape (C, B, K)
        Written with ``onehot(y) - softmax(logits)``; must not alias ``logits``.
    row_ll_out : device array, shape (C * B,)
        Written with ``log softmax(logits[c, i])[y[c, i]]`` (float64 recommended).
    """
    c, b, k = _check3("softmax_xent", logits)
    _check3("softmax_xent", dlogits_out, (c, b, k))
    if tuple(getattr(y, "shape", ())) != (c, b):
        raise ConfigError(
            f"softmax_xent: y has shape {getattr(y, 'shape', None)}, expected {(c, b)}"
        )
    if tuple(getattr(row_ll_out, "shape", ())) != (c * b,):
        raise ConfigError(
            f"softmax_xent: row_ll_out has shape {getattr(row_ll_out, 'shape', None)}, "
            f"expected {(c * b,)}"
        )
    args = (logits, y, dlogits_out, row_ll_out)
    _run(_softmax_xent_kernel, c * b, args, threads, max_blocks, stream)


def loglik_sum(
    row_ll: Any,
    out: Any,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``out[c] = Σ_i row_ll[c * B + i]``, in float64 and a fixed order (kernel
    ``_loglik_sum_kernel``); ``row_ll`` has shape (C * B,), ``out`` shape (C,)."""
    n_chains = int(getattr(out, "shape", (0,))[0])
    n = int(getattr(row_ll, "shape", (0,))[0])
    if n_chains <= 0 or n % n_chains:
        raise ConfigError(
            f"loglik_sum: row_ll has {n} entries and out {n_chains}; expected C * B and C"
        )
    _run(_loglik_sum_kernel, n_chains, (row_ll, out), threads, max_blocks, stream)


def relu_backward_(
    dz: Any,
    h: Any,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``dz *= (h > 0)`` in place, ``h`` being the ReLU's output; both (C, B, n).

    Kernel ``_relu_backward_kernel``, scalar function ``epilogues.relu_grad``.
    """
    c, b, n = _check3("relu_backward_", dz)
    _check3("relu_backward_", h, (c, b, n))
    _run(_relu_backward_kernel, c * b * n, (dz, h), threads, max_blocks, stream)


def bias_grad(
    dz: Any,
    grad: Any,
    off: int,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``grad[c, off + j] = Σ_i dz[c, i, j]`` (kernel ``_bias_grad_kernel``).

    ``dz`` is (C, B, n), ``grad`` the whole flat (C, P) gradient; with ``B = 0`` the bias
    gradient is written as zeros.
    """
    c, _, n = _check3("bias_grad", dz)
    _check_flat("bias_grad", grad, c, off, n)
    _run(_bias_grad_kernel, c * n, (dz, grad, int(off)), threads, max_blocks, stream)


def relu_backward_bias_grad(
    dz: Any,
    h: Any,
    grad: Any,
    off: int,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """:func:`relu_backward_` then :func:`bias_grad`, fused in one pass over ``dz``.

    Kernel ``_relu_backward_bias_grad_kernel``, scalar function ``epilogues.relu_grad``.
    """
    c, b, n = _check3("relu_backward_bias_grad", dz)
    _check3("relu_backward_bias_grad", h, (c, b, n))
    _check_flat("relu_backward_bias_grad", grad, c, off, n)
    args = (dz, h, grad, int(off))
    _run(_relu_backward_bias_grad_kernel, c * n, args, threads, max_blocks, stream)


def softmax_(
    z: Any,
    *,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """Softmax of every row of ``z`` (C, N, K) in place (kernel ``_softmax_kernel``,
    scalar function ``epilogues.softmax_row``)."""
    c, b, _ = _check3("softmax_", z)
    _run(_softmax_kernel, c * b, (z,), threads, max_blocks, stream)


# ---------------------------------------------------------------------------------------
# the whole forward/backward pass
# ---------------------------------------------------------------------------------------
MatMul = Callable[..., Any]
#: the GEMM implementations :class:`EpilogueMLP` can use


def _data_ptr(a: Any) -> int:
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(iface["data"][0])


class EpilogueMLP:
    """Batched MLP forward/backward: GEMMs and epilogues on the GPU (or its simulator).

    The structure of :class:`snep.model.mlp_cpu.CpuMLP`, on any array module ``xp``
    (numpy under the simulator, CuPy on a GPU): weights are ``(C, n_in, n_out)`` views
    of the flat parameters, weight gradients are written straight into the caller's
    gradient buffer, biases are read and bias gradients written at offsets of the flat
    arrays, and every workspace is allocated here once.  The model is the MLP of
    Hasenclever et al., JMLR 18 (2017), §6.

    The GEMMs (``gemm``):

    * ``"matmul"``: the ``matmul`` callable (``cupy.matmul``/cuBLAS on a GPU, numpy under
      the simulator), with the bias/ReLU epilogues as separate numba.cuda passes;
    * ``"tiled"``: the numba.cuda kernels of :mod:`snep.backends.cuda.gemm`, with the
      hidden layers' bias + ReLU, the output layer's bias and the backward ReLU mask fused
      into the GEMMs (three passes over memory fewer per hidden layer); runs under the
      simulator on numpy arrays too;
    * ``"tiled-cpp"`` / ``"tiled-tf32"``: the same GEMMs as CUDA C++
      (:mod:`snep.backends.cuda.gemm_raw`; fp32, or TF32 tensor cores with fp32
      accumulation), with the softmax-cross-entropy, log-likelihood sum and bias
      gradients as CUDA C++ kernels of the same module: the whole fwd+bwd is C++ (no
      numba launches); CuPy arrays only.

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    n_chains, batch_size : int
        ``C`` and ``B`` of :meth:`loglik_and_grad`.
    xp : module
        Array module of the workspaces (``numpy`` or ``cupy``).
    matmul : callable, optional
        ``matmul(a, b, out=out)`` with numpy's batched semantics; default ``xp.matmul``
        (used by ``gemm="matmul"``).
    dtype : numpy dtype
        Floating type of the workspaces (float32; the tiled GEMMs need float32).
    threads, max_blocks : int
        Launch configuration of the epilogue kernels (see :func:`launch_dims`);
        ``max_blocks`` also caps the tiled GEMMs' grids.
    stream : numba stream, callable or 0
        Stream of the numba.cuda launches, or a callable returning it per call (the CUDA
        backend passes CuPy's current stream, so GEMMs and epilogues stay ordered).
    gemm : {"matmul", "tiled", "tiled-cpp", "tiled-tf32"}
        GEMM implementation (see above); default ``"matmul"``.
    tiles : GemmTiles, optional
        Tile configuration of ``gemm="tiled"`` (default
        :data:`~snep.backends.cuda.gemm_common.TILES`; the tests use small tiles to cover the
        edges cheaply under the simulator).
    """

    def __init__(
        self,
        spec: ParamSpec,
        n_chains: int,
        batch_size: int,
        *,
        xp: Any = np,
        matmul: MatMul | None = None,
        dtype: Any = np.float32,
        threads: int = DEFAULT_THREADS,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
        stream: Any = 0,
        gemm: str = "matmul",
        tiles: GemmTiles | None = None,
    ) -> None:
        if not isinstance(spec, ParamSpec):
            raise ConfigError(f"EpilogueMLP: spec is a {type(spec).__name__}, expected ParamSpec")
        for name, v in (("n_chains", n_chains), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"EpilogueMLP: {name}={v!r}, expected a positive int")
        self.spec = spec
        self.n_chains, self.batch_size = int(n_chains), int(batch_size)
        self.xp = xp
        self.matmul = matmul if matmul is not None else xp.matmul
        self.dtype = np.dtype(dtype)
        self._launch = {"threads": int(threads), "max_blocks": int(max_blocks)}
        self.gemm = self._check_gemm(gemm, xp)
        self.tiles = TILES if tiles is None else tiles
        if not isinstance(self.tiles, GemmTiles):
            raise ConfigError(
                f"EpilogueMLP: tiles is a {type(self.tiles).__name__}, expected GemmTiles"
            )
        self._raw: Any = None
        if self.gemm in ("tiled-cpp", "tiled-tf32"):
            from snep.backends.cuda import gemm_raw as cuda_gemm_raw

            self._raw = cuda_gemm_raw
        self._stream = stream
        c, b = self.n_chains, self.batch_size
        layers = spec.layers
        empty = xp.empty
        self._acts = [empty((c, b, lay.n_out), self.dtype) for lay in layers[:-1]]
        self._deltas = [empty((c, b, lay.n_out), self.dtype) for lay in layers[:-1]]
        self._logits = empty((c, b, spec.n_outputs), self.dtype)
        self._dlogits = empty((c, b, spec.n_outputs), self.dtype)
        self._row_ll = empty((c * b,), np.float64)
        self._loglik = empty((c,), np.float64)
        self._x_work = empty((c, b, spec.n_inputs), self.dtype)
        self._y_work = empty((c, b), np.int32)
        # numba views of the workspaces (built once), and of the caller's arrays and weight
        # views of params/grad_out, cached by identity (the cache keeps the array alive, so
        # an id is never reused while cached; a few entries, since the hot loop passes the
        # same buffers every call): building a numba array from __cuda_array_interface__
        # costs more host time than launching a small kernel
        self._nb_views: dict[tuple[int, bool], tuple[Any, Any]] = {}
        if not (SIMULATOR or xp is np):
            fixed = [*self._acts, *self._deltas, self._logits, self._dlogits, self._y_work]
            for ws in (*fixed, self._row_ll, self._loglik):
                self._nb_views[(id(ws), False)] = (ws, _device(ws))
        self._n_fixed = len(self._nb_views)
        self._w_views: dict[int, tuple[Any, list[Any]]] = {}

    def _check_gemm(self, gemm: str, xp: Any) -> str:
        if gemm not in GEMMS:
            raise ConfigError(f"EpilogueMLP: gemm={gemm!r}, expected one of {list(GEMMS)}")
        if gemm != "matmul" and self.dtype != np.float32:
            raise ConfigError(
                f"EpilogueMLP: gemm={gemm!r} needs dtype float32, got {self.dtype}; use "
                "gemm='matmul' for other dtypes"
            )
        if gemm in ("tiled-cpp", "tiled-tf32") and xp is np:
            raise ConfigError(
                f"EpilogueMLP: gemm={gemm!r} runs the CUDA C++ kernels on CuPy arrays; with "
                "xp=numpy use gemm='tiled' (numba.cuda, also under the simulator) or 'matmul'"
            )
        return gemm

    # -- helpers ---------------------------------------------------------------------------
    def _dv(self, a: Any, t: bool = False) -> Any:
        """``a`` (``a[c]^T`` with ``t``) as the numba kernels take it: a cached numba view of
        a CuPy array, or the numpy array itself under the simulator."""
        if SIMULATOR or isinstance(a, np.ndarray):
            return a.transpose(0, 2, 1) if t else a
        key = (id(a), t)
        hit = self._nb_views.get(key)
        if hit is None or hit[0] is not a:
            if len(self._nb_views) >= self._n_fixed + 24:  # drop the caller's old arrays
                fixed = list(self._nb_views.items())[: self._n_fixed]
                self._nb_views = dict(fixed)
            hit = self._nb_views[key] = (a, _device(a.transpose(0, 2, 1) if t else a))
        return hit[1]

    def _gemm(
        self,
        a: Any,
        b: Any,
        out: Any,
        *,
        trans_a: bool = False,
        trans_b: bool = False,
        epilogue: str = "none",
        bias: Any = None,
        bias_off: int = 0,
        aux: Any = None,
        cached: bool = True,
    ) -> None:
        """``out = epilogue(op(a) @ op(b))`` with the tiled GEMMs (``gemm != "matmul"``).

        ``cached``: operands are this object's workspaces or views that recur every call
        (numba views cached by identity, no argument checks); else checked and not cached.
        """
        if self._raw is not None:
            self._raw.gemm(
                a,
                b,
                out,
                trans_a=trans_a,
                trans_b=trans_b,
                epilogue=epilogue,
                bias=bias,
                bias_off=bias_off,
                aux=aux,
                tf32=self.gemm == "tiled-tf32",
                max_blocks=self._launch["max_blocks"],
                check=not cached,
            )
            return
        kw = self._kw()
        if cached:
            dv = self._dv
            a, b, out = dv(a, trans_a), dv(b, trans_b), dv(out)
            bias = None if bias is None else dv(bias)
            aux = None if aux is None else dv(aux)
            trans_a = trans_b = False
        cuda_gemm.gemm(
            a,
            b,
            out,
            trans_a=trans_a,
            trans_b=trans_b,
            epilogue=epilogue,
            bias=bias,
            bias_off=bias_off,
            aux=aux,
            tiles=self.tiles,
            max_blocks=kw["max_blocks"],
            stream=kw["stream"],
            check=not cached,
        )

    def _weights(self, flat: Any) -> list[Any]:
        """Per-layer ``(C, n_in, n_out)`` views of ``flat``, cached by identity."""
        hit = self._w_views.get(id(flat))
        if hit is None or hit[0] is not flat:
            if len(self._w_views) >= 4:
                self._w_views.clear()
            hit = self._w_views[id(flat)] = (
                flat,
                [self._w_view(flat, lay) for lay in self.spec.layers],
            )
        return hit[1]

    def _kw(self) -> dict[str, Any]:
        stream = self._stream() if callable(self._stream) else self._stream
        return {**self._launch, "stream": stream}

    def _w_view(self, flat: Any, lay: LayerSpec) -> Any:
        """``(C, n_in, n_out)`` view of a layer's weights; never a copy (checked)."""
        w = flat[:, lay.w_slice].reshape(self.n_chains, lay.n_in, lay.n_out)
        if _data_ptr(w) != _data_ptr(flat) + lay.w_offset * flat.itemsize:
            raise ConfigError(
                f"EpilogueMLP: the weights of layer {lay.name} are not a view of the flat array "
                "(the array module copied on reshape); pass C-contiguous (C, P) arrays"
            )
        return w

    def _check_flat(self, a: Any, name: str, where: str) -> None:
        expect = (self.n_chains, self.spec.size)
        ok = (
            isinstance(a, self.xp.ndarray)
            and tuple(a.shape) == expect
            and a.dtype == self.dtype
            and a.flags.c_contiguous
        )
        if not ok:
            raise ConfigError(
                f"EpilogueMLP.{where}: {name} is a {type(a).__name__} of shape "
                f"{getattr(a, 'shape', None)} and dtype {getattr(a, 'dtype', None)}, expected a "
                f"C-contiguous {self.xp.__name__} array of shape {expect} and dtype {self.dtype}"
            )

    def _stage(self, a: Any, work: Any, name: str, where: str) -> Any:
        """``a`` itself when it can be used in place, else ``a`` copied into ``work``."""
        if tuple(getattr(a, "shape", ())) != tuple(work.shape):
            raise ConfigError(
                f"EpilogueMLP.{where}: {name} has shape {getattr(a, 'shape', None)}, expected "
                f"{tuple(work.shape)} (n_chains, batch_size, ...) as given to EpilogueMLP(...)"
            )
        xp = self.xp
        if isinstance(a, xp.ndarray) and a.dtype == work.dtype and a.flags.c_contiguous:
            return a
        if xp is not np and isinstance(a, np.ndarray):
            work.set(np.ascontiguousarray(a, dtype=work.dtype))  # host -> device
        else:
            work[...] = a
        return work

    # -- the layers' steps, one implementation per GEMM strategy ----------------------------
    def _dense(
        self, h: Any, w: Any, out: Any, params: Any, off: int, relu: bool, kw: dict, cached: bool
    ) -> None:
        """``out = h @ w + b`` (then ReLU with ``relu``), ``b`` at ``params[:, off:]``: one
        tiled GEMM with the epilogue fused, or ``matmul`` then the numba epilogue.
        ``cached``: the operands recur every call (numba views cached by identity)."""
        if self.gemm != "matmul":
            epilogue = "bias_relu" if relu else "bias"
            self._gemm(h, w, out, epilogue=epilogue, bias=params, bias_off=off, cached=cached)
            return
        self.matmul(h, w, out=out)
        view = self._dv if cached else (lambda a: a)
        (bias_relu_ if relu else bias_)(view(out), view(params), off, **kw)

    def _loss(self, y: Any, kw: dict) -> None:
        """Softmax-cross-entropy of the logits workspace against ``y``: ``dlogits``, the
        per-row log-likelihoods and their per-chain sums (the C++ path's own kernels, or
        the numba ones)."""
        raw, dv = self._raw, self._dv
        if raw is None:
            softmax_xent(dv(self._logits), dv(y), dv(self._dlogits), dv(self._row_ll), **kw)
            loglik_sum(dv(self._row_ll), dv(self._loglik), **kw)
            return
        if y.dtype != np.int32:
            self._y_work[...] = y
            y = self._y_work
        mb = self._launch["max_blocks"]
        raw.softmax_xent(self._logits, y, self._dlogits, self._row_ll, max_blocks=mb, check=False)
        raw.loglik_sum(self._row_ll, self._loglik, max_blocks=mb, check=False)

    def _bias_grad(self, dz: Any, grad_out: Any, off: int, kw: dict) -> None:
        """``grad_out[:, off:off + n] = Σ_rows dz`` (C++ or numba kernel)."""
        if self._raw is not None:
            mb = self._launch["max_blocks"]
            self._raw.bias_grad(dz, grad_out, off, max_blocks=mb, check=False)
        else:
            bias_grad(self._dv(dz), self._dv(grad_out), off, **kw)

    def _weight_grad(self, h_in: Any, dz: Any, gw: Any) -> None:
        """``gw = h_in^T dz`` per chain, straight into the gradient's weight view."""
        if self.gemm != "matmul":
            self._gemm(h_in, dz, gw, trans_a=True)
        else:
            self.matmul(h_in.transpose(0, 2, 1), dz, out=gw)

    def _backprop(
        self, dz: Any, w: Any, dh: Any, act: Any, grad_out: Any, off: int, kw: dict
    ) -> None:
        """``dh = (dz @ w^T) * (act > 0)`` and the bias gradient of ``dh`` at ``off``: the
        mask fused into the tiled GEMM, or ``matmul`` then one numba pass for both."""
        if self.gemm != "matmul":
            self._gemm(dz, w, dh, trans_b=True, epilogue="relu_grad", aux=act)
            self._bias_grad(dh, grad_out, off, kw)
        else:
            dv = self._dv
            self.matmul(dz, w.transpose(0, 2, 1), out=dh)
            relu_backward_bias_grad(dv(dh), dv(act), dv(grad_out), off, **kw)

    def _checked_inputs(self, params: Any, x: Any, y: Any, grad_out: Any) -> tuple[Any, Any]:
        """Validate :meth:`loglik_and_grad`'s arguments (clear errors); returns ``(x, y)``
        staged into the workspaces where they cannot be used in place."""
        where = "loglik_and_grad"
        self._check_flat(params, "params", where)
        self._check_flat(grad_out, "grad_out", where)
        if _data_ptr(grad_out) == _data_ptr(params):
            raise ConfigError(f"EpilogueMLP.{where}: grad_out is params; pass a separate buffer")
        if isinstance(y, np.ndarray):
            if y.dtype.kind not in "iu":
                raise ConfigError(
                    f"EpilogueMLP.{where}: y has dtype {y.dtype}, expected integer labels"
                )
            k = self.spec.n_outputs
            if y.size and (y.min() < 0 or y.max() >= k):
                raise ConfigError(
                    f"EpilogueMLP.{where}: labels span [{y.min()}, {y.max()}], expected class "
                    f"indices in [0, {k})"
                )
        x = self._stage(x, self._x_work, "x", where)
        if isinstance(y, self.xp.ndarray) and y.dtype.kind in "iu" and y.flags.c_contiguous:
            if tuple(y.shape) != (self.n_chains, self.batch_size):
                raise ConfigError(
                    f"EpilogueMLP.{where}: y has shape {y.shape}, expected "
                    f"{(self.n_chains, self.batch_size)}"
                )
        else:
            y = self._stage(y, self._y_work, "y", where)
        return x, y

    # -- hot path ----------------------------------------------------------------------------
    def loglik_and_grad(self, params: Any, x: Any, y: Any, grad_out: Any) -> Any:
        """Minibatch log-likelihood of each chain; its gradient is written into ``grad_out``.

        Parameters
        ----------
        params : xp array, shape (C, P), C-contiguous, dtype ``self.dtype``
        x : array, shape (C, B, D)
            Host or device; copied into a workspace unless already a contiguous ``xp``
            array of ``self.dtype``.
        y : array of int, shape (C, B)
            Labels in ``[0, K)``: host labels are checked (ConfigError); device labels are
            not, and an out-of-range one makes its chain's results NaN.
        grad_out : xp array, shape (C, P), C-contiguous, dtype ``self.dtype``
            Overwritten (every entry) with the gradient of the log-likelihood.

        Returns
        -------
        xp array, shape (C,), float64
            ``Σ_b log p(y[c, b] | x[c, b], params[c])`` (a new array; no host sync).
        """
        x, y = self._checked_inputs(params, x, y, grad_out)
        kw = self._kw()
        layers = self.spec.layers
        last = len(layers) - 1
        w, gw = self._weights(params), self._weights(grad_out)
        # forward: h_{l+1} = relu(h_l @ W_l + b_l); logits = h_L @ W_L + b_L
        h = x
        for i in range(last):
            self._dense(h, w[i], self._acts[i], params, layers[i].b_offset, True, kw, True)
            h = self._acts[i]
        self._dense(h, w[last], self._logits, params, layers[last].b_offset, False, kw, True)
        self._loss(y, kw)
        loglik = self._loglik.copy()
        # backward: dW_l = h_l^T dz_l (into grad_out), db_l = Σ_rows dz_l,
        # dz_{l-1} = (dz_l @ W_l^T) * (h_l > 0)
        dz = self._dlogits
        self._bias_grad(dz, grad_out, layers[last].b_offset, kw)
        for i in range(last, -1, -1):
            self._weight_grad(x if i == 0 else self._acts[i - 1], dz, gw[i])
            if i > 0:
                dh, act = self._deltas[i - 1], self._acts[i - 1]
                self._backprop(dz, w[i], dh, act, grad_out, layers[i - 1].b_offset, kw)
                dz = dh
        return loglik

    # -- prediction ------------------------------------------------------------------------
    def logits(self, params: Any, x: Any, chunk: int = 4096) -> Any:
        """Output-layer pre-activations ``(C, N, K)`` for inputs ``x`` (N, D) shared by all
        chains, ``chunk`` rows at a time."""
        return self._predict(params, x, chunk, softmax=False, where="logits")

    def predict_proba(self, params: Any, x: Any, chunk: int = 4096) -> Any:
        """Predictive class probabilities ``(C, N, K)``; see :meth:`logits`."""
        return self._predict(params, x, chunk, softmax=True, where="predict_proba")

    def _predict(self, params: Any, x: Any, chunk: int, softmax: bool, where: str) -> Any:
        self._check_flat(params, "params", where)
        spec, c, xp = self.spec, self.n_chains, self.xp
        if len(getattr(x, "shape", ())) != 2 or x.shape[1] != spec.n_inputs:
            raise ConfigError(
                f"EpilogueMLP.{where}: x has shape {getattr(x, 'shape', None)}, expected "
                f"(N, {spec.n_inputs}) (inputs shared by all chains)"
            )
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
            raise ConfigError(f"EpilogueMLP.{where}: chunk={chunk!r}, expected a positive int")
        n = int(x.shape[0])
        out = xp.empty((c, n, spec.n_outputs), self.dtype)
        kw = self._kw()
        layers = spec.layers
        for s in range(0, n, int(chunk)):
            e = min(s + int(chunk), n)
            xs = x[s:e]
            if xp is not np and isinstance(xs, np.ndarray):
                xs = xp.asarray(np.ascontiguousarray(xs, dtype=self.dtype))
            else:
                xs = xp.ascontiguousarray(xs, dtype=self.dtype)
            h = xs
            if self.gemm != "matmul":  # inputs shared by all chains: a broadcast view
                h = xp.broadcast_to(h[None], (c, *h.shape))
            for lay in layers[:-1]:
                a = xp.empty((c, e - s, lay.n_out), self.dtype)
                self._dense(h, self._w_view(params, lay), a, params, lay.b_offset, True, kw, False)
                h = a
            z = xp.empty((c, e - s, spec.n_outputs), self.dtype)
            lay = layers[-1]
            self._dense(h, self._w_view(params, lay), z, params, lay.b_offset, False, kw, False)
            if softmax:
                softmax_(z, **kw)
            out[:, s:e] = z
        return out


def cuda_loglik_and_grad(
    spec: ParamSpec,
    params: Any,
    x: Any,
    y: Any,
    *,
    xp: Any = np,
    matmul: MatMul | None = None,
    threads: int = DEFAULT_THREADS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
    gemm: str = "matmul",
    tiles: GemmTiles | None = None,
) -> tuple[Any, Any]:
    """One forward/backward pass of :class:`EpilogueMLP` (workspaces built for this call).

    Parameters
    ----------
    spec : ParamSpec
    params : xp array, shape (C, P), float32
    x : array, shape (C, B, D); y : array of int, shape (C, B)
    xp : module
        ``numpy`` (GEMMs on the host: the simulator's path) or ``cupy``.
    matmul : callable, optional
        GEMM, ``matmul(a, b, out=out)``; default ``xp.matmul``.
    threads, max_blocks, stream
        Launch configuration of the epilogue kernels.
    gemm, tiles
        GEMM implementation and tile configuration, as in :class:`EpilogueMLP`.

    Returns
    -------
    loglik : xp array, shape (C,), float64
    grad : xp array, shape (C, P), dtype of ``params``
    """
    c, b = int(params.shape[0]), int(x.shape[1])
    mlp = EpilogueMLP(
        spec,
        c,
        b,
        xp=xp,
        matmul=matmul,
        dtype=params.dtype,
        threads=threads,
        max_blocks=max_blocks,
        stream=stream,
        gemm=gemm,
        tiles=tiles,
    )
    grad = xp.empty(params.shape, params.dtype)
    loglik = mlp.loglik_and_grad(params, x, y, grad)
    return loglik, grad
