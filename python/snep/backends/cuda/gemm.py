"""Hand-written batched GEMM kernels of the MLP, with fused epilogues, in numba.cuda.

The GEMMs of the MLP of Hasenclever et al., JMLR 18 (2017), §6, batched over a leading
chain axis ``C`` (docs/method.md §2, "Batched over chains"), without cuBLAS: for every chain ``c``

    out[c] = epilogue(op(A[c]) @ op(B[c]))        op(X) = X or X^T

with the operands any strided 3-D views (the layer weights are ``(C, n_in, n_out)`` views
of the flat ``(C, P)`` parameter array, chains ``P`` apart; the weight gradient is written
into the same kind of view of the flat gradient array; nothing is copied).  The epilogue
is applied to the float32 accumulator before the single store of each output:

* ``"bias"``: ``+ params[c, off + j]`` (the output layer);
* ``"bias_relu"``: ``epilogues.bias_relu(acc, params[c, off + j])`` (hidden layers);
* ``"relu_grad"``: ``epilogues.relu_grad(h[c, i, j], acc)`` (the input gradient through a
  ReLU whose output is ``h``);
* ``"none"``.

The scalar epilogue functions are those of :mod:`snep.model.epilogues` (the single source of
truth, compiled here with ``cuda.jit(device=True)``); biases are read from the whole flat
``(C, P)`` parameter array at the layer's offset, as in
:func:`snep.backends.cuda.epilogues.bias_relu_`.

The kernel is a shared-memory tiled GEMM (:mod:`snep.backends.cuda.gemm_common` describes the
tiling, which ``kernels/mlp_gemm.cu`` repeats in CUDA C++): each block loops over output
tiles (so any grid covers any size), stages ``BK``-wide chunks of both operands in shared
memory, zero-filled past the matrix edges, and each thread accumulates a ``TM x TN``
micro-tile in registers.  Loads are coalesced along whichever axis of an operand has the
smaller stride (a run-time test on the strides, uniform across the block).

Entry points: :func:`gemm` (the general form, with ``trans_a``/``trans_b``), and the three
shapes of one MLP layer, :func:`linear_forward` (``Z = H W + b``, optional ReLU),
:func:`weight_grad` (``G_W = H^T dZ`` into the flat gradient) and :func:`input_grad`
(``dH = dZ W^T``, optional ReLU mask).  They take numba device arrays, CuPy arrays
(wrapped without a synchronisation; launch on the producer's stream) or, under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), numpy arrays, strided views included (the simulator
then works on them in place).

This module imports ``numba.cuda``; only the CUDA backend and its tests import it.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import config as _numba_config
from numba import cuda

from snep.backends.cuda.gemm_common import (
    DEFAULT_MAX_BLOCKS,
    EPI_BIAS,
    EPI_BIAS_RELU,
    EPI_RELU_GRAD,
    EPILOGUES,
    SMEM_PAD,
    TILES,
    GemmTiles,
    check_gemm,
    grid_blocks,
    transposed,
    weight_view,
)
from snep.errors import ConfigError
from snep.model import epilogues
from snep.model.spec import LayerSpec

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "EPILOGUES",
    "SIMULATOR",
    "TILES",
    "GemmTiles",
    "gemm",
    "gemm_kernel",
    "input_grad",
    "linear_forward",
    "weight_grad",
]

#: True when numba.cuda is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)
SIMULATOR = bool(_numba_config.ENABLE_CUDASIM)
if SIMULATOR:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _FakeCUDAArray
else:  # pragma: no cover - needs a GPU
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray as _is_numba_device_array

# the scalar epilogues (snep.model.epilogues), compiled as device functions
_dev_bias_relu = cuda.jit(device=True)(epilogues.bias_relu)
_dev_relu_grad = cuda.jit(device=True)(epilogues.relu_grad)


# ---------------------------------------------------------------------------------------
# the kernel (one compiled kernel per tile configuration; the tile sizes are compile-time
# constants of its closure)
# ---------------------------------------------------------------------------------------
@functools.cache
def gemm_kernel(tiles: GemmTiles = TILES) -> Any:
    """The ``cuda.jit`` kernel for ``tiles``: ``kernel[blocks, tiles.threads, stream](a, b,
    out, bias, bias_off, aux, epi)``.

    ``a`` (C, M, K), ``b`` (C, K, N), ``out`` (C, M, N), ``aux`` (C, M, N) are float32
    arrays of any strides, ``bias`` the flat (C, P) parameters, ``epi`` an epilogue code of
    :data:`~snep.backends.cuda.gemm_common.EPILOGUES` (``bias``/``aux`` are read only by the
    epilogues that need them; pass any array of the right rank otherwise).  Cached per
    configuration; ``.py_func`` is the Python source, for ``cuda.compile_ptx``.
    """
    bm, bn, bk, tm, tn = tiles.bm, tiles.bn, tiles.bk, tiles.tm, tiles.tn
    thr_m, thr_n, n_threads = tiles.threads_m, tiles.threads_n, tiles.threads
    a_loads, b_loads = tiles.a_loads, tiles.b_loads
    a_smem = (bk, bm + SMEM_PAD)  # [k][m]: a thread's rows are read along m
    b_smem = (bk, bn + SMEM_PAD)  # [k][n]
    n_acc = tm * tn
    f32 = numba.float32
    i32 = numba.int32
    epi_bias, epi_bias_relu, epi_relu_grad = EPI_BIAS, EPI_BIAS_RELU, EPI_RELU_GRAD
    dev_bias_relu, dev_relu_grad = _dev_bias_relu, _dev_relu_grad

    def _gemm_tiles_kernel(a, b, out, bias, bias_off, aux, epi):
        n_chains, m_size, k_size = a.shape
        n_size = b.shape[2]
        a_s = cuda.shared.array(a_smem, f32)
        b_s = cuda.shared.array(b_smem, f32)
        acc = cuda.local.array(n_acc, f32)
        a_r = cuda.local.array(tm, f32)
        b_r = cuda.local.array(tn, f32)
        va = cuda.local.array(a_loads, f32)
        vb = cuda.local.array(b_loads, f32)
        a_mm = cuda.local.array(a_loads, i32)
        a_kk = cuda.local.array(a_loads, i32)
        b_kk = cuda.local.array(b_loads, i32)
        b_nn = cuda.local.array(b_loads, i32)
        tid = cuda.threadIdx.x
        ty = tid // thr_n
        tx = tid - ty * thr_n
        # coalesce the loads along the axis of smaller stride (uniform across the block)
        a_k_fast = a.strides[2] <= a.strides[1]
        b_n_fast = b.strides[2] <= b.strides[1]
        tiles_m = (m_size + bm - 1) // bm
        tiles_n = (n_size + bn - 1) // bn
        n_tiles = n_chains * tiles_m * tiles_n
        for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
            col = t % tiles_n
            r = t // tiles_n
            row = r % tiles_m
            c = r // tiles_m
            m0 = row * bm
            n0 = col * bn
            for q in range(n_acc):
                acc[q] = f32(0.0)
            for k0 in range(0, k_size, bk):
                # all loads of the chunk first (registers), then the shared-memory stores
                for q in range(a_loads):
                    e = tid + q * n_threads
                    if a_k_fast:
                        mm = e // bk
                        kk = e - mm * bk
                    else:
                        kk = e // bm
                        mm = e - kk * bm
                    gm = m0 + mm
                    gk = k0 + kk
                    v = f32(0.0)
                    if gm < m_size and gk < k_size:
                        v = a[c, gm, gk]
                    va[q] = v
                    a_mm[q] = mm
                    a_kk[q] = kk
                for q in range(b_loads):
                    e = tid + q * n_threads
                    if b_n_fast:
                        kk = e // bn
                        nn = e - kk * bn
                    else:
                        nn = e // bk
                        kk = e - nn * bk
                    gn = n0 + nn
                    gk = k0 + kk
                    v = f32(0.0)
                    if gn < n_size and gk < k_size:
                        v = b[c, gk, gn]
                    vb[q] = v
                    b_kk[q] = kk
                    b_nn[q] = nn
                for q in range(a_loads):
                    a_s[a_kk[q], a_mm[q]] = va[q]
                for q in range(b_loads):
                    b_s[b_kk[q], b_nn[q]] = vb[q]
                cuda.syncthreads()
                for kk in range(bk):
                    for i in range(tm):
                        a_r[i] = a_s[kk, ty + i * thr_m]
                    for j in range(tn):
                        b_r[j] = b_s[kk, tx + j * thr_n]
                    for i in range(tm):
                        for j in range(tn):
                            acc[i * tn + j] += a_r[i] * b_r[j]
                cuda.syncthreads()
            # epilogue and the one store of each output
            for i in range(tm):
                gm = m0 + ty + i * thr_m
                if gm < m_size:
                    for j in range(tn):
                        gn = n0 + tx + j * thr_n
                        if gn < n_size:
                            v = acc[i * tn + j]
                            if epi == epi_bias_relu:
                                out[c, gm, gn] = dev_bias_relu(v, bias[c, bias_off + gn])
                            elif epi == epi_bias:
                                out[c, gm, gn] = v + bias[c, bias_off + gn]
                            elif epi == epi_relu_grad:
                                out[c, gm, gn] = dev_relu_grad(aux[c, gm, gn], v)
                            else:
                                out[c, gm, gn] = v

    _gemm_tiles_kernel.__qualname__ = _gemm_tiles_kernel.__name__ = f"gemm_{bm}x{bn}x{bk}_{tm}x{tn}"
    return cuda.jit(_gemm_tiles_kernel)


# ---------------------------------------------------------------------------------------
# host wrappers
# ---------------------------------------------------------------------------------------
_dummy_bias: dict[int, Any] = {}


def _device(a: Any, name: str) -> Any:
    """``a`` as the kernel takes it, without a host synchronisation or a copy.

    Simulator: numpy arrays (strided views included) are wrapped so that the kernel works
    on them in place.  GPU: numba device arrays pass through, ``__cuda_array_interface__``
    exporters (CuPy) are wrapped with ``sync=False``.
    """
    if SIMULATOR:
        if isinstance(a, np.ndarray):
            return _FakeCUDAArray(a)
        return a
    if _is_numba_device_array(a):  # pragma: no cover - needs a GPU
        return a
    if hasattr(a, "__cuda_array_interface__"):  # pragma: no cover - needs a GPU
        return cuda.as_cuda_array(a, sync=False)
    raise ConfigError(
        f"cuda_gemm: {name} is a {type(a).__name__}, expected a numba device array or an "
        "array with __cuda_array_interface__ (e.g. a CuPy array); numpy arrays only under "
        "the CUDA simulator"
    )


def _no_bias() -> Any:
    """A (1, 1) float32 placeholder for the bias argument of the bias-free epilogues."""
    key = 0 if SIMULATOR else int(cuda.get_current_device().id)
    d = _dummy_bias.get(key)
    if d is None:
        zeros = np.zeros((1, 1), np.float32)
        d = _dummy_bias[key] = zeros if SIMULATOR else cuda.to_device(zeros)
    return d


def gemm(
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
    tiles: GemmTiles = TILES,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
    check: bool = True,
) -> None:
    """``out[c] = epilogue(op(a[c]) @ op(b[c]))`` for every chain ``c``, float32.

    Parameters
    ----------
    a : array, shape (C, M, K), or (C, K, M) with ``trans_a``
    b : array, shape (C, K, N), or (C, N, K) with ``trans_b``
        Any strides (views of larger arrays are read in place).
    out : array, shape (C, M, N)
        Every entry is written once; any strides (e.g. a weight view of the flat gradient);
        must not overlap ``a`` or ``b``.
    trans_a, trans_b : bool
        Use ``a[c]^T`` / ``b[c]^T`` (a transposed view; nothing is copied).  numpy or CuPy
        operands only (pass pre-transposed views of numba device arrays).
    epilogue : {"none", "bias", "bias_relu", "relu_grad"}
        See the module docstring.
    bias : array, shape (C, P)
        The flat parameters; the bias of chain ``c`` is ``bias[c, bias_off:bias_off + N]``
        (``"bias"`` and ``"bias_relu"``).
    bias_off : int
        The layer's ``b_offset``.
    aux : array, shape (C, M, N)
        The ReLU's output ``h`` of ``"relu_grad"`` (may be ``out`` itself).
    tiles : GemmTiles
        Tile configuration (tests use small tiles to exercise the edges cheaply).
    max_blocks : int
        Cap on the grid; the tile loop covers the rest.
    stream : numba stream or 0
        Stream of the launch.
    check : bool
        Validate shapes, dtypes and aliasing (ConfigError naming the offending argument);
        hot loops that validated once may pass False.
    """
    if trans_a:
        a = transposed(a, "a")
    if trans_b:
        b = transposed(b, "b")
    if check:
        shape, epi = check_gemm("gemm", a, b, out, epilogue, bias, bias_off, aux)
        c, m, n = shape.c, shape.m, shape.n
    else:
        c, m, _ = (int(s) for s in a.shape)
        n = int(b.shape[2])
        epi = EPILOGUES[epilogue]
    n_tiles = tiles.n_tiles(c, m, n)
    if n_tiles == 0:
        return
    if epi not in (EPI_BIAS, EPI_BIAS_RELU):
        bias, bias_off = _no_bias(), 0
    if epi != EPI_RELU_GRAD:
        aux = out
    kernel = gemm_kernel(tiles)
    blocks = grid_blocks(n_tiles, max_blocks)
    kernel[blocks, tiles.threads, stream](
        _device(a, "a"),
        _device(b, "b"),
        _device(out, "out"),
        _device(bias, "bias"),
        int(bias_off),
        _device(aux, "aux"),
        int(epi),
    )


# ---------------------------------------------------------------------------------------
# the three GEMM shapes of one MLP layer
# ---------------------------------------------------------------------------------------
def linear_forward(
    h: Any,
    params: Any,
    layer: LayerSpec,
    out: Any,
    *,
    relu: bool = True,
    tiles: GemmTiles = TILES,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``out = relu(h @ W_l + b_l)`` (or without the ReLU), one launch.

    Parameters
    ----------
    h : array, shape (C, B, n_in)
        The layer's input.
    params : array, shape (C, P), C-contiguous float32
        The flat parameters; ``W_l`` is read in place as the ``(C, n_in, n_out)`` view at
        ``layer.w_offset`` and ``b_l`` at ``layer.b_offset``.
    layer : LayerSpec
    out : array, shape (C, B, n_out)
    relu : bool
        Fuse ``epilogues.bias_relu`` (hidden layers) or only add the bias (output layer).
    """
    w = weight_view(params, layer, "linear_forward")
    epilogue = "bias_relu" if relu else "bias"
    gemm(
        h,
        w,
        out,
        epilogue=epilogue,
        bias=params,
        bias_off=layer.b_offset,
        tiles=tiles,
        max_blocks=max_blocks,
        stream=stream,
    )


