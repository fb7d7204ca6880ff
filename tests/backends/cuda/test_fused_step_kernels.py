"""The CUDA kernels of kernels/fused_step.cu, the fused pass (``fused_step_float32``) and
the reply update (``reply_update_float32``), with their launchers
(:func:`snep.backends.cuda.fused.fused_step`, :func:`~snep.backends.cuda.fused.reply_update`),
run on the CPU.

The kernel file is compiled as host C++ with the few CUDA names it uses defined as
plain C++ (no GPU needed), the launchers run with numpy arrays standing in for CuPy
arrays, and each recorded launch is executed block by block, thread by thread: so
the launch arguments, the kernels' indexing and their arithmetic are all checked.  The
kernels run ``snep::fused_element`` / ``snep::reply_update`` from kernels/snep_fused.cuh,
the maths of the CPU extension (``_native``), so the two agree to a few ulps (bitwise
but for the FMAs the extension's vector clones may contract); the extension is held to
the float64 oracles elsewhere (tests/maths).
"""

from __future__ import annotations

import ctypes
import subprocess
import types

import numpy as np
import pytest

from snep.backends.cuda import fused as cuda_fused
from snep.backends.cuda.fused import REPLY_UPDATE_ARGS
from snep.errors import ConfigError
from snep.maths.oracles import reply_update_reference
from snep.state import ChainArrays, PassScalars, SamplerKind

from .test_launch_args import (
    CUDA_KEYWORDS,
    CUDA_SHIM,
    GXX,
    KERNELS,
    _FakeCupyArray,
    _RecordingModule,
    kernel_params,
)

