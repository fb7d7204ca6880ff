"""The hand-written batched GEMMs (numba.cuda) against numpy float64, under the simulator.

Runs in its own pytest process, like ``test_epilogues_cudasim.py``::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/backends -q -m cudasim

and skips otherwise.  What is checked (:mod:`snep.backends.cuda.gemm`, the MLP of
Hasenclever et al., JMLR 18 (2017), §6):

* every operand layout (``op(A) = A`` or ``A^T``, same for ``B``) and every epilogue
  (none, bias, bias + ReLU, ReLU mask) on sizes that are not multiples of the tile, several
  chains, a grid smaller than the number of tiles (the tile loop takes several turns), and
  outputs poisoned with NaN (an entry a kernel fails to write shows up);
* the three GEMM shapes of an MLP layer on weight views of a flat ``(C, P)`` parameter array
  (chains ``P`` apart): the forward with its fused epilogue, the weight gradient written into
  the flat gradient (nothing else touched) and the input gradient with the ReLU mask;
* :class:`~snep.backends.cuda.epilogues.EpilogueMLP` with ``gemm="tiled"`` against the float64
  oracle :mod:`snep.model.mlp_numpy`.

Most cases use small tiles (8 x 8 outputs, chunks of 4, 2 x 2 per thread: 16 simulated
threads per block, cheap); the production tiles (64 x 64, 256 threads) run on a few cases.

Tolerance of one GEMM, per output entry (``u = 2^-24``, float32's unit roundoff): the
kernel accumulates ``K`` float32 products in float32, so its error is at most
``gamma_K * sum_k |a_ik b_kj| ~ K u (|A| |B|)_ij`` (Higham, *Accuracy and Stability of
Numerical Algorithms*, §3.1; the inputs are float32 numbers, so the float64 oracle is exact to
1e-16), and the bias add rounds once more; the tests allow ``(K + 2) u ((|A| |B|)_ij +
|bias_j|)``.  ReLU and its mask are 1-Lipschitz and exact, so the bound carries through.
"""

from __future__ import annotations

import numpy as np
import pytest

from .cudasim import require_cudasim

pytestmark = pytest.mark.cudasim
require_cudasim()

from snep.backends.cuda import epilogues as ce  # noqa: E402
from snep.backends.cuda import gemm as cg  # noqa: E402
from snep.backends.cuda.gemm_common import TILES, GemmTiles  # noqa: E402
from snep.errors import ConfigError  # noqa: E402
from snep.model import mlp_numpy  # noqa: E402
from snep.model.spec import ParamSpec, init_params  # noqa: E402