def weight_grad(
    h: Any,
    dz: Any,
    grad: Any,
    layer: LayerSpec,
    *,
    tiles: GemmTiles = TILES,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``G_W[c] = h[c]^T dz[c]`` written into ``layer``'s weight view of ``grad`` (C, P).

    ``h`` is the layer's input (C, B, n_in), ``dz`` the gradient of its pre-activation
    (C, B, n_out); the other entries of ``grad`` are not touched.
    """
    gw = weight_view(grad, layer, "weight_grad")
    gemm(h, dz, gw, trans_a=True, tiles=tiles, max_blocks=max_blocks, stream=stream)


def input_grad(
    dz: Any,
    params: Any,
    layer: LayerSpec,
    out: Any,
    *,
    relu_out: Any = None,
    tiles: GemmTiles = TILES,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> None:
    """``out = dz @ W_l^T``, masked by ``relu_out > 0`` when given (``epilogues.relu_grad``).

    ``dz`` is (C, B, n_out), ``out`` (C, B, n_in); ``relu_out`` is the layer's input when
    that is the output of a ReLU (so ``out`` is then the gradient of the previous layer's
    pre-activation).
    """
    w = weight_view(params, layer, "input_grad")
    gemm(
        dz,
        w,
        out,
        trans_b=True,
        epilogue="none" if relu_out is None else "relu_grad",
        aux=relu_out,
        tiles=tiles,
        max_blocks=max_blocks,
        stream=stream,
    )
