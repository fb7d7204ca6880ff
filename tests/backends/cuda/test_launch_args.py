"""The CuPy launcher's view of the CUDA kernels matches the C++ sources (no CUDA needed).

* ``FUSED_PARAMS_DTYPE`` has the fields of ``struct FusedParams`` (parsed from
  ``kernels/snep_fused.cuh``) in order, at the offsets and size a C++ compiler gives;
* ``FUSED_STEP_ARGS`` / ``FILL_NORMAL_ARGS`` are the parameter lists of the ``extern "C"``
  kernels in ``kernels/fused_step.cu``, and the argument builder converts each to its C
  width;
* ``GEMM_ARGS`` is the parameter list of every batched-GEMM entry point of
  ``kernels/mlp_gemm.cu`` (``ENTRY_POINTS``: each epilogue, fp32 and TF32), whose tile
  constants and epilogue codes are those of :mod:`snep.backends.cuda.gemm_common`;
* the numba.cuda epilogue and GEMM kernels compile to PTX for sm_80 and sm_90 with the real
  (non-simulated) target when the machine has NVVM (a compile-only check: the simulator
  runs them as plain Python and would not catch code the CUDA target rejects);
* asking for the ``cuda`` backend without CuPy names what is missing, and importing the
  launchers imports neither CuPy nor numba.cuda.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snep.backends.cuda import fused as cuda_fused
from snep.backends.cuda import gemm_raw as cuda_gemm_raw
from snep.backends.cuda.fused import (
    FILL_NORMAL_ARGS,
    FUSED_PARAMS_DTYPE,
    FUSED_STEP_ARGS,
    FUSED_STEP_DPARAMS_ARGS,
    build_args,
    grid_for,
    pack_params,
)
from snep.backends.cuda.gemm_common import EPILOGUES
from snep.errors import BackendUnavailableError, ConfigError
from snep.state import ChainArrays, PassScalars

KERNELS = Path(__file__).resolve().parents[3] / "kernels"
HEADER = KERNELS / "snep_fused.cuh"
SOURCE = KERNELS / "fused_step.cu"
GEMM_SOURCE = KERNELS / "mlp_gemm.cu"
GXX = shutil.which("g++")


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def struct_fields(text: str, struct: str) -> list[tuple[str, str]]:
    """``[(C type, name), ...]`` of a plain C struct (``float a, b;`` declares two)."""
    m = re.search(rf"struct\s+{struct}\s*\{{(.*?)\}};", _strip_comments(text), re.S)
    assert m, f"struct {struct} not found"
    fields = []
    for decl in m.group(1).split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        head, *rest = decl.split(",")
        ctype, first = head.rsplit(" ", 1)
        fields += [(ctype, name.strip()) for name in [first, *rest]]
    return fields


def kernel_params(text: str, kernel: str) -> list[tuple[str, str]]:
    """``[(name, C type), ...]`` of ``extern "C" __global__ void [__launch_bounds__(...)]
    <kernel>(...)``."""
    m = re.search(
        rf'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
        rf"{kernel}\s*\((.*?)\)\s*\{{",
        _strip_comments(text),
        re.S,
    )
    assert m, f'extern "C" __global__ void {kernel}(...) not found'
    out = []
    for param in m.group(1).split(","):
        param = " ".join(param.split())
        t = re.fullmatch(r"(.*?)\s*(\**)\s*(\w+)", param)
        assert t, param
        out.append((t.group(3), t.group(1) + t.group(2)))
    return out


# ---------------------------------------------------------------------------------------
# struct FusedParams
# ---------------------------------------------------------------------------------------
def test_fused_params_fields_match_the_header():
    fields = struct_fields(HEADER.read_text(), "FusedParams")
    assert [n for _, n in fields] == list(FUSED_PARAMS_DTYPE.names)
    assert [n for _, n in fields] == [f.name for f in dataclasses.fields(PassScalars)]
    c_to_numpy = {"float": "f4", "int": "i4", "uint64_t": "u8", "uint32_t": "u4"}
    for ctype, name in fields:
        assert FUSED_PARAMS_DTYPE.fields[name][0] == np.dtype(c_to_numpy[ctype]), name


@pytest.mark.skipif(GXX is None, reason="g++ is not installed on this machine")
def test_fused_params_layout_matches_the_compiler(tmp_path):
    names = FUSED_PARAMS_DTYPE.names
    prints = "\n".join(
        f'    std::printf("%s %zu\\n", "{n}", offsetof(snep::FusedParams, {n}));' for n in names
    )
    program = f"""
