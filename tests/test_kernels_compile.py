"""Every kernels/*.cu compiles with the machine's nvcc for sm_80 and sm_90.

A compile-only check (no GPU needed); skipped where nvcc is absent.  The CUDA
kernels share kernels/snep_*.cuh with the CPU extension, so this also guards
the shared headers against host-only code.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parents[1] / "kernels"
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("source", sorted(KERNELS.glob("*.cu")), ids=lambda p: p.name)
@pytest.mark.parametrize("arch", ["80", "90"])
def test_cuda_source_compiles(source, arch, tmp_path):
    out = tmp_path / f"{source.stem}.cubin"
    cmd = [NVCC, "-cubin", "-O3", "-std=c++17", f"-arch=sm_{arch}", "-I", str(KERNELS)]
    res = subprocess.run([*cmd, "-o", str(out), str(source)], capture_output=True, text=True)
    assert res.returncode == 0, f"nvcc failed on {source.name} for sm_{arch}:\n{res.stderr}"
    assert out.stat().st_size > 0


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize(
    "arch,defines",
    [("75", ()), ("90", ("-DSNEP_GEMM_NO_WMMA",))],
    ids=["sm_75-fp32-fallback", "sm_90-no-wmma"],
)
def test_gemm_source_compiles_without_tensor_cores(arch, defines, tmp_path):
    # mlp_gemm.cu's TF32 entry points fall back to the fp32 kernel below sm_80 and where
    # NVRTC cannot include mma.h (the launcher then compiles with -DSNEP_GEMM_NO_WMMA)
    source = KERNELS / "mlp_gemm.cu"
    out = tmp_path / "mlp_gemm.cubin"
    cmd = [NVCC, "-cubin", "-O3", "-std=c++17", f"-arch=sm_{arch}", *defines, "-I", str(KERNELS)]
    res = subprocess.run([*cmd, "-o", str(out), str(source)], capture_output=True, text=True)
    assert res.returncode == 0, f"nvcc failed on mlp_gemm.cu for sm_{arch} {defines}:\n{res.stderr}"


def test_entry_points_follow_the_naming_convention():
    # extern "C" entry points are named <op>_<dtype> (looked up as f"{op}_{dtype}")
    import re

    for source in KERNELS.glob("*.cu"):
        names = re.findall(
            r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(',
            source.read_text(),
        )
        assert names, f'{source.name} declares no extern "C" entry point'
        for name in names:
            assert name.endswith(("_float32", "_float64")), f"{source.name}: {name}"
