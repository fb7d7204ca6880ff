"""CuPy launcher of the CUDA C++ batched GEMMs of ``kernels/mlp_gemm.cu``.

The same GEMMs as the numba.cuda kernel of :mod:`snep.backends.cuda.gemm` (the MLP of
Hasenclever et al., JMLR 18 (2017), §6, batched over chains: ``out[c] = epilogue(op(A[c])
@ op(B[c]))`` with the fused epilogues ``none``/``bias``/``bias_relu``/``relu_grad``), with the
same tiling and indexing (:mod:`snep.backends.cuda.gemm_common`), in CUDA C++:

* ``gemm[_<epilogue>]_float32``: fp32 shared-memory tiles, fp32 accumulation;
* ``gemm_tf32[_<epilogue>]_float32``: the opt-in tensor-core variant (TF32 inputs rounded
  to nearest, fp32 accumulation, ``nvcuda::wmma``), on compute capability >= 8.0;
* the elementwise passes between the GEMMs (:data:`EPILOGUE_KERNELS`): the fused
  softmax-cross-entropy forward/backward (:func:`softmax_xent`), the per-chain sum of the
  row log-likelihoods (:func:`loglik_sum`) and the bias gradient (:func:`bias_grad`), the
  maths and thread mapping of the numba.cuda kernels of
  :mod:`snep.backends.cuda.epilogues`, so that ``gemm="tiled-cpp"`` runs the MLP in C++
  end to end.

Every entry point takes the parameters :data:`GEMM_ARGS` (pointer and element strides of
each operand, the sizes, the bias and ReLU-output arrays of the epilogues); :func:`gemm`
builds them from CuPy views (transposes and the weight views of the flat ``(C, P)``
parameter and gradient arrays are strides, nothing is copied) with
:func:`snep.backends.cuda.fused.build_args`.  The module is the AOT fatbin
``mlp_gemm.fatbin`` that CMake builds from every ``kernels/*.cu`` when ``nvcc`` is present,
else ``mlp_gemm.cu`` compiled by NVRTC (if NVRTC cannot include ``mma.h`` it is compiled
without the tensor-core variant, and :func:`tf32_enabled` says so).

Launches go to CuPy's current stream.  Importing this module imports neither CuPy nor
numba.cuda.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from snep.backends.cuda.fused import (
    _cupy,
    build_args,
    kernel_dir,
    load_fatbin_or_nvrtc,
    nvrtc_log,
)
from snep.backends.cuda.gemm_common import (
    DEFAULT_MAX_BLOCKS,
    EPI_BIAS,
    EPI_BIAS_RELU,
    EPI_RELU_GRAD,
    EPILOGUES,
    SMEM_PAD,
    TILES,
    check_gemm,
    grid_blocks,
    transposed,
)
from snep.errors import BackendUnavailableError, ConfigError

__all__ = [
    "ENTRY_POINTS",
    "EPILOGUE_KERNELS",
    "EPILOGUE_THREADS",
    "GEMM_ARGS",
    "GEMM_CONSTANTS",
    "GEMM_THREADS",
    "bias_grad",
    "compile_nvrtc",
    "entry_point",
    "gemm",
    "load_module",
    "loglik_sum",
    "module_origin",
    "softmax_xent",
    "tf32_enabled",
]

#: threads per block of every entry point (``GEMM_THREADS`` of mlp_gemm.cu)
GEMM_THREADS = TILES.threads
#: the ``constexpr int`` tile constants of mlp_gemm.cu, as this package sees them (tested)
GEMM_CONSTANTS: dict[str, int] = {
    "GEMM_BM": TILES.bm,
    "GEMM_BN": TILES.bn,
    "GEMM_BK": TILES.bk,
    "GEMM_TM": TILES.tm,
    "GEMM_TN": TILES.tn,
    "GEMM_SMEM_PAD": SMEM_PAD,
}

#: parameters of every ``extern "C" __global__ void gemm*_float32(...)``: (name, C type);
#: strides are in elements (chain, row, column of each operand as the GEMM reads it)
GEMM_ARGS: tuple[tuple[str, str], ...] = (
    ("a", "const float*"),
    ("a_sc", "long long"),
    ("a_sm", "long long"),
    ("a_sk", "long long"),
    ("b", "const float*"),
    ("b_sc", "long long"),
    ("b_sk", "long long"),
    ("b_sn", "long long"),
    ("out", "float*"),
    ("o_sc", "long long"),
    ("o_sm", "long long"),
    ("o_sn", "long long"),
    ("n_chains", "long long"),
    ("m", "long long"),
    ("n", "long long"),
    ("k", "long long"),
    ("bias", "const float*"),
    ("bias_sc", "long long"),
    ("bias_off", "long long"),
    ("aux", "const float*"),
    ("x_sc", "long long"),
    ("x_sm", "long long"),
    ("x_sn", "long long"),
)

#: (epilogue, tf32) -> entry point of mlp_gemm.cu
ENTRY_POINTS: dict[tuple[str, bool], str] = {
    (epi, tf32): "gemm"
    + ("_tf32" if tf32 else "")
    + ("" if epi == "none" else f"_{epi}")
    + "_float32"
    for epi in EPILOGUES
    for tf32 in (False, True)
}

#: threads per block of the elementwise kernels
EPILOGUE_THREADS = 256

#: parameters of the elementwise kernels of mlp_gemm.cu: entry point -> ((name, C type), ...)
EPILOGUE_KERNELS: dict[str, tuple[tuple[str, str], ...]] = {
    "softmax_xent_float32": (
        ("logits", "const float*"),
        ("labels", "const int*"),
        ("dlogits", "float*"),
        ("row_ll", "double*"),
        ("n_rows", "long long"),
        ("k", "long long"),
    ),
    "loglik_sum_float64": (
        ("row_ll", "const double*"),
        ("out", "double*"),
        ("n_chains", "long long"),
        ("n_rows", "long long"),
    ),
    "bias_grad_float32": (
        ("dz", "const float*"),
        ("g", "float*"),
        ("n_chains", "long long"),
        ("n_rows", "long long"),
        ("n", "long long"),
        ("g_sc", "long long"),
        ("off", "long long"),
    ),
}

_SOURCE = "mlp_gemm.cu"
_FATBIN = "mlp_gemm.fatbin"
_TF32_FLAG = "mlp_gemm_tf32_enabled"
_NO_WMMA = "-DSNEP_GEMM_NO_WMMA"
_lock = threading.Lock()
_module: Any = None
_module_origin = ""
_tf32: bool | None = None


def entry_point(epilogue: str, tf32: bool = False) -> str:
    """Name of the kernel for ``epilogue`` (:data:`~snep.backends.cuda.gemm_common.EPILOGUES`)."""
    try:
        return ENTRY_POINTS[(epilogue, bool(tf32))]
    except KeyError:
        raise ConfigError(
            f"cuda_gemm_raw: epilogue={epilogue!r}, expected one of {sorted(EPILOGUES)}"
        ) from None


def _source_dir() -> Path:
    """The installed ``snep/kernels`` when it has ``mlp_gemm.cu``, else the checkout's."""
    return kernel_dir(_SOURCE)