#include <cstddef>
#include <cstdio>
#include "snep_fused.cuh"
int main() {{
{prints}
    std::printf("sizeof %zu\\n", sizeof(snep::FusedParams));
    std::printf("alignof %zu\\n", alignof(snep::FusedParams));
    return 0;
}}
"""
    src = tmp_path / "layout.cpp"
    src.write_text(program)
    exe = tmp_path / "layout"
    res = subprocess.run(
        [GXX, "-std=c++17", "-I", str(KERNELS), "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    lines = subprocess.check_output([str(exe)], text=True).splitlines()
    out = dict(line.split() for line in lines if line)
    for n in names:
        assert int(out[n]) == FUSED_PARAMS_DTYPE.fields[n][1], n
    assert int(out["sizeof"]) == FUSED_PARAMS_DTYPE.itemsize
    assert int(out["alignof"]) == FUSED_PARAMS_DTYPE.alignment


def test_pack_params_round_trips_every_field():
    s = PassScalars(
        lik_scale=600.0,
        inv_beta=4.0,
        gamma_term=1,
        accumulate=1,
        update_site=0,
        inv_n_acc=0.25,
        v_hi=1e2,
        seed=2**64 - 3,
        step=2**32 - 1,
        stream=7,
    )
    p = pack_params(s)
    assert p.shape == () and p.dtype == FUSED_PARAMS_DTYPE and p.nbytes == 112
    for name in FUSED_PARAMS_DTYPE.names:
        want = getattr(s, name)
        got = p[name][()]
        if isinstance(want, float):
            assert got == np.float32(want), name
        else:
            assert int(got) == want, name
    # the bytes of seed are at its offset, little-endian
    off = FUSED_PARAMS_DTYPE.fields["seed"][1]
    assert p.tobytes()[off : off + 8] == (2**64 - 3).to_bytes(8, "little")
    # refilling a staging array reuses it
    assert pack_params(PassScalars(step=5), p) is p and int(p["step"]) == 5


# ---------------------------------------------------------------------------------------
# kernel signatures
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel,args",
    [
        ("fused_step_float32", FUSED_STEP_ARGS),
        ("fused_step_dparams_float32", FUSED_STEP_DPARAMS_ARGS),
        ("fill_normal_float32", FILL_NORMAL_ARGS),
    ],
)
def test_launcher_arguments_match_the_kernel(kernel, args):
    assert kernel_params(SOURCE.read_text(), kernel) == list(args)


@pytest.mark.parametrize("kernel", sorted(cuda_gemm_raw.ENTRY_POINTS.values()))
def test_gemm_launcher_arguments_match_every_entry_point(kernel):
    assert kernel_params(GEMM_SOURCE.read_text(), kernel) == list(cuda_gemm_raw.GEMM_ARGS)


def test_fused_entry_points_are_all_the_kernels_of_the_source():
    names = re.findall(
        r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', _strip_comments(SOURCE.read_text())
    )
    assert sorted(names) == sorted(cuda_fused.ENTRY_POINTS)


@pytest.mark.parametrize("kernel", sorted(cuda_gemm_raw.EPILOGUE_KERNELS))
def test_epilogue_launcher_arguments_match_the_kernel(kernel):
    want = list(cuda_gemm_raw.EPILOGUE_KERNELS[kernel])
    assert kernel_params(GEMM_SOURCE.read_text(), kernel) == want


def test_gemm_entry_points_are_all_the_kernels_of_the_source():
    names = re.findall(
        r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(',
        _strip_comments(GEMM_SOURCE.read_text()),
    )
    known = [*cuda_gemm_raw.ENTRY_POINTS.values(), *cuda_gemm_raw.EPILOGUE_KERNELS]
    assert sorted(names) == sorted(known)
    assert cuda_gemm_raw.entry_point("bias_relu") == "gemm_bias_relu_float32"
    assert cuda_gemm_raw.entry_point("none", tf32=True) == "gemm_tf32_float32"
    with pytest.raises(ConfigError, match="epilogue='gelu'"):
        cuda_gemm_raw.entry_point("gelu")


def test_gemm_tiles_and_epilogue_codes_match_the_source():
    text = _strip_comments(GEMM_SOURCE.read_text())
    consts = {k: int(v) for k, v in re.findall(r"constexpr\s+int\s+(\w+)\s*=\s*(\d+);", text)}
    for name, value in cuda_gemm_raw.GEMM_CONSTANTS.items():
        assert consts.get(name) == value, name
    for name, code in EPILOGUES.items():
        assert consts.get(f"EPI_{name.upper()}") == code, name
    bounds = dict(re.findall(r"#define\s+(GEMM_\w+_BOUNDS)\s+(\d+)", text))
    assert {int(v) for v in bounds.values()} == {cuda_gemm_raw.GEMM_THREADS}


def test_gemm_build_args_gives_each_scalar_its_c_width():
    marker = object()
    values = {n: (marker if t.endswith("*") else 3) for n, t in cuda_gemm_raw.GEMM_ARGS}
    values["bias"] = None
    args = build_args(cuda_gemm_raw.GEMM_ARGS, values)
    for (name, ctype), arg in zip(cuda_gemm_raw.GEMM_ARGS, args, strict=True):
        if ctype.endswith("*"):
            assert arg is (None if name == "bias" else marker), name
        else:
            assert type(arg) is np.int64, name


def test_fused_step_args_name_every_chain_array():
    names = [n for n, _ in FUSED_STEP_ARGS]
    assert set(ChainArrays.__dataclass_fields__) <= set(names)


def test_the_graph_variant_differs_only_in_taking_the_scalars_by_pointer():
    by_value, by_pointer = dict(FUSED_STEP_ARGS), dict(FUSED_STEP_DPARAMS_ARGS)
    assert by_value.pop("p") == "snep::FusedParams"
    assert by_pointer.pop("p") == "const snep::FusedParams*"
    assert by_value == by_pointer
    marker = object()  # a device buffer holding the struct: passed through as a pointer
    values = {n: marker for n, t in FUSED_STEP_DPARAMS_ARGS if t.endswith("*")}
    values.update(kind=0, n_chains=1, n_params=3)
    args = build_args(FUSED_STEP_DPARAMS_ARGS, values)
    by_name = dict(zip([n for n, _ in FUSED_STEP_DPARAMS_ARGS], args, strict=True))
    assert by_name["p"] is marker and type(by_name["n_params"]) is np.int64


def test_build_args_gives_each_scalar_its_c_width():
    marker = object()  # stands in for a device array: pointers pass through
    values = {n: marker for n, t in FUSED_STEP_ARGS if t.endswith("*")}
    values.update(kind=3, n_chains=8, n_params=545_810, p=pack_params(PassScalars()))
    values["noise"] = None
    args = build_args(FUSED_STEP_ARGS, values)
    assert len(args) == len(FUSED_STEP_ARGS)
    by_name = dict(zip([n for n, _ in FUSED_STEP_ARGS], args, strict=True))
    assert type(by_name["kind"]) is np.int32 and by_name["kind"] == 3
    assert type(by_name["n_chains"]) is np.int64 and type(by_name["n_params"]) is np.int64
    assert by_name["noise"] is None and by_name["x"] is marker
    assert by_name["p"].dtype == FUSED_PARAMS_DTYPE

    fill_values = dict(out=marker, n_chains=2, n_params=9, seed=2**63, stream=1, step=2, chain0=3)
    fill = build_args(FILL_NORMAL_ARGS, fill_values)
    want_types = [np.int64, np.int64, np.uint64, np.uint32, np.uint32, np.uint32]
    assert [type(a) for a in fill[1:]] == want_types

    with pytest.raises(ConfigError, match="missing"):
        build_args(FILL_NORMAL_ARGS, {"out": marker})
    with pytest.raises(ConfigError, match="FUSED_PARAMS_DTYPE"):
        build_args(FUSED_STEP_ARGS, {**values, "p": np.zeros(1, np.float32)})


def test_grid_covers_every_block_of_four_and_is_capped():
    assert grid_for(8, 545_810) == (-(-(136_453 * 8) // 256), 256)
    assert grid_for(1, 1) == (1, 256)
    assert grid_for(10**6, 10**6)[0] == cuda_fused.MAX_BLOCKS


# ---------------------------------------------------------------------------------------
# compile-only: the epilogue kernels for the real CUDA target
# ---------------------------------------------------------------------------------------
_PTX_SCRIPT = """
import sys, types as pytypes
from numba import config, cuda, types
assert not config.ENABLE_CUDASIM
try:
    import numba.cuda.dispatcher as disp
    disp.get_current_device  # device functions ask the (absent) GPU for its capability
