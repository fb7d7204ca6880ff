"""Tiling, operand checks and weight views shared by the batched GEMM kernels (no GPU).

:mod:`snep.backends.cuda.gemm_common` is what the numba.cuda kernel (:mod:`snep.backends.cuda.gemm`)
and the CUDA C++ kernel (``kernels/mlp_gemm.cu``) share; the kernels themselves are checked
under the simulator (``test_gemm_cudasim.py``) and on a GPU (``bench/gpu_check.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from snep.backends.cuda.gemm_common import (
    EPILOGUES,
    TILES,
    GemmTiles,
    check_gemm,
    grid_blocks,
    transposed,
    weight_view,
)
from snep.errors import ConfigError
from snep.model.spec import ParamSpec


def test_production_tiles():
    assert (TILES.bm, TILES.bn, TILES.bk, TILES.tm, TILES.tn) == (64, 64, 16, 4, 4)
    assert TILES.threads == 256 and TILES.a_loads == 4 and TILES.b_loads == 4
    assert TILES.n_tiles(8, 100, 500) == 8 * 2 * 8
    assert TILES.n_tiles(3, 0, 5) == 0


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"bm": 0}, "must be positive ints"),
        ({"bm": 10, "tm": 4}, "multiples of tm"),
        ({"bk": 3}, "multiples of the 256 threads"),
        ({"bm": 128, "bn": 128, "tm": 2, "tn": 2}, "at most 1024"),
    ],
)
def test_bad_tiles_are_clear_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        GemmTiles(**kw)


def test_grid_blocks_caps_and_covers():
    assert grid_blocks(10, 4) == 4
    assert grid_blocks(3, 65535) == 3
    assert grid_blocks(0, 8) == 1
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ConfigError, match="max_blocks"):
            grid_blocks(5, bad)


def test_check_gemm_accepts_consistent_operands_and_names_the_bad_one():
    a = np.zeros((2, 4, 5), np.float32)
    b = np.zeros((2, 5, 6), np.float32)
    out = np.zeros((2, 4, 6), np.float32)
    shape, epi = check_gemm("t", a, b, out, "none")
    assert (shape.c, shape.m, shape.n, shape.k) == (2, 4, 6, 5) and epi == EPILOGUES["none"]
    params = np.zeros((2, 20), np.float32)
    _, epi = check_gemm("t", a, b, out, "bias_relu", params, 14)
    assert epi == EPILOGUES["bias_relu"]
    with pytest.raises(ConfigError, match=r"t: a is .*expected a 3-D \(C, M, K\)"):
        check_gemm("t", a[0], b, out, "none")
    with pytest.raises(ConfigError, match=r"b is .*expected \(C, K, N\) = \(2, 5, N\)"):
        check_gemm("t", a, b[:, :4], out, "none")
    with pytest.raises(ConfigError, match="offset 15 cannot hold a bias of 6"):
        check_gemm("t", a, b, out, "bias", params, 15)
    with pytest.raises(ConfigError, match=r"needs bias, the whole flat \(C, P\) = \(2, P\)"):
        check_gemm("t", a, b, out, "bias", params[0], 0)
    with pytest.raises(ConfigError, match="aux, the ReLU's output of shape"):
        check_gemm("t", a, b, out, "relu_grad", aux=out[:, :2])
    with pytest.raises(ConfigError, match="out overlaps b"):
        sq = np.zeros((2, 5, 5), np.float32)
        check_gemm("t", np.zeros((2, 5, 5), np.float32), sq, sq.transpose(0, 2, 1), "none")
    with pytest.raises(ConfigError, match=r"aux is .*expected float32"):
        check_gemm("t", a, b, out, "relu_grad", aux=out.astype(np.float64))


def test_weight_view_is_a_strided_view_of_the_flat_array():
    spec = ParamSpec((4, 6, 3))
    flat = np.arange(2 * spec.size, dtype=np.float32).reshape(2, spec.size)
    for lay, (w_ref, _) in zip(spec.layers, spec.views(flat), strict=True):
        w = weight_view(flat, lay)
        assert w.shape == (2, lay.n_in, lay.n_out) and np.shares_memory(w, flat)
        assert w.strides == (4 * spec.size, 4 * lay.n_out, 4)
        np.testing.assert_array_equal(w, w_ref)
    with pytest.raises(ConfigError, match="expected a C-contiguous"):
        weight_view(np.asfortranarray(flat), spec.layers[0])
    with pytest.raises(ConfigError, match="P >= "):
        weight_view(flat[:, :10], spec.layers[1])


def test_transposed_swaps_the_last_two_axes():
    a = np.zeros((2, 3, 4), np.float32)
    assert transposed(a).shape == (2, 4, 3)
    with pytest.raises(ConfigError, match="expected a 3-D"):
        transposed(a[0])
