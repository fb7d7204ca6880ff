"""CuPy launcher of the fused sampler/site/moment pass and of the noise generator.

The kernels are ``fused_step_float32`` and ``fill_normal_float32`` of
``kernels/fused_step.cu``; their per-parameter maths is ``kernels/snep_fused.cuh`` and
``kernels/snep_rng.cuh``, shared with the CPU extension (docs/method.md §2, "one source of truth
per kernel"), and their float64 oracles are :mod:`snep.maths.oracles` and
:mod:`snep.maths.noise`.  The maths is that of Hasenclever et al., JMLR 18 (2017)
(SNEP's tilted distribution and site step) with the SG-MCMC rules of docs/method.md §1.5.

* :func:`load_module` loads the kernels once per process: the ahead-of-time fatbin that
  CMake installs as ``snep/kernels/fused_step.fatbin`` when ``nvcc`` was present at build
  time, else ``fused_step.cu`` compiled by NVRTC from the installed sources.
* :data:`FUSED_PARAMS_DTYPE` is ``struct FusedParams`` byte for byte (built from the fields
  of :class:`~snep.state.PassScalars` with C layout rules; tested against the
  header and against ``offsetof`` from a C++ compiler).
* :data:`FUSED_STEP_ARGS` / :data:`FILL_NORMAL_ARGS` are the kernels' parameter lists,
  ``(name, C type)``, from which the launch arguments are built (tested against the
  ``extern "C"`` signatures in ``kernels/fused_step.cu``).

Importing this module imports neither CuPy nor numba.cuda; CuPy is imported on first use.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import threading
from pathlib import Path
from typing import Any

import numpy as np

from snep.errors import BackendUnavailableError, ConfigError
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = [
    "BLOCK_THREADS",
    "ENTRY_POINTS",
    "FILL_NORMAL_ARGS",
    "FUSED_PARAMS_DTYPE",
    "FUSED_STEP_ARGS",
    "FUSED_STEP_DPARAMS_ARGS",
    "MAX_BLOCKS",
    "REPLY_UPDATE_ARGS",
    "build_args",
    "compile_nvrtc",
    "fill_normal",
    "fused_step",
    "fused_step_device_params",
    "grid_for",
    "kernel_dir",
    "load_fatbin_or_nvrtc",
    "load_module",
    "module_origin",
    "nvrtc_log",
    "pack_params",
    "reply_update",
    "take_fired",
]

#: threads per block of the kernels
BLOCK_THREADS = 256
#: cap on the grid (the kernels are grid-stride loops, so any cap is correct)
MAX_BLOCKS = 65535 * 4

# ---------------------------------------------------------------------------------------
# struct FusedParams
# ---------------------------------------------------------------------------------------
#: C types of the PassScalars fields that are not plain ``float``/``int``
_WIDE_FIELDS = {
    "seed": np.dtype(np.uint64),
    "step": np.dtype(np.uint32),
    "stream": np.dtype(np.uint32),
}
_PLAIN = {"float": np.dtype(np.float32), "int": np.dtype(np.int32)}


def _fused_params_dtype() -> np.dtype:
    """``struct FusedParams`` as a numpy structured dtype, with C (x86-64/CUDA) layout.

    Fields in :class:`PassScalars` order; each at the next offset aligned to its size;
    the total padded to the largest alignment (8, from ``uint64_t seed``).
    """
    names, formats, offsets = [], [], []
    off = 0
    for f in dataclasses.fields(PassScalars):
        if f.name in _WIDE_FIELDS:
            dt = _WIDE_FIELDS[f.name]
        else:
            ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if ann not in _PLAIN:
                raise TypeError(
                    f"PassScalars.{f.name} is annotated {f.type!r}; FUSED_PARAMS_DTYPE maps "
                    "only float -> float and int -> int (add other C types to _WIDE_FIELDS)"
                )
            dt = _PLAIN[ann]
        off = -(-off // dt.alignment) * dt.alignment
        names.append(f.name)
        formats.append(dt)
        offsets.append(off)
        off += dt.itemsize
    align = max(dt.alignment for dt in formats)
    itemsize = -(-off // align) * align
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize},
        align=True,
    )


#: ``struct FusedParams`` of ``kernels/snep_fused.cuh``, byte for byte
FUSED_PARAMS_DTYPE: np.dtype = _fused_params_dtype()


def pack_params(scalars: PassScalars, out: np.ndarray | None = None) -> np.ndarray:
    """``scalars`` as a 0-d numpy array of :data:`FUSED_PARAMS_DTYPE`.

    CuPy passes a size-one numpy array to a kernel by value (its bytes become the
    argument), which is how the struct reaches ``fused_step_float32``.
    """
    if out is None:
        out = np.zeros((), FUSED_PARAMS_DTYPE)
    for name in FUSED_PARAMS_DTYPE.names:
        out[name] = getattr(scalars, name)
    return out


# ---------------------------------------------------------------------------------------
# kernel signatures (checked against kernels/fused_step.cu by tests/backends)
# ---------------------------------------------------------------------------------------
#: parameters of ``extern "C" __global__ void fused_step_float32(...)``: (name, C type)
FUSED_STEP_ARGS: tuple[tuple[str, str], ...] = (
    ("kind", "int"),
    ("x", "float*"),
    ("grad", "const float*"),
    ("anchor_prec", "const float*"),
    ("anchor_pm", "const float*"),
    ("site_prec", "float*"),
    ("site_pm", "float*"),
    ("cavity_prec", "const float*"),
    ("cavity_pm", "const float*"),
    ("s1", "float*"),
    ("s2", "float*"),
    ("acc_x", "float*"),
    ("acc_x2", "float*"),
    ("noise", "const float*"),
    ("n_chains", "long long"),
    ("n_params", "long long"),
    ("p", "snep::FusedParams"),
    ("fired_out", "unsigned long long*"),
)

#: parameters of ``extern "C" __global__ void fused_step_dparams_float32(...)``: those of
#: ``fused_step_float32`` with the scalars read through a device pointer (CUDA graphs)
FUSED_STEP_DPARAMS_ARGS: tuple[tuple[str, str], ...] = tuple(
    (name, "const snep::FusedParams*" if name == "p" else ctype) for name, ctype in FUSED_STEP_ARGS
)

#: parameters of ``extern "C" __global__ void fill_normal_float32(...)``: (name, C type)
FILL_NORMAL_ARGS: tuple[tuple[str, str], ...] = (
    ("out", "float*"),
    ("n_chains", "long long"),
    ("n_params", "long long"),
    ("seed", "unsigned long long"),
    ("stream", "unsigned int"),
    ("step", "unsigned int"),
    ("chain0", "unsigned int"),
)

#: parameters of ``extern "C" __global__ void reply_update_float32(...)``: (name, C type)
REPLY_UPDATE_ARGS: tuple[tuple[str, str], ...] = (
    ("x", "float*"),
    ("cavity_prec", "float*"),
    ("cavity_pm", "float*"),
    ("anchor_prec", "float*"),
    ("anchor_pm", "float*"),
    ("site_prec", "const float*"),
    ("site_pm", "const float*"),
    ("momentum", "float*"),
    ("reply_prec", "const float*"),
    ("reply_pm", "const float*"),
    ("n_chains", "long long"),
    ("n_params", "long long"),
    ("reply_stride", "long long"),
    ("scale_momentum", "int"),
)

_SCALAR_TYPES = {
    "int": np.int32,
    "long long": np.int64,
    "unsigned int": np.uint32,
    "unsigned long long": np.uint64,
}
_POINTER_DTYPES = {"float": np.dtype(np.float32), "unsigned long long": np.dtype(np.uint64)}


def build_args(signature: tuple[tuple[str, str], ...], values: dict[str, Any]) -> tuple:
    """Launch arguments in signature order, each converted to its C type.

    Integer parameters become numpy scalars of the exact width (a bare Python int would
    be passed as 8 bytes); pointers are passed as given (a CuPy array, or None for a null
    pointer); ``snep::FusedParams`` must be a size-one array of :data:`FUSED_PARAMS_DTYPE`.
    """
    missing = [n for n, _ in signature if n not in values]
    extra = sorted(set(values) - {n for n, _ in signature})
    if missing or extra:
        raise ConfigError(
            f"build_args: missing {missing} / unexpected {extra} for the signature "
            f"{[n for n, _ in signature]}"
        )
    out = []
    for name, ctype in signature:
        v = values[name]
        if ctype.endswith("*"):
            out.append(v)
        elif ctype == "snep::FusedParams":
            if not isinstance(v, np.ndarray) or v.dtype != FUSED_PARAMS_DTYPE or v.size != 1:
                raise ConfigError(
                    f"build_args: {name} must be a size-one array of FUSED_PARAMS_DTYPE "
                    "(pack_params(scalars)), got "
                    f"{type(v).__name__} {getattr(v, 'dtype', '')}"
                )
            out.append(v)
        elif ctype in _SCALAR_TYPES:
            out.append(_SCALAR_TYPES[ctype](v))
        else:
            raise ConfigError(f"build_args: no conversion for C type {ctype!r} of {name}")
    return tuple(out)


def grid_for(
    n_chains: int, n_params: int, threads: int = BLOCK_THREADS, max_blocks: int = MAX_BLOCKS
) -> tuple[int, int]:
    """``(blocks, threads)``: one thread per four parameters of each chain, capped."""
    total = -(-int(n_params) // 4) * int(n_chains)
    return max(1, min(int(max_blocks), -(-total // int(threads)))), int(threads)


# ---------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------
_SOURCE = "fused_step.cu"
_FATBIN = "fused_step.fatbin"
#: the kernels of fused_step.cu that the launchers look up (all must be in the module)
ENTRY_POINTS = (
    "fused_step_float32",
    "fused_step_dparams_float32",
    "fill_normal_float32",
    "reply_update_float32",
)
_NVRTC_OPTIONS_BASE = ("-std=c++17",)
_lock = threading.Lock()
_module: Any = None
_module_origin = ""


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailableError(
            "the CUDA backend needs CuPy, which is not installed: pip install cupy-cuda12x "
            "(cupy-cuda13x for CUDA 13), or pip install -e '.[cuda]'"
        ) from e
    return cupy


def kernel_dir(source: str = _SOURCE) -> Path:
    """The folder holding ``source`` (default ``fused_step.cu``), its headers and (if built)
    its fatbin.

    The installed package's ``snep/kernels`` (CMake installs them there), else the
    source checkout's ``kernels/`` (running from a tree that was never installed, or whose
    install predates ``source``).
    """
    candidates: list[Path] = []
    try:
        res = importlib.resources.files("snep") / "kernels"
        candidates.append(Path(str(res)))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[4] / "kernels")
    for d in candidates:
        if (d / source).is_file():
            return d
    raise BackendUnavailableError(
        f"the CUDA kernel sources are missing: looked for {source} in "
        f"{[str(d) for d in candidates]}; reinstall snep (pip install -e .), which installs "
        "them as package data"
    )


def load_module() -> Any:
    """The ``cupy.RawModule`` with ``fused_step_float32`` and ``fill_normal_float32``.

    Cached for the process.  The AOT fatbin is used when installed and loadable on this
    device; otherwise ``fused_step.cu`` is compiled with NVRTC (once; CuPy caches the
    binary on disk too).

    Raises
    ------
    BackendUnavailableError
        CuPy is missing, the sources are missing, or NVRTC failed (the message has the
        source, the options and the compiler log).
    """
    global _module, _module_origin
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            _cupy()  # CuPy's absence is the error to report first
            _module, _module_origin = load_fatbin_or_nvrtc(
                kernel_dir(),
                _FATBIN,
                _SOURCE,
                ENTRY_POINTS,
                lambda kdir, note: (compile_nvrtc(kdir, note=note), "NVRTC"),
            )
        return _module


def load_fatbin_or_nvrtc(
    kdir: Path,
    fatbin_name: str,
    source: str,
    entry_points: Any,
    compile_nvrtc: Any,
) -> tuple[Any, str]:
    """``(module, origin)``: the AOT fatbin ``kdir / fatbin_name`` when it loads on this device
    with every one of ``entry_points`` (a stale image lacks some), else
    ``compile_nvrtc(kdir, note) -> (module, how)`` of ``source``, ``note`` saying why the
    fatbin was not used.  ``origin`` says which (``fatbin ...`` or ``<how> <source>...``).
    Shared by the launchers of every ``kernels/*.cu``."""
    cupy = _cupy()
    fatbin = kdir / fatbin_name
    note = ""
    if fatbin.is_file():
        try:
            mod = cupy.RawModule(path=str(fatbin))
            for name in entry_points:  # loads the image here
                mod.get_function(name)
            return mod, f"fatbin {fatbin}"
        except Exception as e:  # e.g. no image for this architecture
            note = f" (the AOT image {fatbin} did not load: {e})"
    mod, how = compile_nvrtc(kdir, note)
    return mod, f"{how} {kdir / source}{note}"


def nvrtc_log(e: Exception) -> str:
    """The compiler log of a failed NVRTC compile (CuPy's ``CompileException``), else the
    exception's text."""
    get_message = getattr(e, "get_message", None)
    return get_message() if callable(get_message) else str(e)


def compile_nvrtc(kdir: Path | None = None, note: str = "") -> Any:
    """``fused_step.cu`` compiled by NVRTC into a new ``cupy.RawModule`` (not cached here).

    The fallback of :func:`load_module` when no AOT image loads; public so that a GPU check
    can test this path where the fatbin exists.  ``note`` is added to the error message.
    """
    cupy = _cupy()
    kdir = kernel_dir() if kdir is None else kdir
    src = kdir / _SOURCE
    options = (*_NVRTC_OPTIONS_BASE, f"-I{kdir}")
    try:
        mod = cupy.RawModule(code=src.read_text(), options=options)
        for name in ENTRY_POINTS:  # compiles now, not at the first launch
            mod.get_function(name)
    except Exception as e:
        raise BackendUnavailableError(
            f"NVRTC failed to compile {src} with options {options}{note}:\n{nvrtc_log(e)}"
        ) from e
    return mod


def module_origin() -> str:
    """Where the loaded kernels came from (``fatbin ...`` or ``NVRTC ...``); '' if not loaded."""
    return _module_origin


# ---------------------------------------------------------------------------------------
# launches
# ---------------------------------------------------------------------------------------
class _DeviceState:
    """Per-device launch state: the guard counter and the params staging array."""

    def __init__(self, cupy: Any) -> None:
        self.fired = cupy.zeros(1, np.uint64)
        self.params = np.zeros((), FUSED_PARAMS_DTYPE)


_states: dict[int, _DeviceState] = {}


def _state(cupy: Any) -> _DeviceState:
    dev = cupy.cuda.Device().id
    st = _states.get(dev)
    if st is None:
        st = _states[dev] = _DeviceState(cupy)
    return st


def _describe(a: Any) -> str:
    t = type(a)
    return f"{t.__module__.split('.')[0]}.{t.__name__}" if a is not None else "None"


def _check_array(
    cupy: Any, name: str, a: Any, shape: tuple[int, ...], nullable: bool, where: str = "fused_step"
) -> None:
    if a is None and nullable:
        return
    ok = (
        isinstance(a, cupy.ndarray)
        and a.dtype == np.float32
        and tuple(a.shape) == shape
        and a.flags.c_contiguous
    )
    if not ok:
        raise ConfigError(
            f"cuda {where}: {name!r} is a {_describe(a)} of shape "
            f"{getattr(a, 'shape', None)} and dtype {getattr(a, 'dtype', None)}, expected a "
            f"C-contiguous cupy float32 array of shape {shape}"
            + ("" if nullable else " (None is not allowed here)")
        )


def _check_pass(
    cupy: Any, where: str, arrays: ChainArrays, grad: Any, nullable_acc: bool
) -> tuple[int, int]:
    """``(n_chains, n_params)`` after checking the chain arrays and the gradient of a pass
    (``acc_x``/``acc_x2`` may be None when ``nullable_acc``)."""
    shape = tuple(getattr(arrays.x, "shape", ()))
    if len(shape) != 2:
        raise ConfigError(f"cuda {where}: 'x' has shape {shape}, expected (n_chains, P)")
    for name in ChainArrays.__dataclass_fields__:
        nullable = nullable_acc and name in ("acc_x", "acc_x2")
        _check_array(cupy, name, getattr(arrays, name), shape, nullable, where=where)
    _check_array(cupy, "grad", grad, shape, False, where=where)
    return shape  # type: ignore[return-value]


def _launch_pass(
    cupy: Any,
    entry: str,
    signature: tuple[tuple[str, str], ...],
    kind: SamplerKind,
    arrays: ChainArrays,
    grad: Any,
    noise: Any,
    p: Any,
    shape: tuple[int, int],
    max_blocks: int,
) -> None:
    """Launch the fused-pass entry point ``entry`` (scalars ``p`` by value or by pointer, as
    ``signature`` says); the guard count goes to the device counter."""
    n_chains, n_params = shape
    if not (n_chains and n_params):
        return
    values = {name: getattr(arrays, name) for name in ChainArrays.__dataclass_fields__}
    values.update(
        kind=int(kind),
        grad=grad,
        noise=noise,
        n_chains=n_chains,
        n_params=n_params,
        p=p,
        fired_out=_state(cupy).fired,
    )
    blocks, threads = grid_for(n_chains, n_params, max_blocks=max_blocks)
    load_module().get_function(entry)((blocks,), (threads,), build_args(signature, values))


def fused_step(
    kind: SamplerKind,
    arrays: ChainArrays,
    grad: Any,
    scalars: PassScalars,
    noise: Any = None,
    *,
    return_fired: bool = True,
    max_blocks: int = MAX_BLOCKS,
) -> int | None:
    """One fused sampler/moment/site pass on the GPU, in place on ``arrays``.

    Parameters
    ----------
    kind : SamplerKind
    arrays : ChainArrays
        Its fields are C-contiguous cupy float32 arrays of shape (C, P); ``acc_x`` and
        ``acc_x2`` may be None when ``scalars.accumulate == 0``.
    grad : cupy array, shape (C, P)
        Gradient of the minibatch log-likelihood.
    scalars : PassScalars
        The pass's scalars (copied by value into the launch).
    noise : cupy array, shape (C, P), optional
        Standard normals to use; None draws them in the kernel (Philox, ``scalars.seed``,
        ``stream``, ``step``), the same numbers as :func:`fill_normal`.
    return_fired : bool
        True: wait for the pass and return how often the precision guard fired (this read
        is the pass's only host synchronisation).  False: return None at once; the count
        stays in a device counter until :func:`take_fired` or a later call with
        ``return_fired=True`` reads it.
    max_blocks : int
        Cap on the grid (tests lower it to exercise the grid-stride loop).

    Returns
    -------
    int or None
        Guard firings since the counter was last read (this pass's when it is read every
        time).
    """
    cupy = _cupy()
    kind = SamplerKind(kind)
    shape = _check_pass(cupy, "fused_step", arrays, grad, not scalars.accumulate)
    _check_array(cupy, "noise", noise, shape, True)
    p = pack_params(scalars, _state(cupy).params)
    _launch_pass(
        cupy, "fused_step_float32", FUSED_STEP_ARGS, kind, arrays, grad, noise, p, shape,
        max_blocks,
    )  # fmt: skip
    if not return_fired:
        return None
    return take_fired()


def fused_step_device_params(
    kind: SamplerKind,
    arrays: ChainArrays,
    grad: Any,
    params: Any,
    *,
    max_blocks: int = MAX_BLOCKS,
) -> None:
    """:func:`fused_step` with its scalars read from device memory when the kernel runs.

    The launch a CUDA graph captures (``fused_step_dparams_float32``): a replay reads the
    ``struct FusedParams`` the host last wrote to ``params``, not the values of the capture.
    The noise is always drawn in the kernel, and the guard count stays on the device
    (:func:`take_fired`).  Nothing here reads the device, so it may run while a stream
    captures.

    Parameters
    ----------
    kind : SamplerKind
    arrays : ChainArrays
        C-contiguous cupy float32 arrays of shape (C, P), all eleven of them (``acc_x`` and
        ``acc_x2`` included: whether the pass accumulates is only known on the device).
    grad : cupy array, shape (C, P)
    params : cupy uint8 array of ``FUSED_PARAMS_DTYPE.itemsize`` bytes
        Device memory holding one ``struct FusedParams`` (:func:`pack_params` bytes).
    max_blocks : int
        Cap on the grid.
    """
    cupy = _cupy()
    kind = SamplerKind(kind)
    where = "fused_step_device_params"
    shape = _check_pass(cupy, where, arrays, grad, False)
    size = FUSED_PARAMS_DTYPE.itemsize
    ok = (
        isinstance(params, cupy.ndarray)
        and params.dtype == np.uint8
        and params.size == size
        and params.flags.c_contiguous
        and int(params.data.ptr) % FUSED_PARAMS_DTYPE.alignment == 0
    )
    if not ok:
        raise ConfigError(
            f"cuda {where}: params is a {_describe(params)} of shape "
            f"{getattr(params, 'shape', None)} and dtype {getattr(params, 'dtype', None)}, "
            f"expected a contiguous cupy uint8 array of {size} bytes (one struct FusedParams) "
            f"aligned to {FUSED_PARAMS_DTYPE.alignment} bytes"
        )
    _launch_pass(
        cupy, "fused_step_dparams_float32", FUSED_STEP_DPARAMS_ARGS, kind, arrays, grad, None,
        params, shape, max_blocks,
    )  # fmt: skip


def take_fired() -> int:
    """Read (host sync) and zero the device's guard counter of :func:`fused_step`."""
    cupy = _cupy()
    st = _state(cupy)
    n = int(st.fired.get()[0])
    st.fired.fill(0)
    return n


def fill_normal(
    out: Any, seed: int, stream: int, step: int, chain0: int = 0, *, max_blocks: int = MAX_BLOCKS
) -> Any:
    """Fill ``out`` (C, P) with the fused pass's standard normals, in place.

    Entry ``[c, j]`` is the normal of parameter ``j`` of chain ``chain0 + c`` at ``step`` on
    ``stream`` (Philox4x32-10 keyed by ``seed``; :func:`snep.maths.noise.reference_normals`
    is its float64 oracle).  Returns ``out``; ``max_blocks`` caps the grid.
    """
    cupy = _cupy()
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 2:
        raise ConfigError(f"cuda fill_normal: out has shape {shape}, expected (n_chains, P)")
    _check_array(cupy, "out", out, shape, False, where="fill_normal")
    n_chains, n_params = shape
    if n_chains and n_params:
        args = build_args(
            FILL_NORMAL_ARGS,
            {
                "out": out,
                "n_chains": n_chains,
                "n_params": n_params,
                "seed": int(seed) & 0xFFFFFFFFFFFFFFFF,
                "stream": int(stream) & 0xFFFFFFFF,
                "step": int(step) & 0xFFFFFFFF,
                "chain0": int(chain0) & 0xFFFFFFFF,
            },
        )
        blocks, threads = grid_for(n_chains, n_params, max_blocks=max_blocks)
        load_module().get_function("fill_normal_float32")((blocks,), (threads,), args)
    return out


def reply_update(
    arrays: ChainArrays,
    reply_prec: Any,
    reply_pm: Any,
    scale_momentum: bool,
    *,
    max_blocks: int = MAX_BLOCKS,
) -> None:
    """A server reply applied to every chain, in place, by ``reply_update_float32``: per
    parameter ``snep::reply_update`` of ``kernels/snep_fused.cuh``, the function the CPU
    extension runs (:func:`snep.maths.oracles.reply_update_reference` is its oracle).

    ``reply_prec`` / ``reply_pm`` are the reply's cavity, float32 device arrays of shape
    ``(P,)`` (one for all chains) or ``(C, P)``; the chains' cavity, anchor, position and
    (with ``scale_momentum``, SGHMC) momentum ``s1`` are updated.
    """
    cupy = _cupy()
    where = "reply_update"
    shape = tuple(getattr(arrays.x, "shape", ()))
    if len(shape) != 2:
        raise ConfigError(f"cuda {where}: 'x' has shape {shape}, expected (n_chains, P)")
    n_chains, n_params = shape
    for name in ("x", "cavity_prec", "cavity_pm", "anchor_prec", "anchor_pm", "site_prec",
                 "site_pm", "s1"):  # fmt: skip
        _check_array(cupy, name, getattr(arrays, name), shape, False, where=where)
    shared = tuple(getattr(reply_prec, "shape", ())) == (n_params,)
    for name, r in (("reply_prec", reply_prec), ("reply_pm", reply_pm)):
        _check_array(cupy, name, r, (n_params,) if shared else shape, False, where=where)
    if not (n_chains and n_params):
        return
    a = arrays
    values = {
        "x": a.x,
        "cavity_prec": a.cavity_prec,
        "cavity_pm": a.cavity_pm,
        "anchor_prec": a.anchor_prec,
        "anchor_pm": a.anchor_pm,
        "site_prec": a.site_prec,
        "site_pm": a.site_pm,
        "momentum": a.s1,
        "reply_prec": reply_prec,
        "reply_pm": reply_pm,
        "n_chains": n_chains,
        "n_params": n_params,
        "reply_stride": 0 if shared else n_params,
        "scale_momentum": int(bool(scale_momentum)),
    }
    threads = BLOCK_THREADS
    blocks = max(1, min(int(max_blocks), -(-(n_chains * n_params) // threads)))
    load_module().get_function("reply_update_float32")(
        (blocks,), (threads,), build_args(REPLY_UPDATE_ARGS, values)
    )
