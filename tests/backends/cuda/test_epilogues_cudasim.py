"""The numba.cuda epilogue kernels against numpy float64, under Numba's CUDA simulator.

The simulator must be chosen before numba.cuda is first imported, so this module runs in
its own pytest process::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/backends -q -m cudasim

In a normal run (variable unset) the module skips.  Sizes are tiny and not multiples of
the block size (the simulator runs one Python thread per CUDA thread, ~0.1 ms each), and
launches use few threads and blocks so that every grid-stride loop takes several turns.
Outputs are poisoned with NaN before each launch, so an entry a kernel fails to write
shows up.
"""

from __future__ import annotations

import numpy as np
import pytest

from .cudasim import require_cudasim

pytestmark = pytest.mark.cudasim
require_cudasim()

from numba import cuda  # noqa: E402

from snep.backends.cuda import epilogues as ce  # noqa: E402
from snep.errors import ConfigError  # noqa: E402
from snep.model import mlp_numpy  # noqa: E402
from snep.model.spec import ParamSpec, init_params  # noqa: E402

C = 2
#: few threads and blocks: a grid of 2 x 4 threads loops over every size below
LAUNCH = {"threads": 4, "max_blocks": 2}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _close(got: np.ndarray, want: np.ndarray, rel: float = 1e-5, atol: float = 1e-6) -> None:
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got)), "an output entry was not written (still NaN)"
    err = np.abs(got - want).max()
    assert err <= rel * np.abs(want).max() + atol, f"max error {err:.3e}"


