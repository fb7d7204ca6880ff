"""The CuPy launcher's view of the CUDA kernels matches the C++ sources (no CUDA needed).

* ``FUSED_PARAMS_DTYPE`` has the fields of ``struct FusedParams`` (parsed from
  ``kernels/snep_fused.cuh``) in order, at the offsets and size a C++ compiler gives;
* ``FUSED_STEP_ARGS`` / ``FILL_NORMAL_ARGS`` are the parameter lists of the ``extern "C"``
  kernels in ``kernels/fused_step.cu``, and the argument builder converts each to its C
  width;
* the numba.cuda epilogue kernels compile to PTX for sm_80 and sm_90 with the real
  (non-simulated) target when the machine has NVVM (a compile-only check: the simulator
  runs them as plain Python and would not catch code the CUDA target rejects);
* asking for the ``cuda`` backend without CuPy names what is missing, and importing the
  launcher imports neither CuPy nor numba.cuda.
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

from snep.backends import cuda_fused
from snep.backends.cuda_fused import (
    FILL_NORMAL_ARGS,
    FUSED_PARAMS_DTYPE,
    FUSED_STEP_ARGS,
    build_args,
    grid_for,
    pack_params,
)
from snep.errors import BackendUnavailableError, ConfigError
from snep.samplers.reference import ChainArrays
from snep.samplers.scalars import PassScalars

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
HEADER = KERNELS / "snep_fused.cuh"
SOURCE = KERNELS / "fused_step.cu"
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
    """``[(name, C type), ...]`` of ``extern "C" __global__ void <kernel>(...)``."""
    m = re.search(
        rf'extern\s+"C"\s+__global__\s+void\s+{kernel}\s*\((.*?)\)\s*\{{',
        _strip_comments(text),
        re.S,
    )
    assert m, f'extern "C" __global__ void {kernel}(...) not found in {SOURCE.name}'
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
    [("fused_step_float32", FUSED_STEP_ARGS), ("fill_normal_float32", FILL_NORMAL_ARGS)],
)
def test_launcher_arguments_match_the_kernel(kernel, args):
    assert kernel_params(SOURCE.read_text(), kernel) == list(args)


def test_fused_step_args_name_every_chain_array():
    names = [n for n, _ in FUSED_STEP_ARGS]
    assert set(ChainArrays.__dataclass_fields__) <= set(names)


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
from snep.backends import cuda_epilogues as ce
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
        "import sys, snep.backends.cuda_fused; "
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