def _cuda_include_options(cupy: Any) -> tuple[str, ...]:
    """``-I`` of the CUDA toolkit's headers when they hold ``mma.h`` (for NVRTC)."""
    try:
        root = cupy.cuda.get_cuda_path()
    except Exception:
        root = None
    if root and (Path(root) / "include" / "mma.h").is_file():
        return (f"-I{Path(root) / 'include'}",)
    return ()


def compile_nvrtc(kdir: Path | None = None, note: str = "") -> tuple[Any, str]:
    """``mlp_gemm.cu`` compiled by NVRTC into a new ``cupy.RawModule``: ``(module, how)``.

    If the compile fails because ``mma.h`` cannot be included, it is retried with
    ``-DSNEP_GEMM_NO_WMMA`` (no tensor-core variant; ``how`` says so).  The fallback of
    :func:`load_module`; public so that a GPU check can test this path where the fatbin
    exists.
    """
    cupy = _cupy()
    kdir = _source_dir() if kdir is None else kdir
    src = kdir / _SOURCE
    base = ("-std=c++17", f"-I{kdir}", *_cuda_include_options(cupy))
    errors = []
    for extra in ((), (_NO_WMMA,)):
        options = (*base, *extra)
        try:
            mod = cupy.RawModule(code=src.read_text(), options=options)
            mod.get_function(ENTRY_POINTS[("none", False)])  # compiles now
            how = "NVRTC" + (" without wmma (mma.h not found)" if extra else "")
            return mod, how
        except Exception as e:
            log = nvrtc_log(e)
            errors.append(f"options {options}:\n{log}")
            if "mma.h" not in log:
                break
    raise BackendUnavailableError(f"NVRTC failed to compile {src}{note}:\n" + "\n".join(errors))