_HOST_SHIM = (
    CUDA_SHIM
    + r"""
struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
"""
    + CUDA_KEYWORDS
    + r"""
template <class T> inline T atomicAdd(T* a, T v) { T o = *a; *a += v; return o; }
#include "fused_step.cu"

// every thread of every block in turn (the kernels are grid-stride loops without
// synchronisation, so any order gives the GPU's result)
template <class F> static void each_thread(unsigned grid, unsigned block, F kernel) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        for (unsigned t = 0; t < block; ++t) {
            threadIdx.x = t;
            kernel();
        }
    }
}

extern "C" void run_fused_step(unsigned grid, unsigned block, int kind, float* x,
                               const float* grad, const float* ap, const float* apm, float* sp,
                               float* spm, const float* cp, const float* cpm, float* s1, float* s2,
                               float* ax, float* ax2, const float* noise, long long c,
                               long long p, const snep::FusedParams* params,
                               unsigned long long* fired) {
    each_thread(grid, block, [&] {
        fused_step_float32(kind, x, grad, ap, apm, sp, spm, cp, cpm, s1, s2, ax, ax2, noise, c,
                           p, *params, fired);
    });
}

extern "C" void run_reply_update(unsigned grid, unsigned block, float* x, float* cp,
                                 float* cpm, float* ap, float* apm, const float* sp,
                                 const float* spm, float* mom, const float* rp,
                                 const float* rpm, long long c, long long p,
                                 long long stride, int scale) {
    each_thread(grid, block, [&] {
        reply_update_float32(x, cp, cpm, ap, apm, sp, spm, mom, rp, rpm, c, p, stride, scale);
    });
}
"""
)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ is not installed on this machine")
    d = tmp_path_factory.mktemp("fused_step_kernels")
    src, lib = d / "host.cpp", d / "host.so"
    src.write_text(_HOST_SHIM)
    cmd = [GXX, "-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-I", str(KERNELS)]
    res = subprocess.run([*cmd, "-o", str(lib), str(src)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    dll = ctypes.CDLL(str(lib))
    dll.run_reply_update.restype = None
    dll.run_fused_step.restype = None
    return dll


def _run(dll, launch) -> None:
    name, grid, block, args = launch
    assert name == "reply_update_float32"
    c_args = []
    for (arg, ctype), v in zip(REPLY_UPDATE_ARGS, args, strict=True):
        if ctype.endswith("*"):
            assert isinstance(v, np.ndarray) and v.dtype == np.float32, arg
            assert v.flags.c_contiguous, arg
            c_args.append(ctypes.c_void_p(v.ctypes.data))
        elif ctype == "long long":
            assert isinstance(v, np.int64), (arg, type(v))
            c_args.append(ctypes.c_longlong(int(v)))
        else:
            assert ctype == "int" and isinstance(v, np.int32), (arg, type(v))
            c_args.append(ctypes.c_int(int(v)))
    dll.run_reply_update(ctypes.c_uint(grid), ctypes.c_uint(block), *c_args)


def _device(a: ChainArrays) -> ChainArrays:
    return ChainArrays(*(np.ascontiguousarray(x).view(_FakeCupyArray) for x in a.arrays()))


@pytest.fixture
def recorder(monkeypatch):
    rec = _RecordingModule()
    monkeypatch.setattr(cuda_fused, "_cupy", lambda: types.SimpleNamespace(ndarray=_FakeCupyArray))
    monkeypatch.setattr(cuda_fused, "load_module", lambda: rec)
    return rec


def test_signature_matches_the_kernel_source():
    assert kernel_params((KERNELS / "fused_step.cu").read_text(), "reply_update_float32") == list(
        REPLY_UPDATE_ARGS
    )
    assert "reply_update_float32" in cuda_fused.ENTRY_POINTS


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("per_chain", [False, True], ids=["shared-cavity", "cavity-per-chain"])
@pytest.mark.parametrize("max_blocks", [cuda_fused.MAX_BLOCKS, 3], ids=["full-grid", "grid-loop"])
def test_kernel_equals_the_cpu_extension_and_the_oracle(
    host_kernels, recorder, momentum, per_chain, max_blocks
):
    from snep import _native

    rng = np.random.default_rng(int(momentum) + 2 * int(per_chain))
    c, p = 3, 1001  # not a multiple of the block
    a32 = ChainArrays.random(rng, c, p)
    shape = (c, p) if per_chain else (p,)
    cavity_prec = rng.uniform(1, 50, shape).astype(np.float32)
    cavity_pm = (cavity_prec * rng.normal(0, 1, shape)).astype(np.float32)

    dev = _device(a32.astype(np.float32))
    cuda_fused.reply_update(
        dev, cavity_prec.view(_FakeCupyArray), cavity_pm.view(_FakeCupyArray), momentum,
        max_blocks=max_blocks,
    )  # fmt: skip
    (launch,) = recorder.launches
    assert launch[1] <= max_blocks
    _run(host_kernels, launch)

    cpu = a32.astype(np.float32)
    for k in range(c):  # the CPU extension, one chain per call
        row = slice(k, k + 1)
        _native.reply_update(
            cpu.x[row], cpu.cavity_prec[row], cpu.cavity_pm[row], cpu.anchor_prec[row],
            cpu.anchor_pm[row], cpu.site_prec[row], cpu.site_pm[row], cpu.s1[row],
            cavity_prec[k] if per_chain else cavity_prec,
            cavity_pm[k] if per_chain else cavity_pm, momentum, 1,
        )  # fmt: skip
    for name, got, want in zip(ChainArrays.__dataclass_fields__, dev.arrays(), cpu.arrays(),
                               strict=True):  # fmt: skip
        # the same function; the extension's AVX2/AVX-512 clones may contract x's
        # multiply-add into an FMA (docs/architecture.md), hence a few ulps, not bitwise
        ulp = np.spacing(np.maximum(np.abs(want), 1.0).astype(np.float32))
        assert np.all(np.abs(np.asarray(got) - want) <= 4 * ulp), name

    ref = a32.astype(np.float64)
    reply_update_reference(ref, cavity_prec, cavity_pm, momentum)
    for name, got, want in zip(ChainArrays.__dataclass_fields__, dev.arrays(), ref.arrays(),
                               strict=True):  # fmt: skip
        scale = np.maximum(np.abs(want), 1.0)
        assert np.all(np.abs(np.asarray(got, np.float64) - want) <= 1e-5 * scale), name


def test_launcher_rejects_a_wrong_cavity_shape(recorder):
    rng = np.random.default_rng(0)
    dev = _device(ChainArrays.random(rng, 2, 10).astype(np.float32))
    bad = np.zeros(9, np.float32).view(_FakeCupyArray)
    with pytest.raises(ConfigError, match=r"cuda reply_update: 'reply_prec' .* shape \(9,\)"):
        cuda_fused.reply_update(dev, bad, bad, False)
    assert not recorder.launches


# ---------------------------------------------------------------------------------------
# the fused pass
# ---------------------------------------------------------------------------------------
@pytest.fixture
def pass_recorder(monkeypatch):
    """cuda_fused's pass launchers with numpy standing in for CuPy (a fresh guard counter)
    and a module that records the launches."""
    rec = _RecordingModule()
    fake = types.SimpleNamespace(
        ndarray=_FakeCupyArray,
        zeros=lambda n, dtype: np.zeros(n, dtype).view(_FakeCupyArray),
        cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0)),
    )
    monkeypatch.setattr(cuda_fused, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda_fused, "_states", {})
    monkeypatch.setattr(cuda_fused, "load_module", lambda: rec)
    return rec