except (ImportError, AttributeError) as e:
    print("this numba.cuda has no dispatcher.get_current_device to stand in for:", e)
    sys.exit(77)
disp.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(8, 0))
from snep.backends.cuda import epilogues as ce
f3, f2, f1 = types.float32[:, :, ::1], types.float32[:, ::1], types.float64[::1]
i64 = types.int64
sigs = {
    "_bias_relu_kernel": (f3, f2, i64),
    "_bias_kernel": (f3, f2, i64),
    "_softmax_xent_kernel": (f3, types.int32[:, ::1], f3, f1),
    "_loglik_sum_kernel": (f1, f1),
    "_relu_backward_kernel": (f3, f3),
    "_bias_grad_kernel": (f3, f2, i64),
    "_relu_backward_bias_grad_kernel": (f3, f3, f2, i64),
    "_softmax_kernel": (f3,),
}
float32_only = {"_bias_relu_kernel", "_relu_backward_kernel", "_bias_grad_kernel",
                "_relu_backward_bias_grad_kernel", "_softmax_kernel", "_bias_kernel"}
for cc in ((8, 0), (9, 0)):
    for name, sig in sigs.items():
        ptx, _ = cuda.compile_ptx(getattr(ce, name).py_func, sig, cc=cc)
        assert ".entry" in ptx, name
        if name in float32_only:
            assert ".f64" not in ptx, f"{name} does float64 arithmetic on the GPU"