def load_module() -> Any:
    """The ``cupy.RawModule`` of ``mlp_gemm.cu`` (cached for the process).

    The AOT fatbin when installed and loadable on this device, else NVRTC.

    Raises
    ------
    BackendUnavailableError
        CuPy is missing, the sources are missing, or NVRTC failed (with its log).
    """
    global _module, _module_origin, _tf32
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        _cupy()  # CuPy's absence is the error to report first
        mod, _module_origin = load_fatbin_or_nvrtc(
            _source_dir(),
            _FATBIN,
            _SOURCE,
            (*ENTRY_POINTS.values(), *EPILOGUE_KERNELS),
            lambda kdir, note: compile_nvrtc(kdir, note=note),
        )
        _tf32 = None
        _module = mod
        return mod


def module_origin() -> str:
    """Where the loaded kernels came from (``fatbin ...`` or ``NVRTC ...``); '' if not loaded."""
    return _module_origin


def _read_tf32_flag(mod: Any) -> bool:
    cupy = _cupy()
    ptr = mod.get_global(_TF32_FLAG)
    return bool(cupy.ndarray((1,), np.int32, memptr=ptr).get()[0])


def tf32_enabled(mod: Any = None) -> bool:
    """Whether the ``gemm_tf32_*`` entry points of ``mod`` (default: :func:`load_module`)
    use tensor cores on this device (compute capability >= 8.0 and ``mma.h`` available);
    where they do not, they run the fp32 kernel."""
    global _tf32
    if mod is not None:
        return _read_tf32_flag(mod)
    mod = load_module()
    if _tf32 is None:
        _tf32 = _read_tf32_flag(mod)
    return _tf32


