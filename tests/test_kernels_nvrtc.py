"""Every kernels/*.cu compiles with NVRTC, the runtime compiler CuPy uses when no ahead-of-time
fatbin was built (``cuda_fused.compile_nvrtc``, ``cuda_gemm_raw.compile_nvrtc``), with the
launchers' own options, for compute_80 and compute_90.

NVRTC differs from nvcc: no host C/C++ headers, ``__CUDACC_RTC__`` defined, and ``mma.h``
only with the toolkit's include directory (else the GEMM launcher retries with
``-DSNEP_GEMM_NO_WMMA``).  Compile-only, no GPU needed: NVRTC is loaded with ctypes from
the ``nvidia-cuda-nvrtc`` wheel (a test dependency on Linux x86-64) or the system, and the
test skips with the reason when neither has it.  The PTX must define every entry point the
Python launchers look up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import re
import shutil
from pathlib import Path

import pytest

from snep.backends.cuda import fused as cuda_fused
from snep.backends.cuda import gemm_raw as cuda_gemm_raw

KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def _find_nvrtc() -> ctypes.CDLL | None:
    candidates: list[str] = []
    try:
        import nvidia  # namespace package of NVIDIA's wheels

        for root in nvidia.__path__:
            candidates += sorted(glob.glob(f"{root}/*/lib/libnvrtc.so*"), reverse=True)
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for path in candidates:
        if "builtins" in path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


NVRTC = _find_nvrtc()
# skipped without NVRTC, failed where SNEP_REQUIRE names nvrtc (see the repository's conftest.py)
pytestmark = pytest.mark.requires("nvrtc", found=NVRTC is not None)


def nvrtc_compile(source: Path, options: list[str]) -> tuple[int, str, str]:
    """``(status, log, ptx)`` of NVRTC on ``source`` (status 0 is success)."""
    lib = NVRTC
    prog = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(
        ctypes.byref(prog), source.read_bytes(), source.name.encode(), 0, None, None
    )
    assert status == 0, f"nvrtcCreateProgram: {status}"
    try:
        opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = b""
        if status == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value
        return status, log.value.decode(errors="replace"), ptx.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def _cuda_include() -> list[str]:
    """The toolkit's include directory when it has mma.h (what the GEMM launcher adds)."""
    nvcc = shutil.which("nvcc")
    roots = [Path(nvcc).resolve().parents[1]] if nvcc else []
    roots += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*"))]
    for root in roots:
        if (root / "include" / "mma.h").is_file():
            return [f"-I{root / 'include'}"]
    return []


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_the_fused_pass_compiles_with_nvrtc(arch):
    options = [*cuda_fused._NVRTC_OPTIONS_BASE, f"-I{KERNELS}", f"--gpu-architecture={arch}"]
    status, log, ptx = nvrtc_compile(KERNELS / "fused_step.cu", options)
    assert status == 0, f"NVRTC failed on fused_step.cu ({options}):\n{log}"
    assert set(cuda_fused.ENTRY_POINTS) <= _entries(ptx)


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("wmma", [True, False], ids=["with-mma.h", "SNEP_GEMM_NO_WMMA"])
def test_the_mlp_kernels_compile_with_nvrtc(arch, wmma):
    include = _cuda_include()
    if wmma and not include:
        pytest.skip("no CUDA toolkit include directory with mma.h on this machine")
    extra = include if wmma else [cuda_gemm_raw._NO_WMMA]
    options = ["-std=c++17", f"-I{KERNELS}", f"--gpu-architecture={arch}", *extra]
    status, log, ptx = nvrtc_compile(KERNELS / "mlp_gemm.cu", options)
    assert status == 0, f"NVRTC failed on mlp_gemm.cu ({options}):\n{log}"
    want = {*cuda_gemm_raw.ENTRY_POINTS.values(), *cuda_gemm_raw.EPILOGUE_KERNELS}
    assert want <= _entries(ptx)
    if wmma:  # the tensor-core path is really compiled in (wmma.mma instructions)
        assert "wmma.mma" in ptx
