"""The reporting side of ``gpu_check.py`` (no GPU needed): the docs/method.md §4 target ratios it
computes from a run's timings, and that it exits 2 with a clear message without CuPy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_check

GROUP_IT = "worker iteration C=8 B=100"
GROUP_FB = "fwd+bwd C=8 B=1024"
GROUP_CARD = f"card GEMM rate {gpu_check.CARD_GEMM_N}^3"


def test_target_ratios_use_the_fastest_snep_variant_and_skip_failed_timings():
    timings = [
        {"group": GROUP_IT, "impl": "snep cuda (launch by launch)", "gpu_ms": 1.0},
        {"group": GROUP_IT, "impl": "snep cuda graph", "gpu_ms": 0.5},
        {"group": GROUP_IT, "impl": "torch eager (gather, autograd, ...)", "gpu_ms": 2.0},
        {"group": GROUP_IT, "impl": "torch.compile (gather, ...)", "gpu_ms": 0.8},
        {"group": GROUP_CARD, "impl": "cupy.matmul fp32", "gpu_ms": 20.0, "gflops": 50_000.0},
        {"group": GROUP_CARD, "impl": "torch.mm tf32", "gpu_ms": 5.0, "gflops": 200_000.0},
        {"group": GROUP_FB, "impl": "snep cuda (cuBLAS)", "gpu_ms": 1.0, "gflops": 20_000.0},
        {"group": GROUP_FB, "impl": "snep cuda tiled-cpp", "gpu_ms": 0.8, "gflops": 25_000.0},
        {"group": GROUP_FB, "impl": "snep cuda tiled-tf32", "gpu_ms": 0.4, "gflops": 60_000.0},
        {"group": GROUP_FB, "impl": "torch eager (autograd)", "error": "RuntimeError: x"},
    ]
    t = gpu_check.target_ratios(timings)
    assert t["iteration_snep_best"] == {"impl": "snep cuda graph", "gpu_ms": 0.5}
    assert t["iteration_torch_eager_over_snep"] == pytest.approx(4.0)
    assert t["iteration_torch_compile_over_snep"] == pytest.approx(1.6)
    fp32 = t["fwd_bwd_1024_fp32_fraction_of_card"]
    assert fp32["impl"] == "snep cuda tiled-cpp" and fp32["fraction"] == pytest.approx(0.5)
    tf32 = t["fwd_bwd_1024_tf32_fraction_of_card"]
    assert tf32["impl"] == "snep cuda tiled-tf32" and tf32["fraction"] == pytest.approx(0.3)
    assert gpu_check.target_ratios([]) == {}  # nothing timed: no ratios, no crash


@pytest.mark.skipif(
    importlib.util.find_spec("cupy") is not None, reason="CuPy is installed: a real check"
)
def test_without_cupy_the_check_says_so_and_exits_2():
    script = Path(gpu_check.__file__)
    res = subprocess.run(
        [sys.executable, str(script), "--no-timing"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2
    assert "the cuda backend is not available" in res.stderr and "CuPy" in res.stderr