def _estrides(a: Any) -> tuple[int, ...]:
    """Element strides of a CuPy array."""
    item = int(a.itemsize)
    return tuple(int(s) // item for s in a.strides)


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
    tf32: bool = False,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    check: bool = True,
    module: Any = None,
) -> None:
    """``out[c] = epilogue(op(a[c]) @ op(b[c]))`` with the CUDA C++ kernels, on CuPy arrays.

    Arguments as in :func:`snep.backends.cuda.gemm.gemm` (CuPy arrays of any strides), plus

    Parameters
    ----------
    tf32 : bool
        Use the tensor-core entry point (TF32 inputs, fp32 accumulation; about 10 bits
        of mantissa per product instead of 24).  Raises BackendUnavailableError where
        :func:`tf32_enabled` is False.
    module : cupy.RawModule, optional
        The module to launch from (default :func:`load_module`; a GPU check passes the
        NVRTC build to test it too).
    """
    cupy = _cupy()
    if trans_a:
        a = transposed(a, "a", "cuda_gemm_raw.gemm")
    if trans_b:
        b = transposed(b, "b", "cuda_gemm_raw.gemm")
    if check:
        named = (("a", a), ("b", b), ("out", out), ("bias", bias), ("aux", aux))
        for name, arr in named:
            if arr is not None and not isinstance(arr, cupy.ndarray):
                raise ConfigError(
                    f"cuda_gemm_raw.gemm: {name} is a {type(arr).__name__}, expected a cupy "
                    "array (copy host arrays to the device first)"
                )
        shape, epi = check_gemm("cuda_gemm_raw.gemm", a, b, out, epilogue, bias, bias_off, aux)
        c, m, n, k = shape.c, shape.m, shape.n, shape.k
    else:
        c, m, k = (int(s) for s in a.shape)
        n = int(b.shape[2])
        epi = EPILOGUES[epilogue]
    mod = load_module() if module is None else module
    if tf32 and not tf32_enabled(None if module is None else mod):
        raise BackendUnavailableError(
            "cuda_gemm_raw.gemm: tf32=True, but the gemm_tf32 kernels of this module do not "
            f"use tensor cores here ({module_origin() or 'module given'}; needs compute "
            "capability >= 8.0 and mma.h); use tf32=False"
        )
    n_tiles = TILES.n_tiles(c, m, n)
    if n_tiles == 0:
        return
    sa, sb, so = _estrides(a), _estrides(b), _estrides(out)
    values: dict[str, Any] = {
        "a": a,
        "a_sc": sa[0],
        "a_sm": sa[1],
        "a_sk": sa[2],
        "b": b,
        "b_sc": sb[0],
        "b_sk": sb[1],
        "b_sn": sb[2],
        "out": out,
        "o_sc": so[0],
        "o_sm": so[1],
        "o_sn": so[2],
        "n_chains": c,
        "m": m,
        "n": n,
        "k": k,
        "bias": None,
        "bias_sc": 0,
        "bias_off": 0,
        "aux": None,
        "x_sc": 0,
        "x_sm": 0,
        "x_sn": 0,
    }
    if epi in (EPI_BIAS, EPI_BIAS_RELU):
        values.update(bias=bias, bias_sc=_estrides(bias)[0], bias_off=int(bias_off))
    if epi == EPI_RELU_GRAD:
        sx = _estrides(aux)
        values.update(aux=aux, x_sc=sx[0], x_sm=sx[1], x_sn=sx[2])
    fn = mod.get_function(entry_point(epilogue, tf32))
    fn((grid_blocks(n_tiles, max_blocks),), (GEMM_THREADS,), build_args(GEMM_ARGS, values))