# the batched GEMM: contiguous operands, and the strided views of the MLP (weights in the
# flat parameters, transposes); its accumulators must stay in registers (no .local)
from snep.backends.cuda import gemm as cg
fa = types.Array(types.float32, 3, "A")
gemm = cg.gemm_kernel(cg.TILES).py_func
for cc in ((8, 0), (9, 0)):
    for f in (f3, fa):
        ptx, _ = cuda.compile_ptx(gemm, (f, f, f, f2, i64, f, i64), cc=cc)
        assert ".entry" in ptx and "fma.rn.f32" in ptx
        assert ".f64" not in ptx, "the GEMM does float64 arithmetic on the GPU"
        assert ".local" not in ptx, "the GEMM's accumulators went to local memory"
print("OK")
"""


def _nvvm_home(tmp_path: Path) -> Path | None:
    """A CUDA_HOME-shaped folder for numba: nvvm/lib64/libnvvm.so and nvvm/libdevice."""
    for root in [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]:
        if not root:
            continue
        root_p = Path(root)
        libs = [root_p / "nvvm" / "lib64" / "libnvvm.so", root_p / "lib64" / "libnvvm.so"]
        lib = next((p for p in libs if p.exists()), None)
        libdevice = root_p / "nvvm" / "libdevice"
        if lib is None or not libdevice.is_dir():
            continue
        home = tmp_path / "cuda_home"
        (home / "nvvm" / "lib64").mkdir(parents=True)
        (home / "nvvm" / "lib64" / "libnvvm.so").symlink_to(lib)
        (home / "nvvm" / "libdevice").symlink_to(libdevice)
        return home
    return None


def test_epilogue_kernels_compile_for_the_gpu(tmp_path):
    home = _nvvm_home(tmp_path)
    if home is None:
        pytest.skip("no NVVM (libnvvm.so and libdevice) under CUDA_HOME or /usr/local/cuda")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_HOME"] = str(home)
    res = subprocess.run(
        [sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    if res.returncode == 77:
        pytest.skip(res.stdout.strip())
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr


# ---------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------
def test_importing_the_launcher_imports_neither_cupy_nor_numba_cuda():
    code = (
        "import sys, snep.backends.cuda.fused, snep.backends.cuda.gemm_raw; "
        "assert 'cupy' not in sys.modules, 'cupy'; "
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cuda_backend_without_cupy_names_what_is_missing():
    from snep.backends import get_backend

    with pytest.raises(BackendUnavailableError, match=r"CuPy is not installed.*cupy-cuda12x"):
        get_backend("cuda")
    with pytest.raises(BackendUnavailableError, match=r"available here: \['numpy', 'cpu'\]"):
        get_backend("cuda")
    with pytest.raises(BackendUnavailableError, match="pip install cupy-cuda12x"):
        cuda_fused.load_module()
    with pytest.raises(BackendUnavailableError, match="pip install cupy-cuda12x"):
        cuda_gemm_raw.load_module()


# ---------------------------------------------------------------------------------------
# the GEMM launcher's arguments address the right elements (numpy stand-ins for CuPy and
# for the kernels: mlp_gemm.cu's indexing applied to the launch arguments)
# ---------------------------------------------------------------------------------------
class _FakeCupyArray(np.ndarray):
    """A numpy array standing in for a cupy.ndarray (a kernel pointer is its first element)."""


def _elements(ptr: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """The float32 elements a kernel addresses as ``ptr[sum_d index_d * strides_d]``."""
    return np.lib.stride_tricks.as_strided(
        ptr, shape=shape, strides=tuple(4 * int(s) for s in strides)
    )


class _FakeKernel:
    """Runs ``out[c, i, j] = epilogue(sum_k a[c, i, k] b[c, k, j])`` on the launch arguments,
    addressing every operand as ``kernels/mlp_gemm.cu`` does (pointer + element strides)."""

    def __init__(self, name: str, launches: list) -> None:
        self.name, self.launches = name, launches

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        assert block == (cuda_gemm_raw.GEMM_THREADS,) and grid[0] >= 1
        v = dict(zip([n for n, _ in cuda_gemm_raw.GEMM_ARGS], args, strict=True))
        self.launches.append((self.name, v))
        c, m, n, k = (int(v[s]) for s in ("n_chains", "m", "n", "k"))
        a = _elements(v["a"], (c, m, k), (v["a_sc"], v["a_sm"], v["a_sk"]))
        b = _elements(v["b"], (c, k, n), (v["b_sc"], v["b_sk"], v["b_sn"]))
        acc = a.astype(np.float64) @ b.astype(np.float64)
        epi = self.name.removesuffix("_float32").removeprefix("gemm").removeprefix("_tf32")
        if epi in ("_bias", "_bias_relu"):  # bias[c * bias_sc + bias_off + j]
            start = np.asarray(v["bias"]).reshape(-1)[int(v["bias_off"]) :]
            acc = acc + _elements(start, (c, 1, n), (v["bias_sc"], 0, 1))
        if epi == "_bias_relu":
            acc = np.maximum(acc, 0.0)
        if epi == "_relu_grad":
            h = _elements(v["aux"], (c, m, n), (v["x_sc"], v["x_sm"], v["x_sn"]))
            acc = np.where(h > 0, acc, 0.0)
        out = _elements(v["out"], (c, m, n), (v["o_sc"], v["o_sm"], v["o_sn"]))
        out[...] = acc


class _FakeModule:
    def __init__(self) -> None:
        self.launches: list = []

    def get_function(self, name: str) -> _FakeKernel:
        assert name in cuda_gemm_raw.ENTRY_POINTS.values(), name
        return _FakeKernel(name, self.launches)


@pytest.fixture
def fake_cupy(monkeypatch):
    """cuda_gemm_raw with numpy standing in for CuPy and a module of :class:`_FakeKernel`."""
    import types

    fake = types.SimpleNamespace(ndarray=_FakeCupyArray)
    mod = _FakeModule()
    monkeypatch.setattr(cuda_gemm_raw, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda_gemm_raw, "_module", mod)
    monkeypatch.setattr(cuda_gemm_raw, "_tf32", True)
    return mod


def _dev(a: np.ndarray) -> _FakeCupyArray:
    return np.ascontiguousarray(a, np.float32).view(_FakeCupyArray)


@pytest.mark.parametrize("tf32", [False, True], ids=["fp32", "tf32"])
def test_gemm_launcher_addresses_views_transposes_and_epilogues(fake_cupy, tf32):
    from snep.backends.cuda.gemm_common import weight_view
    from snep.model.spec import ParamSpec

    rng = np.random.default_rng(0)
    spec = ParamSpec((6, 11, 5))
    c, bsz = 3, 7
    lay = spec.layers[1]
    params = _dev(rng.normal(0, 1, (c, spec.size)))
    w = params[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out).astype(np.float64)
    bias = np.asarray(params)[:, None, lay.b_slice].astype(np.float64)
    h = _dev(rng.random((c, bsz, lay.n_in)))
    dz = _dev(rng.normal(0, 1, (c, bsz, lay.n_out)))
    h64, dz64 = np.asarray(h, np.float64), np.asarray(dz, np.float64)

    # forward with the fused bias + ReLU, weights read in place from the flat array
    out = _dev(np.full((c, bsz, lay.n_out), np.nan))
    wv = weight_view(params, lay)
    cuda_gemm_raw.gemm(
        h, wv, out, epilogue="bias_relu", bias=params, bias_off=lay.b_offset, tf32=tf32
    )
    np.testing.assert_allclose(out, np.maximum(h64 @ w + bias, 0.0), rtol=1e-5, atol=1e-6)
    name, v = fake_cupy.launches[-1]
    assert name == ("gemm_tf32_bias_relu_float32" if tf32 else "gemm_bias_relu_float32")
    assert (v["a_sc"], v["a_sm"], v["a_sk"]) == (bsz * lay.n_in, lay.n_in, 1)
    assert (v["b_sc"], v["b_sk"], v["b_sn"]) == (spec.size, lay.n_out, 1)
    assert v["bias_sc"] == spec.size and v["aux"] is None

    # weight gradient into the weight view of a flat gradient (trans_a)
    grad = _dev(np.full((c, spec.size), np.nan))
    cuda_gemm_raw.gemm(h, dz, weight_view(grad, lay), trans_a=True, tf32=tf32)
    got = np.asarray(grad)[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out)
    np.testing.assert_allclose(got, h64.transpose(0, 2, 1) @ dz64, rtol=1e-5, atol=1e-6)
    assert np.isnan(np.delete(np.asarray(grad), np.s_[lay.w_slice], axis=1)).all()
    assert fake_cupy.launches[-1][1]["bias"] is None

    # input gradient through the transposed weight view, masked by the ReLU output
    relu_out = _dev(np.maximum(rng.normal(0, 1, (c, bsz, lay.n_in)), 0))
    dh = _dev(np.full((c, bsz, lay.n_in), np.nan))
    cuda_gemm_raw.gemm(dz, wv, dh, trans_b=True, epilogue="relu_grad", aux=relu_out, tf32=tf32)
    want = np.where(np.asarray(relu_out) > 0, dz64 @ w.transpose(0, 2, 1), 0.0)
    np.testing.assert_allclose(dh, want, rtol=1e-5, atol=1e-6)
    assert fake_cupy.launches[-1][1]["b_sk"] == 1  # W^T: k runs along W's rows' elements


def test_gemm_launcher_errors(fake_cupy):
    a = _dev(np.zeros((2, 3, 4)))
    b = _dev(np.zeros((2, 4, 5)))
    out = _dev(np.zeros((2, 3, 5)))
    with pytest.raises(ConfigError, match="b is a ndarray, expected a cupy array"):
        cuda_gemm_raw.gemm(a, np.zeros((2, 4, 5), np.float32), out)
    with pytest.raises(ConfigError, match=r"out is .*expected \(C, M, N\) = \(2, 3, 5\)"):
        cuda_gemm_raw.gemm(a, b, out[:, :2])
    cuda_gemm_raw.gemm(a[:, :0], b, out[:, :0])  # nothing to do: no launch
    assert not fake_cupy.launches


# ---------------------------------------------------------------------------------------
# the C++ GEMM itself, run on the CPU: mlp_gemm.cu compiled by g++ with the CUDA keywords
# defined away (a block's threads are std::threads meeting at a std::barrier for
# __syncthreads, __shared__ arrays are statics shared by them), fed the launcher's arguments
# ---------------------------------------------------------------------------------------
#: the CUDA names the kernels of mlp_gemm.cu use, for g++ (a block's threads are set by
#: the emulator's main)
CUDA_SHIM = r"""
#include <cmath>
#include <cstring>
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
"""

#: the CUDA keywords defined away for g++, shared by the host-compiled kernel tests
CUDA_KEYWORDS = r"""
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
"""

_EMULATOR = (
    CUDA_SHIM
    + r"""
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
static thread_local dim3 threadIdx;
static dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* g_barrier = nullptr;
inline void __syncthreads() { g_barrier->arrive_and_wait(); }
"""
    + CUDA_KEYWORDS
    + r"""