def _run_pass(dll, launch) -> int:
    """Run a recorded ``fused_step_float32`` launch on the host; the guard count."""
    name, grid, block, args = launch
    assert name == "fused_step_float32"
    v = dict(zip([n for n, _ in cuda_fused.FUSED_STEP_ARGS], args, strict=True))

    def ptr(a):
        if a is None:
            return None
        assert a.flags.c_contiguous
        return ctypes.c_void_p(a.ctypes.data)

    fired = v["fired_out"]
    before = int(fired[0])
    assert v["p"].dtype == cuda_fused.FUSED_PARAMS_DTYPE and v["p"].size == 1
    dll.run_fused_step(
        ctypes.c_uint(grid), ctypes.c_uint(block), ctypes.c_int(int(v["kind"])),
        *(ptr(v[n]) for n in ("x", "grad", "anchor_prec", "anchor_pm", "site_prec", "site_pm",
                              "cavity_prec", "cavity_pm", "s1", "s2", "acc_x", "acc_x2",
                              "noise")),
        ctypes.c_longlong(int(v["n_chains"])), ctypes.c_longlong(int(v["n_params"])),
        ptr(v["p"]), ptr(fired),
    )  # fmt: skip
    return int(fired[0]) - before


#: the pass's flag sets (PassScalars fields): the site step alone (the paper's pass),
#: nothing (the pooled step follows), accumulating, and the site step from the sums
_FLAGS = {
    "site": {"update_site": 1},
    "none": {"update_site": 0},
    "acc": {"update_site": 0, "accumulate": 1},
    "from-acc": {"update_site": 1, "accumulate": 1, "inv_n_acc": 0.25},
}


@pytest.mark.parametrize("noise", ["passed-in", "in-kernel"])
@pytest.mark.parametrize("flags", list(_FLAGS))
@pytest.mark.parametrize("kind", list(SamplerKind), ids=[k.name for k in SamplerKind])
def test_fused_kernel_equals_the_cpu_extension(host_kernels, pass_recorder, kind, flags, noise):
    """``fused_step_float32`` (every sampler, every flag set; pSGLD with its Gamma term;
    the noise passed in or drawn in the kernel) against the CPU extension's pass: the
    same state to a few float32 ulps, the same guard count."""
    from snep.backends import get_backend

    rng = np.random.default_rng(10 * int(kind) + list(_FLAGS).index(flags))
    c, p = 3, 1001  # not a multiple of four nor of the block
    a32 = ChainArrays.random(rng, c, p)
    grad = rng.normal(0, 3, (c, p)).astype(np.float32)
    xi = rng.normal(0, 1, (c, p)).astype(np.float32) if noise == "passed-in" else None
    s = PassScalars(
        lik_scale=40.0, inv_beta=1.5, step_size=2e-3, beta1=0.9, site_step=0.05, seed=12345,
        stream=2, gamma_term=int(kind == SamplerKind.PSGLD), **_FLAGS[flags],
    )  # fmt: skip
    s.set_step(kind, 7)

    dev = _device(a32.astype(np.float32))
    fired_none = cuda_fused.fused_step(
        kind, dev, grad.view(_FakeCupyArray), s,
        None if xi is None else xi.view(_FakeCupyArray), return_fired=False, max_blocks=2,
    )  # fmt: skip
    assert fired_none is None
    (launch,) = pass_recorder.launches
    assert launch[1] <= 2  # the grid-stride loop runs
    fired_gpu = _run_pass(host_kernels, launch)

    cpu = a32.astype(np.float32)
    fired_cpu = get_backend("cpu", 1).fused_step(kind, cpu, grad, s, noise=xi)
    assert fired_gpu == fired_cpu > 0
    for name, got, want in zip(ChainArrays.__dataclass_fields__, dev.arrays(), cpu.arrays(),
                               strict=True):  # fmt: skip
        # one function: only FMA contraction (the extension's clones contract, this build
        # does not) moves the last bits, and the site's variance expansion (gamma2 -
        # gamma1^2) magnifies them: measured at most 4.8e-6 relative (the site), 2.2e-6
        # (pSGLD's s1), 2.4e-7 (x) over these cases
        scale = np.maximum(np.abs(want.astype(np.float64)), 1.0)
        err = np.abs(np.asarray(got, np.float64) - want) / scale
        assert err.max() <= 2e-5, (name, float(err.max()))
    changed = [n for n, b, w in zip(ChainArrays.__dataclass_fields__, a32.arrays(), cpu.arrays(),
                                    strict=True) if not np.array_equal(b, w)]  # fmt: skip
    assert "x" in changed
    assert ("site_prec" in changed) == bool(s.update_site)
