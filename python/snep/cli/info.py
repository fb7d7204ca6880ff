"""``snep info``: versions, backends and thread settings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import snep
from snep.threads import THREAD_ENV_VARS

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Add the ``info`` command to the subparsers ``sub``."""
    p = sub.add_parser(
        "info",
        help="versions, backends and thread settings",
        description="Print snep's version, available backends, library versions and threads.",
    )
    p.set_defaults(command=run)


def _cupy_line() -> str:
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return "cuda: CuPy is not installed (pip install -e '.[cuda]')"
    try:
        import cupy

        names = []
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            names.append(f"{i}: {name} (sm_{props['major']}{props['minor']})")
        devices = "; ".join(names) if names else "no device visible"
        return f"cuda: CuPy {cupy.__version__}, {devices}"
    except Exception as e:  # no driver, or the driver refused
        return f"cuda: CuPy is installed but no device is usable ({type(e).__name__})"


def cuda_info() -> list[str]:
    """What the cuda backend would use here: CuPy and its devices, and where the kernels
    come from (the AOT fatbins CMake built with nvcc, or NVRTC at first use)."""
    import shutil

    from snep.backends.cuda import fused as cuda_fused

    lines = [_cupy_line()]
    try:
        kdir = cuda_fused.kernel_dir()
        fatbins = sorted(f.name for f in kdir.glob("*.fatbin"))
        where = ", ".join(fatbins) if fatbins else "none (NVRTC compiles the .cu at first use)"
        lines.append(f"cuda kernels: {kdir}; AOT fatbins: {where}")
    except Exception as e:
        lines.append(f"cuda kernels: {e}")
    lines.append(f"nvcc: {shutil.which('nvcc') or 'not found'}")
    return lines


def run(args: argparse.Namespace) -> int:
    """``snep info``; returns 0."""
    import platform

    import numba
    import numpy as np

    from snep.backends import available_backends

    print(f"snep {snep.__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"platform {platform.platform()}")
    print(f"numpy {np.__version__}")
    print(f"numba {numba.__version__}")
    print(f"backends available: {', '.join(available_backends())}")
    for line in cuda_info():
        print(line)
    print(f"cpu cores: {os.cpu_count()}")
    print("threads:")
    for var in THREAD_ENV_VARS:
        print(f"  {var}={os.environ.get(var, '(unset)')}")
    print(f"  numba threads in use: {numba.get_num_threads()}")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return 0
    for pool in threadpool_info():
        api = pool.get("internal_api", pool.get("user_api", "?"))
        print(f"  {api}: {pool.get('num_threads')} threads ({pool.get('filepath', '')})")
    return 0