def _poisoned(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return np.full(shape, np.nan, dtype)


def test_simulator_is_active():
    assert ce.SIMULATOR and cuda.is_available()


def test_launch_dims_cover_and_cap():
    assert ce.launch_dims(1000, 256, 4096) == (4, 256)
    assert ce.launch_dims(1000, 256, 2) == (2, 256)
    assert ce.launch_dims(5, 256, 4096) == (1, 5)
    with pytest.raises(ConfigError):
        ce.launch_dims(10, 0, 1)


@pytest.mark.parametrize("with_relu", [True, False], ids=["bias_relu", "bias"])
def test_bias_epilogues(with_relu):
    rng = _rng(1)
    b, n, p_len, off = 5, 7, 30, 11
    z = rng.normal(0, 1, (C, b, n)).astype(np.float32)
    params = rng.normal(0, 1, (C, p_len)).astype(np.float32)
    want = z.astype(np.float64) + params[:, None, off : off + n]
    if with_relu:
        want = np.maximum(want, 0.0)
        ce.bias_relu_(z_dev := cuda.to_device(z), cuda.to_device(params), off, **LAUNCH)
    else:
        ce.bias_(z_dev := cuda.to_device(z), cuda.to_device(params), off, **LAUNCH)
    _close(z_dev.copy_to_host(), want)
    if with_relu:
        assert (z_dev.copy_to_host() == 0).any()


def test_softmax_xent_rows_and_sum():
    rng = _rng(2)
    b, k = 5, 3
    logits = (3 * rng.normal(0, 1, (C, b, k))).astype(np.float32)
    logits[0, 0] = [80.0, -80.0, 0.0]  # needs the max shift
    y = rng.integers(0, k, (C, b)).astype(np.int32)
    dlogits = cuda.to_device(_poisoned((C, b, k)))
    row_ll = cuda.to_device(_poisoned((C * b,), np.float64))
    loglik = cuda.to_device(_poisoned((C,), np.float64))
    ce.softmax_xent(cuda.to_device(logits), cuda.to_device(y), dlogits, row_ll, **LAUNCH)
    ce.loglik_sum(row_ll, loglik, **LAUNCH)

    logp = mlp_numpy.log_softmax(logits.astype(np.float64))
    onehot = np.eye(k)[y]
    rows = (logp * onehot).sum(axis=-1)
    want_d = onehot - np.exp(logp)
    _close(row_ll.copy_to_host(), rows.ravel())
    _close(dlogits.copy_to_host(), want_d)
    _close(loglik.copy_to_host(), rows.sum(axis=1))


def test_softmax_xent_bad_label_gives_nan_not_a_crash():
    logits = np.zeros((C, 3, 4), np.float32)
    y = np.array([[0, 1, 4], [0, -1, 3]], np.int32)
    dlogits, row_ll = _poisoned((C, 3, 4)), _poisoned((C * 3,), np.float64)
    dlogits[...] = 0.0
    row_ll[...] = 0.0
    d_dev, r_dev = cuda.to_device(dlogits), cuda.to_device(row_ll)
    ce.softmax_xent(cuda.to_device(logits), cuda.to_device(y), d_dev, r_dev, **LAUNCH)
    r = r_dev.copy_to_host().reshape(C, 3)
    bad = (y < 0) | (y >= 4)
    assert np.isnan(r[bad]).all() and np.isfinite(r[~bad]).all()
    assert np.isnan(d_dev.copy_to_host()[bad]).all()


def test_relu_backward_and_bias_grad():
    rng = _rng(3)
    b, n, p_len, off = 6, 5, 23, 4
    dz = rng.normal(0, 1, (C, b, n)).astype(np.float32)
    h = np.maximum(rng.normal(0, 1, (C, b, n)), 0).astype(np.float32)
    want_dz = dz.astype(np.float64) * (h > 0)

    # separately: relu_backward_ then bias_grad
    dz1 = cuda.to_device(dz)
    ce.relu_backward_(dz1, cuda.to_device(h), **LAUNCH)
    g1 = _poisoned((C, p_len))
    g1_dev = cuda.to_device(g1)
    ce.bias_grad(dz1, g1_dev, off, **LAUNCH)
    _close(dz1.copy_to_host(), want_dz)
    g1 = g1_dev.copy_to_host()
    _close(g1[:, off : off + n], want_dz.sum(axis=1))
    assert np.isnan(np.delete(g1, np.s_[off : off + n], axis=1)).all()  # nothing else touched

    # fused
    dz2 = cuda.to_device(dz)
    g2_dev = cuda.to_device(_poisoned((C, p_len)))
    ce.relu_backward_bias_grad(dz2, cuda.to_device(h), g2_dev, off, **LAUNCH)
    _close(dz2.copy_to_host(), want_dz)
    _close(g2_dev.copy_to_host()[:, off : off + n], want_dz.sum(axis=1))


def test_bias_grad_of_an_empty_batch_is_zero():
    g = cuda.to_device(_poisoned((C, 9)))
    ce.bias_grad(cuda.to_device(np.zeros((C, 0, 3), np.float32)), g, 2, **LAUNCH)
    np.testing.assert_array_equal(g.copy_to_host()[:, 2:5], 0.0)


def test_softmax_rows_in_place():
    rng = _rng(4)
    z = (4 * rng.normal(0, 1, (C, 7, 3))).astype(np.float32)
    want = np.exp(mlp_numpy.log_softmax(z.astype(np.float64)))
    z_dev = cuda.to_device(z)
    ce.softmax_(z_dev, **LAUNCH)
    _close(z_dev.copy_to_host(), want)


def test_bad_offsets_are_clear_errors():
    z = np.zeros((C, 2, 5), np.float32)
    with pytest.raises(ConfigError, match="offset 8 cannot hold a bias of 5"):
        ce.bias_relu_(z, np.zeros((C, 12), np.float32), 8)
    with pytest.raises(ConfigError, match=r"expected \(C, B, n\)"):
        ce.bias_(np.zeros((C, 5), np.float32), np.zeros((C, 12), np.float32), 0)


def _mlp_problem(sizes: tuple[int, ...], b: int, seed: int):
    spec = ParamSpec(sizes)
    rng = _rng(seed)
    params = np.stack([init_params(spec, rng) for _ in range(C)])
    params = (params + 0.1 * rng.standard_normal(params.shape)).astype(np.float32)
    x = rng.random((C, b, spec.n_inputs)).astype(np.float32)
    y = rng.integers(0, spec.n_outputs, (C, b))
    return spec, params, x, y


@pytest.mark.parametrize("launch", [LAUNCH, {}], ids=["looping-grid", "default-grid"])
@pytest.mark.parametrize("sizes", [(5, 7, 3), (4, 6, 5, 3), (6, 4)], ids=str)
def test_full_mlp_gradient_matches_oracle(sizes, launch):
    spec, params, x, y = _mlp_problem(sizes, b=5, seed=len(sizes))
    mlp = ce.EpilogueMLP(spec, C, 5, xp=np, **launch)
    grad = _poisoned(params.shape)
    loglik = mlp.loglik_and_grad(params, x, y, grad)
    want_ll, want_g = mlp_numpy.loglik_and_grad(spec, params, x, y)
    _close(loglik, want_ll)
    _close(grad, want_g, rel=1e-5, atol=1e-6)

    # the one-call driver with an explicit GEMM callable gives the same numbers
    calls = []

    def matmul(a, b, out):
        calls.append(1)
        return np.matmul(a, b, out=out)

    ll2, g2 = ce.cuda_loglik_and_grad(spec, params, x, y, matmul=matmul, **launch)
    np.testing.assert_array_equal(g2, grad)
    np.testing.assert_array_equal(ll2, loglik)
    assert len(calls) == 3 * spec.n_layers - 1


def test_predict_proba_matches_oracle():
    spec, params, _, _ = _mlp_problem((5, 7, 3), b=1, seed=9)
    x = _rng(10).random((11, 5))
    mlp = ce.EpilogueMLP(spec, C, 1, xp=np, **LAUNCH)
    got = mlp.predict_proba(params, x, chunk=4)  # chunks of 4, 4 and 3 rows
    _close(got, mlp_numpy.predict_proba(spec, params, x))
    _close(mlp.logits(params, x), mlp_numpy.logits(spec, params, x))


def test_mlp_rejects_bad_labels_and_shapes():
    spec, params, x, y = _mlp_problem((5, 7, 3), b=5, seed=11)
    mlp = ce.EpilogueMLP(spec, C, 5, xp=np, **LAUNCH)
    grad = np.empty_like(params)
    with pytest.raises(
        ConfigError, match=r"labels span \[\d, 3\], expected class indices in \[0, 3\)"
    ):
        mlp.loglik_and_grad(params, x, np.where(y == 0, 3, y), grad)
    with pytest.raises(ConfigError, match="x has shape"):
        mlp.loglik_and_grad(params, x[:, :4], y, grad)
    with pytest.raises(ConfigError, match="grad_out is a"):
        mlp.loglik_and_grad(params, x, y, grad[:, :-1])
