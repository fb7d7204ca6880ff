"""Thread settings of BLAS, OpenMP and Numba, set before those libraries load.

``snep train --threads N`` (config key ``train.threads``) sets the variables below
before NumPy and Numba are imported, so this module imports nothing heavy
(docs/method.md §3, Threads).
"""

from __future__ import annotations

import os

__all__ = ["QUIET_POOL_ENV", "THREAD_ENV_VARS", "apply_threads", "thread_settings"]

#: Environment variables that set the thread counts of BLAS, OpenMP and Numba.
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")

#: Thread pools that stop spinning when idle.  OpenBLAS's threads busy-wait after
#: each GEMM and OpenMP's after each fused pass; on shared cores each pool then
#: waits for the other: a 2-thread worker iteration took 8.0 ms with the
#: defaults and 2.7-3.1 ms with these (784-500-300-10, batch 100; bench/).
#: Values already in the environment win.
QUIET_POOL_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive"}


def apply_threads(threads: int) -> None:
    """Set the thread environment variables (``threads`` > 0) and the quiet-pool ones.

    Call before NumPy, Numba or OpenMP load; ``threads`` = 0 keeps the libraries'
    defaults.
    """
    for var, value in QUIET_POOL_ENV.items():
        os.environ.setdefault(var, value)
    if threads > 0:
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(threads)


def thread_settings() -> dict[str, str | None]:
    """The thread environment variables as they are now (``None`` where unset)."""
    return {k: os.environ.get(k) for k in THREAD_ENV_VARS}
