"""The host side of :mod:`snep.backends.cuda_graph` (no GPU needed): the step record's
layout, and that the module imports without CuPy.  The captured iteration itself is
tested through the device double in ``tests/algorithm/test_device_worker.py`` and on a
GPU by ``bench/gpu_check.py``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from snep.backends.cuda_fused import FUSED_PARAMS_DTYPE, pack_params
from snep.backends.cuda_graph import step_record_dtype
from snep.errors import ConfigError
from snep.samplers.scalars import PassScalars


@pytest.mark.parametrize("n_samples,batch_size", [(1, 1), (1, 100), (3, 7), (8, 1024)])
def test_the_step_record_is_the_indices_then_aligned_structs(n_samples, batch_size):
    dt = step_record_dtype(n_samples, batch_size)
    assert dt.names == ("idx", "params")
    assert dt.fields["idx"][1] == 0 and dt.fields["idx"][0].shape == (n_samples, batch_size)
    off = dt.fields["params"][1]
    assert off == 8 * n_samples * batch_size
    assert off % FUSED_PARAMS_DTYPE.alignment == 0
    assert dt.itemsize == off + n_samples * FUSED_PARAMS_DTYPE.itemsize
    # a record filled on the host reads back, struct by struct, from its bytes
    rec = np.zeros((), dt)
    for k in range(n_samples):
        pack_params(
            PassScalars(step=k + 5, seed=2**64 - 1 - k), rec["params"][k : k + 1].reshape(())
        )
        rec["idx"][k] = np.arange(batch_size) + k
    raw = rec.reshape(1).view(np.uint8)
    for k in range(n_samples):
        start = off + k * FUSED_PARAMS_DTYPE.itemsize
        s = raw[start : start + FUSED_PARAMS_DTYPE.itemsize].view(FUSED_PARAMS_DTYPE)[0]
        assert int(s["step"]) == k + 5 and int(s["seed"]) == 2**64 - 1 - k
        idx = raw[: 8 * n_samples * batch_size].view(np.int64).reshape(n_samples, batch_size)
        np.testing.assert_array_equal(idx[k], np.arange(batch_size) + k)


@pytest.mark.parametrize("bad", [(0, 10), (2, 0)])
def test_an_empty_step_record_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="both must be >= 1"):
        step_record_dtype(*bad)


def test_the_graph_module_imports_without_cupy():
    code = (
        "import sys, snep.backends.cuda_graph as g; "
        "assert 'cupy' not in sys.modules, 'cupy imported'; print(g.DEFAULT_DEPTH)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