# ---------------------------------------------------------------------------------------
# the elementwise passes
# ---------------------------------------------------------------------------------------
def _require(
    where: str, name: str, a: Any, dtype: Any, ndim: int, shape: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """The shape of ``a`` after checking it is a C-contiguous ``ndim``-d cupy array of
    ``dtype`` (and of ``shape`` when given); ConfigError naming what is wrong otherwise."""
    cupy = _cupy()
    ok = (
        isinstance(a, cupy.ndarray)
        and a.dtype == np.dtype(dtype)
        and a.ndim == ndim
        and a.flags.c_contiguous
        and (shape is None or tuple(a.shape) == tuple(shape))
    )
    if not ok:
        want = f"shape {tuple(shape)}" if shape is not None else f"{ndim} dimensions"
        raise ConfigError(
            f"cuda_gemm_raw.{where}: {name} is a {type(a).__name__} of shape "
            f"{getattr(a, 'shape', None)} and dtype {getattr(a, 'dtype', None)}, expected a "
            f"C-contiguous cupy array of {want} and dtype {np.dtype(dtype)}"
        )
    return tuple(int(d) for d in a.shape)


def _launch_epilogue(
    entry: str, total: int, values: dict[str, Any], max_blocks: int, module: Any
) -> None:
    if total <= 0:
        return
    mod = load_module() if module is None else module
    blocks = max(1, min(int(max_blocks), -(-int(total) // EPILOGUE_THREADS)))
    args = build_args(EPILOGUE_KERNELS[entry], values)
    mod.get_function(entry)((blocks,), (EPILOGUE_THREADS,), args)


def softmax_xent(
    logits: Any,
    labels: Any,
    dlogits: Any,
    row_ll: Any,
    *,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    check: bool = True,
    module: Any = None,
) -> None:
    """Softmax log-likelihood of every row, forward and backward (``softmax_xent_float32``).

    ``row_ll[c * B + i] = log p(labels[c, i] | logits[c, i])`` and
    ``dlogits[c, i] = onehot(label) - softmax(logits[c, i])``; a label outside ``[0, K)``
    makes its row NaN (it cannot raise on the device).

    Parameters
    ----------
    logits, dlogits : cupy float32, shape (C, B, K), C-contiguous
    labels : cupy int32, shape (C, B), C-contiguous
    row_ll : cupy float64, shape (C * B,)
    """
    where = "softmax_xent"
    if check:
        c, b, k = _require(where, "logits", logits, np.float32, 3)
        _require(where, "dlogits", dlogits, np.float32, 3, (c, b, k))
        _require(where, "labels", labels, np.int32, 2, (c, b))
        _require(where, "row_ll", row_ll, np.float64, 1, (c * b,))
    else:
        c, b, k = (int(d) for d in logits.shape)
    values = {
        "logits": logits,
        "labels": labels,
        "dlogits": dlogits,
        "row_ll": row_ll,
        "n_rows": c * b,
        "k": k,
    }
    _launch_epilogue("softmax_xent_float32", c * b, values, max_blocks, module)


def loglik_sum(
    row_ll: Any,
    out: Any,
    *,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    check: bool = True,
    module: Any = None,
) -> None:
    """``out[c] = Σ_i row_ll[c * B + i]`` in float64, in row order (``loglik_sum_float64``).

    ``row_ll`` cupy float64 (C * B,), ``out`` cupy float64 (C,), both contiguous.
    """
    where = "loglik_sum"
    if check:
        (n_rows_total,) = _require(where, "row_ll", row_ll, np.float64, 1)
        (c,) = _require(where, "out", out, np.float64, 1)
    else:
        n_rows_total, c = int(row_ll.shape[0]), int(out.shape[0])
    if c == 0 or n_rows_total % c:
        raise ConfigError(
            f"cuda_gemm_raw.{where}: {n_rows_total} rows cannot be split evenly over {c} chains"
        )
    values = {"row_ll": row_ll, "out": out, "n_chains": c, "n_rows": n_rows_total // c}
    _launch_epilogue("loglik_sum_float64", c, values, max_blocks, module)


def bias_grad(
    dz: Any,
    g: Any,
    off: int,
    *,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    check: bool = True,
    module: Any = None,
) -> None:
    """``g[c, off + j] = Σ_i dz[c, i, j]`` (``bias_grad_float32``), in float32 and row order.

    ``dz`` cupy float32 (C, B, n) C-contiguous; ``g`` the flat (C, P) cupy float32
    gradient (C-contiguous), of which the ``n`` entries from ``off`` of every chain are
    written.
    """
    where = "bias_grad"
    if check:
        c, b, n = _require(where, "dz", dz, np.float32, 3)
        cg, p = _require(where, "g", g, np.float32, 2)
        if cg != c or off < 0 or off + n > p:
            raise ConfigError(
                f"cuda_gemm_raw.{where}: a flat gradient of shape {(cg, p)} with offset {off} "
                f"cannot hold a bias of {n} entries for each of {c} chains; pass the whole "
                "(C, P) gradient and the layer's b_offset"
            )
    else:
        (c, b, n), p = (int(d) for d in dz.shape), int(g.shape[1])
    values = {"dz": dz, "g": g, "n_chains": c, "n_rows": b, "n": n, "g_sc": p, "off": int(off)}
    _launch_epilogue("bias_grad_float32", c * n, values, max_blocks, module)