C = 3
U32 = 2.0**-24
#: 8 x 8 output tiles, chunks of 4, 2 x 2 outputs per thread: 16 threads per block
SMALL = GemmTiles(bm=8, bn=8, bk=4, tm=2, tn=2)
#: a grid smaller than the tile count of every case below: the tile loop turns
FEW_BLOCKS = 2


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f32(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.normal(0, 1, shape).astype(np.float32)


def _oracle(
    a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """``op(a) @ op(b)`` in float64, ``|op(a)| @ |op(b)|`` (for the bound) and ``K``."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    if trans_a:
        a64 = a64.transpose(0, 2, 1)
    if trans_b:
        b64 = b64.transpose(0, 2, 1)
    return a64 @ b64, np.abs(a64) @ np.abs(b64), a64.shape[2]


def _assert_within(got: np.ndarray, want: np.ndarray, scale: np.ndarray, k: int) -> None:
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got)), "an output entry was not written (still NaN)"
    tol = (k + 2) * U32 * scale + 1e-30
    worst = np.max(np.abs(got - want) / tol)
    assert worst <= 1.0, f"error {worst:.2f}x the float32 accumulation bound"


def _operands(rng, c, m, n, k, trans_a, trans_b):
    a = _f32(rng, (c, k, m) if trans_a else (c, m, k))
    b = _f32(rng, (c, n, k) if trans_b else (c, k, n))
    return a, b


# ---------------------------------------------------------------------------------------
# the general GEMM
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "At"])
def test_gemm_every_layout(trans_a, trans_b):
    rng = _rng(10 + 2 * trans_a + trans_b)
    m, n, k = 13, 11, 9  # 2 x 2 tiles with ragged edges, 3 chunks (the last one partial)
    a, b = _operands(rng, C, m, n, k, trans_a, trans_b)
    out = np.full((C, m, n), np.nan, np.float32)
    cg.gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, tiles=SMALL, max_blocks=FEW_BLOCKS)
    want, scale, kk = _oracle(a, b, trans_a, trans_b)
    _assert_within(out, want, scale, kk)


@pytest.mark.parametrize("epilogue", ["bias", "bias_relu", "relu_grad"])
def test_gemm_epilogues(epilogue):
    rng = _rng(20 + len(epilogue))
    m, n, k, p_len, off = 10, 9, 6, 40, 17
    a, b = _operands(rng, C, m, n, k, False, False)
    params = _f32(rng, (C, p_len))
    h = np.maximum(_f32(rng, (C, m, n)), 0).astype(np.float32)  # a ReLU output: zeros too
    out = np.full((C, m, n), np.nan, np.float32)
    kw = {"bias": params, "bias_off": off} if epilogue != "relu_grad" else {"aux": h}
    cg.gemm(a, b, out, epilogue=epilogue, tiles=SMALL, max_blocks=FEW_BLOCKS, **kw)
    z, scale, kk = _oracle(a, b, False, False)
    bias = params[:, None, off : off + n].astype(np.float64)
    if epilogue == "bias":
        want, scale = z + bias, scale + np.abs(bias)
    elif epilogue == "bias_relu":
        want, scale = np.maximum(z + bias, 0.0), scale + np.abs(bias)
        assert (want == 0).any() and (want > 0).any()
    else:
        want = np.where(h > 0, z, 0.0)
        assert (h == 0).any()
    _assert_within(out, want, scale, kk)


def test_gemm_production_tiles_and_default_grid():
    """The 64 x 64 tiles with 256 threads: one ragged tile per chain, K over two chunks."""
    rng = _rng(30)
    m, n, k = 7, 5, 19
    a, b = _operands(rng, C, m, n, k, True, False)
    params = _f32(rng, (C, 12))
    out = np.full((C, m, n), np.nan, np.float32)
    cg.gemm(a, b, out, trans_a=True, epilogue="bias_relu", bias=params, bias_off=3)
    z, scale, kk = _oracle(a, b, True, False)
    bias = params[:, None, 3:8].astype(np.float64)
    _assert_within(out, np.maximum(z + bias, 0.0), scale + np.abs(bias), kk)


def test_gemm_production_tiles_loop_over_tiles_and_chains():
    """Production tiles, more tiles (2 x 2 per chain, 3 chains) than blocks (2)."""
    rng = _rng(31)
    m, n, k = 70, 65, 17
    a, b = _operands(rng, C, m, n, k, False, True)
    out = np.full((C, m, n), np.nan, np.float32)
    cg.gemm(a, b, out, trans_b=True, tiles=TILES, max_blocks=FEW_BLOCKS)
    want, scale, kk = _oracle(a, b, False, True)
    _assert_within(out, want, scale, kk)


def test_gemm_general_strides():
    """Operands and output that are strided views (every other column, a chain-axis step)."""
    rng = _rng(32)
    m, n, k = 6, 7, 5
    big_a = _f32(rng, (2 * C, m, 2 * k))
    big_b = _f32(rng, (C, k + 3, n))
    a = big_a[::2, :, ::2]  # strides (2 M 2K, 2K, 2) elements
    b = big_b[:, 2 : 2 + k, :]
    out_big = np.full((C, m, 3 * n), np.nan, np.float32)
    out = out_big[:, :, 1::3]
    cg.gemm(a, b, out, tiles=SMALL, max_blocks=FEW_BLOCKS)
    want, scale, kk = _oracle(a, b, False, False)
    _assert_within(out, want, scale, kk)
    untouched = np.delete(out_big, np.s_[1::3], axis=2)
    assert np.isnan(untouched).all(), "the GEMM wrote outside its output view"


def test_gemm_empty_reduction_writes_the_epilogue_of_zero():
    rng = _rng(33)
    a = np.zeros((C, 4, 0), np.float32)
    b = np.zeros((C, 0, 3), np.float32)
    params = _f32(rng, (C, 5))
    out = np.full((C, 4, 3), np.nan, np.float32)
    cg.gemm(a, b, out, epilogue="bias", bias=params, bias_off=2, tiles=SMALL)
    np.testing.assert_array_equal(out, np.broadcast_to(params[:, None, 2:5], out.shape))
    # an empty output launches nothing
    cg.gemm(
        np.zeros((C, 0, 3), np.float32),
        np.zeros((C, 3, 2), np.float32),
        np.zeros((C, 0, 2), np.float32),
    )


# ---------------------------------------------------------------------------------------
# the three shapes of an MLP layer, on views of the flat parameter/gradient arrays
# ---------------------------------------------------------------------------------------
def _layer_problem(seed: int, b: int = 9):
    spec = ParamSpec((6, 11, 5))  # layer 0: 6 -> 11, layer 1: 11 -> 5
    rng = _rng(seed)
    params = _f32(rng, (C, spec.size))
    return spec, rng, params, b


def _w64(params: np.ndarray, lay) -> np.ndarray:
    return params[:, lay.w_slice].reshape(C, lay.n_in, lay.n_out).astype(np.float64)


@pytest.mark.parametrize("relu", [True, False], ids=["bias_relu", "bias"])
def test_linear_forward_reads_weights_and_bias_from_the_flat_array(relu):
    spec, rng, params, b = _layer_problem(40 + relu)
    lay = spec.layers[1]
    h = _f32(rng, (C, b, lay.n_in))
    out = np.full((C, b, lay.n_out), np.nan, np.float32)
    cg.linear_forward(h, params, lay, out, relu=relu, tiles=SMALL, max_blocks=FEW_BLOCKS)
    w = _w64(params, lay)
    bias = params[:, None, lay.b_slice].astype(np.float64)
    z = h.astype(np.float64) @ w + bias
    scale = np.abs(h.astype(np.float64)) @ np.abs(w) + np.abs(bias)
    _assert_within(out, np.maximum(z, 0.0) if relu else z, scale, lay.n_in)


def test_weight_grad_writes_only_its_view_of_the_flat_gradient():
    spec, rng, _, b = _layer_problem(42)
    lay = spec.layers[1]
    h = _f32(rng, (C, b, lay.n_in))
    dz = _f32(rng, (C, b, lay.n_out))
    grad = np.full((C, spec.size), np.nan, np.float32)
    cg.weight_grad(h, dz, grad, lay, tiles=SMALL, max_blocks=FEW_BLOCKS)
    got = grad[:, lay.w_slice].reshape(C, lay.n_in, lay.n_out)
    want, scale, kk = _oracle(h, dz, True, False)
    _assert_within(got, want, scale, kk)
    rest = np.delete(grad, np.s_[lay.w_slice], axis=1)
    assert np.isnan(rest).all(), "weight_grad wrote outside the layer's weights"


@pytest.mark.parametrize("masked", [True, False], ids=["relu_grad", "plain"])
def test_input_grad_through_the_transposed_weight_view(masked):
    spec, rng, params, b = _layer_problem(43 + masked)
    lay = spec.layers[1]
    dz = _f32(rng, (C, b, lay.n_out))
    h = np.maximum(_f32(rng, (C, b, lay.n_in)), 0).astype(np.float32)
    out = np.full((C, b, lay.n_in), np.nan, np.float32)
    cg.input_grad(
        dz, params, lay, out, relu_out=h if masked else None, tiles=SMALL, max_blocks=FEW_BLOCKS
    )
    w = _w64(params, lay)
    z = dz.astype(np.float64) @ w.transpose(0, 2, 1)
    scale = np.abs(dz.astype(np.float64)) @ np.abs(w).transpose(0, 2, 1)
    _assert_within(out, np.where(h > 0, z, 0.0) if masked else z, scale, lay.n_out)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
def test_gemm_errors_name_the_value_and_the_expected_shape():
    a = np.zeros((C, 4, 5), np.float32)
    b = np.zeros((C, 5, 6), np.float32)
    out = np.zeros((C, 4, 6), np.float32)
    with pytest.raises(ConfigError, match=r"b is .*shape \(3, 6, 5\).*expected \(C, K, N\) = "):
        cg.gemm(a, b.transpose(0, 2, 1), out)
    with pytest.raises(ConfigError, match=r"out is .*expected \(C, M, N\) = \(3, 4, 6\)"):
        cg.gemm(a, b, out[:, :3])
    with pytest.raises(ConfigError, match="expected float32"):
        cg.gemm(a.astype(np.float64), b, out)
    with pytest.raises(ConfigError, match="epilogue='gelu', expected one of"):
        cg.gemm(a, b, out, epilogue="gelu")
    with pytest.raises(ConfigError, match="needs bias, the whole flat"):
        cg.gemm(a, b, out, epilogue="bias")
    with pytest.raises(ConfigError, match="offset 3 cannot hold a bias of 6"):
        cg.gemm(a, b, out, epilogue="bias_relu", bias=np.zeros((C, 8), np.float32), bias_off=3)
    with pytest.raises(ConfigError, match=r"needs aux, the ReLU's output of shape"):
        cg.gemm(a, b, out, epilogue="relu_grad")
    sq = np.zeros((C, 5, 5), np.float32)
    with pytest.raises(ConfigError, match="out overlaps a"):
        cg.gemm(sq, sq[:, :, ::-1], sq[:, ::-1])
    with pytest.raises(ConfigError, match="max_blocks=0"):
        cg.gemm(a, b, out, max_blocks=0)


# ---------------------------------------------------------------------------------------
# the whole MLP with the tiled GEMMs
# ---------------------------------------------------------------------------------------
def _mlp_problem(sizes: tuple[int, ...], b: int, seed: int):
    spec = ParamSpec(sizes)
    rng = _rng(seed)
    params = np.stack([init_params(spec, rng) for _ in range(C)])
    params = (params + 0.1 * rng.standard_normal(params.shape)).astype(np.float32)
    x = rng.random((C, b, spec.n_inputs)).astype(np.float32)
    y = rng.integers(0, spec.n_outputs, (C, b))
    return spec, params, x, y


def _close(got, want, rel: float = 1e-5, atol: float = 1e-6) -> None:
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got)), "an output entry was not written (still NaN)"
    err = np.abs(got - want).max()
    assert err <= rel * np.abs(want).max() + atol, f"max error {err:.3e}"


@pytest.mark.parametrize(
    "sizes,tiles",
    [((5, 7, 3), SMALL), ((4, 10, 6, 3), SMALL), ((6, 4), SMALL), ((5, 7, 3), TILES)],
    ids=["5-7-3", "4-10-6-3", "6-4", "5-7-3-production-tiles"],
)
def test_tiled_mlp_gradient_matches_the_oracle(sizes, tiles):
    """loglik_and_grad with every GEMM tiled, vs :mod:`snep.model.mlp_numpy` (float64).

    Tolerance: 1e-5 of the largest entry (as the cuBLAS/numpy path's test): the GEMMs sum at
    most 10 products (bound above: 12 u ~ 7e-7 relative per layer) through at most three
    layers and a float32 softmax.
    """
    spec, params, x, y = _mlp_problem(sizes, b=9, seed=len(sizes) + 50)
    calls = []

    def matmul(a, b, out):  # must not be used by the tiled path
        calls.append(1)
        return np.matmul(a, b, out=out)

    mlp = ce.EpilogueMLP(
        spec, C, 9, gemm="tiled", tiles=tiles, matmul=matmul, threads=4, max_blocks=FEW_BLOCKS
    )
    grad = np.full(params.shape, np.nan, np.float32)
    loglik = mlp.loglik_and_grad(params, x, y, grad)
    want_ll, want_g = mlp_numpy.loglik_and_grad(spec, params, x, y)
    _close(loglik, want_ll)
    _close(grad, want_g)
    assert not calls

    if tiles is SMALL:  # the one-call driver; the matmul path agrees to float32 rounding
        ll2, g2 = ce.cuda_loglik_and_grad(spec, params, x, y, gemm="tiled", tiles=SMALL)
        np.testing.assert_array_equal(ll2, loglik)
        np.testing.assert_array_equal(g2, grad)
        ll3, g3 = ce.cuda_loglik_and_grad(spec, params, x, y)
        _close(g3, g2.astype(np.float64))
        _close(ll3, ll2)


def test_tiled_predict_proba_matches_the_oracle():
    spec, params, _, _ = _mlp_problem((5, 7, 3), b=1, seed=60)
    x = _rng(61).random((11, 5))
    mlp = ce.EpilogueMLP(spec, C, 1, gemm="tiled", tiles=SMALL, threads=4, max_blocks=FEW_BLOCKS)
    _close(mlp.predict_proba(params, x, chunk=4), mlp_numpy.predict_proba(spec, params, x))
    _close(mlp.logits(params, x, chunk=20), mlp_numpy.logits(spec, params, x))


def test_mlp_gemm_option_errors():
    spec = ParamSpec((5, 7, 3))
    with pytest.raises(ConfigError, match="gemm='cublas', expected one of"):
        ce.EpilogueMLP(spec, C, 4, gemm="cublas")
    with pytest.raises(ConfigError, match="needs dtype float32"):
        ce.EpilogueMLP(spec, C, 4, gemm="tiled", dtype=np.float64)
    with pytest.raises(ConfigError, match="CUDA C\\+\\+ kernels on CuPy arrays"):
        ce.EpilogueMLP(spec, C, 4, gemm="tiled-cpp")
