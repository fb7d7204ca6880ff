"""The guard of the test modules that run numba.cuda kernels under Numba's CUDA simulator."""

from __future__ import annotations

import os

import pytest

REASON = "run with NUMBA_ENABLE_CUDASIM=1 (see .ci/run)"


def require_cudasim() -> None:
    """Skip the calling test module unless numba.cuda is the CUDA simulator; call it before
    importing numba.cuda or the modules that do."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        pytest.skip(REASON, allow_module_level=True)
    from numba import config as numba_config

    if not numba_config.ENABLE_CUDASIM:  # numba was configured before the variable was set
        pytest.skip(REASON, allow_module_level=True)