#define SNEP_GEMM_NO_WMMA 1
#include "mlp_gemm.cu"

using Kernel = void (*)(const float*, long long, long long, long long, const float*, long long,
                        long long, long long, float*, long long, long long, long long, long long,
                        long long, long long, long long, const float*, long long, long long,
                        const float*, long long, long long, long long);
static const Kernel kKernels[] = {ENTRY_POINTS};

static long long get64(FILE* f) {
    long long v;
    if (std::fread(&v, 8, 1, f) != 1) std::exit(3);
    return v;
}

int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    const long long entry = get64(f), grid = get64(f), block = get64(f);
    std::vector<float> buf[5];
    float* ptr[5];
    for (int i = 0; i < 5; ++i) {  // a, b, out, bias, aux: (n floats, offset or -1, data)
        const long long n = get64(f), off = get64(f);
        buf[i].resize(n);
        if (n && std::fread(buf[i].data(), 4, n, f) != (size_t)n) return 4;
        ptr[i] = off < 0 ? nullptr : buf[i].data() + off;
    }
    long long s[18];
    for (auto& v : s) v = get64(f);
    std::fclose(f);
    gridDim.x = (unsigned)grid;
    blockDim.x = (unsigned)block;
    for (unsigned bx = 0; bx < gridDim.x; ++bx) {
        blockIdx.x = bx;
        std::barrier<> bar((std::ptrdiff_t)block);
        g_barrier = &bar;
        std::vector<std::thread> threads;
        for (unsigned tx = 0; tx < blockDim.x; ++tx)
            threads.emplace_back([&, tx] {
                threadIdx.x = tx;
                kKernels[entry](ptr[0], s[0], s[1], s[2], ptr[1], s[3], s[4], s[5], ptr[2], s[6],
                                s[7], s[8], s[9], s[10], s[11], s[12], ptr[3], s[13], s[14],
                                ptr[4], s[15], s[16], s[17]);
            });
        for (auto& t : threads) t.join();
    }
    FILE* o = std::fopen(argv[2], "wb");
    std::fwrite(buf[2].data(), 4, buf[2].size(), o);
    std::fclose(o);
    return 0;
}
"""
)
_EMULATED = sorted(cuda_gemm_raw.ENTRY_POINTS.values())
_POINTERS = ("a", "b", "out", "bias", "aux")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if GXX is None:
        pytest.skip("g++ is not installed on this machine")
    d = tmp_path_factory.mktemp("gemm_emulator")
    src = d / "emulator.cpp"
    src.write_text(_EMULATOR.replace("ENTRY_POINTS", ", ".join(_EMULATED)))
    exe = d / "emulator"
    cmd = [GXX, "-std=c++20", "-O1", "-pthread", "-Wno-unknown-pragmas", "-I", str(KERNELS)]
    res = subprocess.run([*cmd, "-o", str(exe), str(src)], capture_output=True, text=True)
    if res.returncode and "barrier" in res.stderr:
        pytest.skip(f"g++ has no C++20 <barrier>: {res.stderr[:200]}")
    assert res.returncode == 0, res.stderr
    return exe


class _RecordingModule:
    """Records the launches of cuda_gemm_raw.gemm instead of running them."""

    def __init__(self) -> None:
        self.launches: list = []

    def get_function(self, name: str):
        def launch(grid, block, args):
            self.launches.append((name, grid[0], block[0], args))

        return launch


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _run_emulated(exe: Path, tmp: Path, launch: tuple) -> None:
    """Run one recorded launch through the emulator; writes its output into ``out``'s buffer."""
    name, grid, block, args = launch
    v = dict(zip([n for n, _ in cuda_gemm_raw.GEMM_ARGS], args, strict=True))
    blob = [np.array([_EMULATED.index(name), grid, block], np.int64).tobytes()]
    for p in _POINTERS:
        arr = v[p]
        if arr is None:
            blob.append(np.array([0, -1], np.int64).tobytes())
            continue
        root = _root(arr)
        assert root.flags.c_contiguous and root.dtype == np.float32
        off = (arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // 4
        blob.append(np.array([root.size, off], np.int64).tobytes() + root.tobytes())
    scalars = [int(v[n]) for n, t in cuda_gemm_raw.GEMM_ARGS if not t.endswith("*")]
    blob.append(np.array(scalars, np.int64).tobytes())
    (tmp / "in.bin").write_bytes(b"".join(blob))
    res = subprocess.run([str(exe), str(tmp / "in.bin"), str(tmp / "out.bin")], timeout=120)
    assert res.returncode == 0
    out_root = _root(v["out"])
    out_root.reshape(-1)[:] = np.fromfile(tmp / "out.bin", np.float32)


@pytest.mark.parametrize("max_blocks", [65535, 2], ids=["one-block-per-tile", "tile-loop"])
def test_cpp_gemm_runs_the_mlp_layer_gemms_on_the_cpu(emulator, tmp_path, monkeypatch, max_blocks):
    """The three GEMM shapes of an MLP layer, through the C++ kernel's own indexing.

    Sizes straddle the 64 x 64 tiles and the chunks of 16; outputs are poisoned with NaN;
    tolerance ``(K + 2) u (|A| |B| + |bias|)`` per entry (float32 accumulation, u = 2^-24).
    """
    import types

    from snep.backends.cuda.gemm_common import weight_view
    from snep.model.spec import ParamSpec

    mod = _RecordingModule()
    monkeypatch.setattr(
        cuda_gemm_raw, "_cupy", lambda: types.SimpleNamespace(ndarray=_FakeCupyArray)
    )
    monkeypatch.setattr(cuda_gemm_raw, "_module", mod)
    monkeypatch.setattr(cuda_gemm_raw, "_tf32", True)
    u = 2.0**-24
    rng = np.random.default_rng(1)
    spec = ParamSpec((70, 67, 5))
    lay = spec.layers[0]
    c, bsz = 2, 19
    params = _dev(0.3 * rng.normal(0, 1, (c, spec.size)))
    w = np.asarray(params)[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out).astype(np.float64)
    bias = np.asarray(params)[:, None, lay.b_slice].astype(np.float64)
    h = _dev(rng.random((c, bsz, lay.n_in)))
    dz = _dev(rng.normal(0, 1, (c, bsz, lay.n_out)))
    relu_out = _dev(np.maximum(rng.normal(0, 1, (c, bsz, lay.n_in)), 0))
    h64, dz64 = np.asarray(h, np.float64), np.asarray(dz, np.float64)
    kw = {"max_blocks": max_blocks}

    def check(got, want, scale, k):
        got = np.asarray(got, np.float64)
        assert np.isfinite(got).all(), "an output entry was not written"
        assert np.all(np.abs(got - want) <= (k + 2) * u * scale + 1e-30)

    out = _dev(np.full((c, bsz, lay.n_out), np.nan))
    cuda_gemm_raw.gemm(
        h,
        weight_view(params, lay),
        out,
        epilogue="bias_relu",
        bias=params,
        bias_off=lay.b_offset,
        **kw,
    )
    _run_emulated(emulator, tmp_path, mod.launches[-1])
    scale = np.abs(h64) @ np.abs(w) + np.abs(bias)
    check(out, np.maximum(h64 @ w + bias, 0.0), scale, lay.n_in)

    grad = _dev(np.full((c, spec.size), np.nan))
    cuda_gemm_raw.gemm(h, dz, weight_view(grad, lay), trans_a=True, **kw)
    _run_emulated(emulator, tmp_path, mod.launches[-1])
    got = np.asarray(grad)[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out)
    check(got, h64.transpose(0, 2, 1) @ dz64, np.abs(h64).transpose(0, 2, 1) @ np.abs(dz64), bsz)
    assert np.isnan(np.delete(np.asarray(grad), np.s_[lay.w_slice], axis=1)).all()

    dh = _dev(np.full((c, bsz, lay.n_in), np.nan))
    cuda_gemm_raw.gemm(
        dz, weight_view(params, lay), dh, trans_b=True, epilogue="relu_grad", aux=relu_out, **kw
    )
    _run_emulated(emulator, tmp_path, mod.launches[-1])
    want = np.where(np.asarray(relu_out) > 0, dz64 @ w.transpose(0, 2, 1), 0.0)
    check(dh, want, np.abs(dz64) @ np.abs(w).transpose(0, 2, 1), lay.n_out)

    # the TF32 entry point, compiled without tensor cores, runs the fp32 kernel
    out2 = _dev(np.full((c, bsz, lay.n_out), np.nan))
    wv = weight_view(params, lay)
    cuda_gemm_raw.gemm(h, wv, out2, epilogue="bias", bias=params, bias_off=lay.b_offset, tf32=True)
    assert mod.launches[-1][0] == "gemm_tf32_bias_float32"
    _run_emulated(emulator, tmp_path, mod.launches[-1])
    check(out2, h64 @ w + bias, scale, lay.n_in)
