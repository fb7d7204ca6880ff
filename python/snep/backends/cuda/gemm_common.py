"""Tiling, epilogue codes and operand checks shared by the hand-written batched GEMMs.

The MLP of Hasenclever et al., JMLR 18 (2017), §6, batched over a leading chain axis ``C``
(docs/method.md §2, "Batched over chains"), needs three GEMM shapes per layer ``l``:

* forward ``Z = H W_l`` (then ``+ b_l`` and a ReLU, fused as the GEMM's epilogue),
* weight gradient ``G_W = H^T dZ``, written straight into the layer's ``(n_in, n_out)``
  view of the flat ``(C, P)`` gradient array,
* input gradient ``dH = dZ W_l^T`` (optionally masked by the ReLU's derivative, fused).

Two implementations compute them with the same tiling and indexing, so that one float64
oracle checks both: the numba.cuda kernel of :mod:`snep.backends.cuda.gemm` (which also
runs under Numba's CUDA simulator) and ``kernels/mlp_gemm.cu`` (CUDA C++, launched by
:mod:`snep.backends.cuda.gemm_raw`, with an opt-in TF32 tensor-core variant).  This module
holds what they share and imports neither numba.cuda nor CuPy:

* :class:`GemmTiles` / :data:`TILES`: the block tile ``BM x BN``, the reduction chunk
  ``BK`` and each thread's ``TM x TN`` micro-tile (``kernels/mlp_gemm.cu`` has the same
  numbers as ``constexpr`` values; a test compares them);
* :data:`EPILOGUES`: the epilogue codes (the template argument of the C++ kernel, the run-time
  ``epi`` argument of the numba kernel);
* :func:`check_gemm`: shape, dtype and aliasing checks of one launch, with errors that name
  the offending value and the expected shape;
* :func:`weight_view`: the ``(C, n_in, n_out)`` view of a layer's weights in a flat
  ``(C, P)`` array (chains ``P`` apart), never a copy.

The kernels' contract, for every chain ``c`` (operands are any strided 3-D views)::

    out[c] = epilogue(op(A[c]) @ op(B[c]))        op(X) = X or X^T

Each block owns ``BM x BN`` output tiles in turn (a tile loop over ``C * ceil(M / BM) *
ceil(N / BN)`` tiles, so any grid covers any size); tile ``t`` is chain ``t // (tiles_m *
tiles_n)``, tile row ``(t // tiles_n) % tiles_m``, tile column ``t % tiles_n``.  Thread
``(ty, tx)`` of the ``(BM / TM) x (BN / TN)`` block accumulates rows ``ty + i * BM / TM``
and columns ``tx + j * BN / TN`` of the tile in float32, over ``BK``-wide chunks of the
reduction staged in shared memory (zero-filled past the edges).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from snep.errors import ConfigError
from snep.model.spec import LayerSpec

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "EPILOGUES",
    "EPI_BIAS",
    "EPI_BIAS_RELU",
    "EPI_NONE",
    "EPI_RELU_GRAD",
    "SMEM_PAD",
    "TILES",
    "GemmShape",
    "GemmTiles",
    "check_gemm",
    "grid_blocks",
    "transposed",
    "weight_view",
]

#: ``out = acc``
EPI_NONE = 0
#: ``out = acc + bias[c, bias_off + j]`` (the output layer)
EPI_BIAS = 1
#: ``out = epilogues.bias_relu(acc, bias[c, bias_off + j])`` (hidden layers)
EPI_BIAS_RELU = 2
#: ``out = epilogues.relu_grad(aux[c, i, j], acc)`` (input gradient through a ReLU whose
#: output is ``aux``)
EPI_RELU_GRAD = 3
#: epilogue name -> code
EPILOGUES: dict[str, int] = {
    "none": EPI_NONE,
    "bias": EPI_BIAS,
    "bias_relu": EPI_BIAS_RELU,
    "relu_grad": EPI_RELU_GRAD,
}
#: padding (floats) of each shared-memory row of the fp32 kernels: the stores of a
#: column-major-loaded tile then hit different banks
SMEM_PAD = 1
#: cap on the blocks of one launch (the tile loop strides over the rest)
DEFAULT_MAX_BLOCKS = 65535


@dataclasses.dataclass(frozen=True)
class GemmTiles:
    """Tile configuration of the fp32 GEMM kernels.

    Parameters
    ----------
    bm, bn : int
        Rows and columns of the output tile a block computes.
    bk : int
        Width of the reduction chunk staged in shared memory.
    tm, tn : int
        Rows and columns each thread accumulates; a block has ``(bm / tm) * (bn / tn)``
        threads, and ``bm * bk`` and ``bk * bn`` must be multiples of that (each thread
        loads the same number of elements of each operand tile).
    """

    bm: int = 64
    bn: int = 64
    bk: int = 16
    tm: int = 4
    tn: int = 4

    def __post_init__(self) -> None:
        vals = dataclasses.asdict(self)
        bad = {k: v for k, v in vals.items() if not isinstance(v, int) or v <= 0}
        if bad:
            raise ConfigError(f"GemmTiles: {bad} must be positive ints")
        if self.bm % self.tm or self.bn % self.tn:
            raise ConfigError(
                f"GemmTiles: bm={self.bm}, bn={self.bn} must be multiples of tm={self.tm}, "
                f"tn={self.tn}"
            )
        nt = self.threads
        if nt > 1024:
            raise ConfigError(f"GemmTiles: {nt} threads per block; CUDA allows at most 1024")
        if (self.bm * self.bk) % nt or (self.bk * self.bn) % nt:
            raise ConfigError(
                f"GemmTiles: bm*bk={self.bm * self.bk} and bk*bn={self.bk * self.bn} must be "
                f"multiples of the {nt} threads of a block"
            )

    @property
    def threads_m(self) -> int:
        """Threads along the tile's rows, ``bm / tm``."""
        return self.bm // self.tm

    @property
    def threads_n(self) -> int:
        """Threads along the tile's columns, ``bn / tn``."""
        return self.bn // self.tn

    @property
    def threads(self) -> int:
        """Threads per block."""
        return self.threads_m * self.threads_n

    @property
    def a_loads(self) -> int:
        """Elements of the ``A`` tile each thread loads per chunk."""
        return self.bm * self.bk // self.threads

    @property
    def b_loads(self) -> int:
        """Elements of the ``B`` tile each thread loads per chunk."""
        return self.bk * self.bn // self.threads

    def n_tiles(self, n_chains: int, m: int, n: int) -> int:
        """Output tiles of a ``(C, M, N)`` result: ``C * ceil(M / bm) * ceil(N / bn)``."""
        return n_chains * (-(-m // self.bm)) * (-(-n // self.bn))


#: the production tiles: 64 x 64 outputs per block of 16 x 16 threads (4 x 4 each), chunks
#: of 16 (the constants of kernels/mlp_gemm.cu)
TILES = GemmTiles()


def grid_blocks(n_tiles: int, max_blocks: int = DEFAULT_MAX_BLOCKS) -> int:
    """Blocks of a launch over ``n_tiles`` tiles: one per tile, at most ``max_blocks``."""
    if isinstance(max_blocks, bool) or not isinstance(max_blocks, (int, np.integer)):
        raise ConfigError(f"gemm: max_blocks={max_blocks!r}, expected a positive int")
    if max_blocks <= 0:
        raise ConfigError(f"gemm: max_blocks={max_blocks}, expected a positive int")
    return max(1, min(int(max_blocks), int(n_tiles)))


@dataclasses.dataclass(frozen=True)
class GemmShape:
    """Sizes of one batched GEMM ``out (C, M, N) = A (C, M, K) @ B (C, K, N)``."""

    c: int
    m: int
    n: int
    k: int


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in getattr(a, "shape", ()))


def _describe(a: Any) -> str:
    return (
        f"a {type(a).__name__} of shape {getattr(a, 'shape', None)} and dtype "
        f"{getattr(a, 'dtype', None)}"
    )


def transposed(a: Any, name: str = "a", where: str = "gemm") -> Any:
    """``a[c]^T`` for every chain: the ``(C, n, m)`` view ``a.transpose(0, 2, 1)``.

    numpy and CuPy arrays (anything with an ``ndarray``-style ``transpose(*axes)``); a numba
    device array cannot be transposed in 3-D, so pass the transposed CuPy view instead.
    """
    if len(_shape(a)) != 3:
        raise ConfigError(f"{where}: {name} is {_describe(a)}, expected a 3-D (C, rows, cols)")
    try:
        return a.transpose(0, 2, 1)
    except (NotImplementedError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"{where}: cannot transpose {name} ({type(a).__name__}): {e}; pass an already "
            "transposed view (e.g. cupy_array.transpose(0, 2, 1)) and trans=False"
        ) from e


def _span(a: Any) -> tuple[int, int] | None:
    """``[lo, hi)`` bytes an array's elements can touch, from its array interface."""
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is None:
        iface = getattr(a, "__array_interface__", None)
    if iface is None or not iface.get("shape"):
        return None
    ptr = int(iface["data"][0])
    shape = iface["shape"]
    if any(s == 0 for s in shape):
        return None
    item = np.dtype(iface["typestr"]).itemsize
    strides = iface.get("strides")
    if strides is None:  # C-contiguous
        return ptr, ptr + item * int(np.prod(shape))
    lo = hi = ptr
    for s, st in zip(shape, strides, strict=True):
        if st >= 0:
            hi += (s - 1) * st
        else:
            lo += (s - 1) * st
    return lo, hi + item


def _overlap(x: Any, y: Any) -> bool:
    sx, sy = _span(x), _span(y)
    return sx is not None and sy is not None and sx[0] < sy[1] and sy[0] < sx[1]


def check_gemm(
    where: str,
    a: Any,
    b: Any,
    out: Any,
    epilogue: str,
    bias: Any = None,
    bias_off: int = 0,
    aux: Any = None,
) -> tuple[GemmShape, int]:
    """Check one launch of ``out = epilogue(a @ b)`` (``a``, ``b`` already transposed).

    Returns
    -------
    shape : GemmShape
    epi : int
        The epilogue's code (:data:`EPILOGUES`).

    Raises
    ------
    ConfigError
        Naming the argument, what it is and the shape/dtype expected: ``a`` must be
        ``(C, M, K)``, ``b`` ``(C, K, N)``, ``out`` ``(C, M, N)``, all float32;
        ``bias`` the whole flat ``(C, P)`` float32 array with ``bias_off + N <= P`` for the
        bias epilogues; ``aux`` ``(C, M, N)`` float32 for ``relu_grad``; ``out`` must not
        overlap ``a`` or ``b``.
    """
    if epilogue not in EPILOGUES:
        raise ConfigError(f"{where}: epilogue={epilogue!r}, expected one of {sorted(EPILOGUES)}")
    sa, sb, so = _shape(a), _shape(b), _shape(out)
    if len(sa) != 3:
        raise ConfigError(f"{where}: a is {_describe(a)}, expected a 3-D (C, M, K) array")
    c, m, k = sa
    if len(sb) != 3 or sb[0] != c or sb[1] != k:
        raise ConfigError(
            f"{where}: b is {_describe(b)}, expected (C, K, N) = ({c}, {k}, N) to match a of "
            f"shape {sa} (after the transposes asked for)"
        )
    n = sb[2]
    if so != (c, m, n):
        raise ConfigError(
            f"{where}: out is {_describe(out)}, expected (C, M, N) = {(c, m, n)} for a of "
            f"shape {sa} and b of shape {sb}"
        )
    for name, arr in (("a", a), ("b", b), ("out", out)):
        if np.dtype(getattr(arr, "dtype", None)) != np.float32:
            raise ConfigError(f"{where}: {name} is {_describe(arr)}, expected float32")
    code = EPILOGUES[epilogue]
    if code in (EPI_BIAS, EPI_BIAS_RELU):
        sp = _shape(bias)
        if bias is None or len(sp) != 2 or sp[0] != c:
            raise ConfigError(
                f"{where}: epilogue {epilogue!r} needs bias, the whole flat (C, P) = ({c}, P) "
                f"parameter array; got {_describe(bias)}"
            )
        off = int(bias_off)
        if off < 0 or off + n > sp[1]:
            raise ConfigError(
                f"{where}: flat array of shape {sp} with offset {off} cannot hold a bias of {n} "
                f"entries per chain; pass the whole (C, P) array and the layer's b_offset"
            )
        if np.dtype(getattr(bias, "dtype", None)) != np.float32:
            raise ConfigError(f"{where}: bias is {_describe(bias)}, expected float32")
    if code == EPI_RELU_GRAD:
        if aux is None or _shape(aux) != (c, m, n):
            raise ConfigError(
                f"{where}: epilogue 'relu_grad' needs aux, the ReLU's output of shape "
                f"(C, M, N) = {(c, m, n)}; got {_describe(aux)}"
            )
        if np.dtype(getattr(aux, "dtype", None)) != np.float32:
            raise ConfigError(f"{where}: aux is {_describe(aux)}, expected float32")
    for name, arr in (("a", a), ("b", b)):
        if _overlap(out, arr):
            raise ConfigError(
                f"{where}: out overlaps {name} in memory; the GEMM cannot run in place, pass a "
                "separate output buffer"
            )
    return GemmShape(c, m, n, k), code


def weight_view(flat: Any, layer: LayerSpec, where: str = "weight_view") -> Any:
    """The ``(C, n_in, n_out)`` view of ``layer``'s weights in a flat ``(C, P)`` array.

    Chain ``c``'s ``W_l`` is row-major at ``flat[c, layer.w_offset:]``, so the view has
    strides ``(P, n_out, 1)`` elements.  Raises ConfigError when ``flat`` is not a
    C-contiguous 2-D array holding the layer, or when the array module copied instead of
    returning a view (the kernels would then read or write the copy).
    """
    s = _shape(flat)
    flags = getattr(flat, "flags", None)
    contiguous = bool(getattr(flags, "c_contiguous", False)) if flags is not None else False
    if len(s) != 2 or s[1] < layer.end or not contiguous:
        raise ConfigError(
            f"{where}: flat is {_describe(flat)}, expected a C-contiguous (C, P) array with "
            f"P >= {layer.end} holding layer {layer.name}"
        )
    w = flat[:, layer.w_slice].reshape(s[0], layer.n_in, layer.n_out)
    sw, sf = _span(w), _span(flat)
    item = int(np.dtype(flat.dtype).itemsize)
    if sw is None or sf is None or sw[0] != sf[0] + layer.w_offset * item:
        raise ConfigError(
            f"{where}: the weights of layer {layer.name} are not a view of the flat array "
            "(the array module copied on reshape); pass C-contiguous (C, P) arrays"
        )
    return w
