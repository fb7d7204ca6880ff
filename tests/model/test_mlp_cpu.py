"""Tests of the fast CPU MLP (snep.model.mlp_cpu) against the float64 oracle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from snep.errors import ConfigError
from snep.model import CpuMLP, ParamSpec, epilogues, init_params, mlp_cpu, mlp_numpy

# logistic regression, 1 and 2 hidden layers, a deep narrow net
ARCHS = [(20, 8), (20, 16, 8), (20, 16, 12, 8), (10, 12, 12, 12, 12, 12, 3)]
BATCH = 7


def _problem(
    sizes: tuple[int, ...], n_chains: int, batch: int = BATCH, seed: int = 0
) -> tuple[ParamSpec, np.ndarray, np.ndarray, np.ndarray]:
    """Standard init plus noise (nonzero biases), different per chain; float64."""
    spec = ParamSpec(sizes)
    rng = np.random.default_rng(seed)
    params = np.stack([init_params(spec, rng) for _ in range(n_chains)])
    params += 0.1 * rng.standard_normal(params.shape)
    x = rng.random((n_chains, batch, spec.n_inputs))
    y = rng.integers(0, spec.n_outputs, (n_chains, batch))
    return spec, params, x, y


def _assert_close(got: np.ndarray, ref: np.ndarray, rel: float = 1e-4, atol: float = 1e-5) -> None:
    """float32-vs-float64 agreement relative to the reference's scale."""
    diff = np.abs(np.asarray(got, np.float64) - ref).max()
    assert diff <= rel * np.abs(ref).max() + atol, (diff, np.abs(ref).max())


@pytest.mark.parametrize("n_chains", [1, 3])
@pytest.mark.parametrize("sizes", ARCHS)
def test_loglik_and_grad_match_oracle(sizes: tuple[int, ...], n_chains: int) -> None:
    spec, params, x, y = _problem(sizes, n_chains)
    ref_ll, ref_g = mlp_numpy.loglik_and_grad(spec, params, x, y)
    model = CpuMLP(spec, n_chains, BATCH)
    p32 = params.astype(np.float32)
    x32 = x.astype(np.float32)
    grad = np.full(p32.shape, np.nan, np.float32)  # poisoned: every entry must be written
    loglik = model.loglik_and_grad(p32, x32, y, grad)
    assert loglik.shape == (n_chains,) and loglik.dtype == np.float64
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(loglik, ref_ll, rtol=1e-5, atol=1e-5)
    _assert_close(grad, ref_g)
    # per chain too: one chain's scale must not hide another chain's error
    for c in range(n_chains):
        _assert_close(grad[c], ref_g[c])


@pytest.mark.parametrize("n_chains", [1, 3])
def test_float64_model_matches_oracle_tightly(n_chains: int) -> None:
    spec, params, x, y = _problem((20, 16, 12, 8), n_chains)
    ref_ll, ref_g = mlp_numpy.loglik_and_grad(spec, params, x, y)
    model = CpuMLP(spec, n_chains, BATCH, dtype=np.float64)
    grad = np.full_like(params, np.nan)
    loglik = model.loglik_and_grad(params, x, y, grad)
    np.testing.assert_allclose(loglik, ref_ll, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_g, rtol=1e-10, atol=1e-12)


def test_deterministic_and_reusable() -> None:
    spec, params, x, y = _problem((20, 16, 12, 8), 3)
    p32, x32 = params.astype(np.float32), x.astype(np.float32)
    model = CpuMLP(spec, 3, BATCH)
    g1, g2, g3 = (np.empty_like(p32) for _ in range(3))
    l1 = model.loglik_and_grad(p32, x32, y, g1)
    l2 = model.loglik_and_grad(p32, x32, y, g2)
    l3 = CpuMLP(spec, 3, BATCH).loglik_and_grad(p32.copy(), x32.copy(), y, g3)
    for la, ga in ((l2, g2), (l3, g3)):
        np.testing.assert_array_equal(la, l1)
        np.testing.assert_array_equal(ga, g1)
    # new parameters in the same buffer are picked up (views are of the buffer)
    p32 *= 0.5
    l4 = model.loglik_and_grad(p32, x32, y, g1)
    ref_ll, ref_g = mlp_numpy.loglik_and_grad(spec, p32.astype(np.float64), x32, y)
    np.testing.assert_allclose(l4, ref_ll, rtol=1e-5)
    _assert_close(g1, ref_g)


def test_input_conversions() -> None:
    """float64 / non-contiguous x and int32 labels give the float32 result."""
    spec, params, x, y = _problem((20, 16, 8), 3)
    p32 = params.astype(np.float32)
    model = CpuMLP(spec, 3, BATCH)
    g_ref = np.empty_like(p32)
    l_ref = model.loglik_and_grad(p32, x.astype(np.float32), y, g_ref)
    g = np.empty_like(p32)
    np.testing.assert_array_equal(model.loglik_and_grad(p32, x, y.astype(np.int32), g), l_ref)
    np.testing.assert_array_equal(g, g_ref)
    wide = np.zeros((3, BATCH, 2 * spec.n_inputs), np.float32)
    wide[:, :, ::2] = x
    np.testing.assert_array_equal(model.loglik_and_grad(p32, wide[:, :, ::2], y, g), l_ref)
    np.testing.assert_array_equal(g, g_ref)


def test_parallel_kernels_match_serial() -> None:
    spec, params, x, y = _problem((20, 16, 12, 8), 3)
    p32, x32 = params.astype(np.float32), x.astype(np.float32)
    g_ser, g_par = np.empty_like(p32), np.empty_like(p32)
    l_ser = CpuMLP(spec, 3, BATCH).loglik_and_grad(p32, x32, y, g_ser)
    l_par = CpuMLP(spec, 3, BATCH, parallel=True).loglik_and_grad(p32, x32, y, g_par)
    np.testing.assert_allclose(l_par, l_ser, rtol=1e-6)
    np.testing.assert_allclose(g_par, g_ser, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_chains", [1, 3])
@pytest.mark.parametrize("sizes", [(20, 8), (20, 16, 12, 8)])
def test_predict_proba_and_logits_match_oracle(sizes: tuple[int, ...], n_chains: int) -> None:
    spec, params, _, _ = _problem(sizes, n_chains)
    x = np.random.default_rng(3).random((23, spec.n_inputs))
    p32 = params.astype(np.float32)
    model = CpuMLP(spec, n_chains, BATCH)
    ref_p = mlp_numpy.predict_proba(spec, params, x)
    ref_z = mlp_numpy.logits(spec, params, x)
    for chunk in (10, 23, 4096):  # several chunks with a short last one, one chunk
        proba = model.predict_proba(p32, x, chunk=chunk)
        assert proba.shape == (n_chains, 23, spec.n_outputs) and proba.dtype == np.float32
        np.testing.assert_allclose(proba, ref_p, atol=2e-6)
        np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
        _assert_close(model.logits(p32, x.astype(np.float32), chunk=chunk), ref_z)
    out = np.full((n_chains, 23, spec.n_outputs), np.nan, np.float32)
    assert model.predict_proba(p32, x, out=out, chunk=10) is out
    np.testing.assert_allclose(out, ref_p, atol=2e-6)
    assert model.predict_proba(p32, x[:0]).shape == (n_chains, 0, spec.n_outputs)


def test_loglik_equals_log_predict_proba() -> None:
    spec, params, x, y = _problem((20, 16, 8), 1)
    p32 = params.astype(np.float32)
    model = CpuMLP(spec, 1, BATCH)
    loglik = model.loglik_and_grad(p32, x.astype(np.float32), y, np.empty_like(p32))
    proba = model.predict_proba(p32, x[0])
    np.testing.assert_allclose(loglik[0], np.log(proba[0, np.arange(BATCH), y[0]]).sum(), rtol=1e-5)


def test_shape_and_argument_errors() -> None:
    spec, params, x, y = _problem((20, 16, 8), 3)
    p32, x32 = params.astype(np.float32), x.astype(np.float32)
    g = np.empty_like(p32)
    model = CpuMLP(spec, 3, BATCH)
    cases = [
        ((p32[:2], x32, y, g), r"params has shape \(2, "),
        ((params, x32, y, g), "dtype float64"),
        ((p32, x32, y, g[:, :-1]), "grad_out has shape"),
        ((p32, x32[:, :-1], y, g), r"x has shape \(3, 6, 20\)"),
        ((p32, x32[..., :-1], y, g), "x has shape"),
        ((p32, x32, y[:, :-1], g), "y has shape"),
        ((p32, x32, y.astype(np.float32), g), "integer labels"),
        ((p32, x32, y + spec.n_outputs, g), r"labels span \[\d+, \d+\]"),
        ((p32, x32, y - spec.n_outputs, g), "labels span"),
        ((p32, x32, y, p32), "overlaps"),
        ((np.asfortranarray(p32), x32, y, g), "unit stride"),
    ]
    ro = np.empty_like(p32)
    ro.flags.writeable = False
    cases.append(((p32, x32, y, ro), "read-only"))
    for args, match in cases:
        with pytest.raises(ConfigError, match=match):
            model.loglik_and_grad(*args)
    with pytest.raises(ConfigError, match="x has shape"):
        model.predict_proba(p32, x32)
    with pytest.raises(ConfigError, match="out has shape"):
        model.predict_proba(p32, x32[0], out=np.empty((3, BATCH, 7), np.float32))
    with pytest.raises(ConfigError, match="chunk"):
        model.predict_proba(p32, x32[0], chunk=0)
    for kwargs in (
        {"spec": (20, 8), "n_chains": 1, "batch_size": 2},
        {"spec": spec, "n_chains": 0, "batch_size": 2},
        {"spec": spec, "n_chains": 1, "batch_size": 2.0},
        {"spec": spec, "n_chains": 1, "batch_size": 2, "dtype": np.int32},
    ):
        with pytest.raises(ConfigError):
            CpuMLP(**kwargs)  # type: ignore[arg-type]


def test_public_kernels_against_numpy() -> None:
    rng = np.random.default_rng(4)
    n_chains, rows, n = 3, 5, 9
    flat = rng.standard_normal((n_chains, 40)).astype(np.float32)
    b = flat[:, 11 : 11 + n]  # strided (C, n) view, as a bias of the flat parameters
    z = rng.standard_normal((n_chains, rows, n)).astype(np.float32)
    for parallel in (False, True):
        z1 = z.copy()
        mlp_cpu.bias_relu_inplace(z1, b, parallel=parallel)
        np.testing.assert_array_equal(z1, np.maximum(z + b[:, None, :], 0))
        z2 = z.copy()
        mlp_cpu.bias_inplace(z2, b, parallel=parallel)
        np.testing.assert_array_equal(z2, z + b[:, None, :])
        dz = z.copy()
        mlp_cpu.relu_backward_inplace(dz, z1, parallel=parallel)
        np.testing.assert_array_equal(dz, z * (z1 > 0))
        out = np.zeros_like(flat)
        mlp_cpu.bias_grad(z, out[:, 11 : 11 + n], parallel=parallel)
        np.testing.assert_allclose(out[:, 11 : 11 + n], z.sum(axis=1), rtol=1e-5, atol=1e-6)
        assert np.count_nonzero(out[:, :11]) == 0 and np.count_nonzero(out[:, 11 + n :]) == 0
        y = rng.integers(0, n, (n_chains, rows))
        dl = np.empty_like(z)
        ll = mlp_cpu.softmax_xent_fwd_bwd(z, y, dl, parallel=parallel)
        logp = mlp_numpy.log_softmax(z.astype(np.float64))
        ref_ll = np.take_along_axis(logp, y[..., None], -1)[..., 0].sum(axis=1)
        np.testing.assert_allclose(ll, ref_ll, rtol=1e-5)
        np.testing.assert_allclose(dl, np.eye(n)[y] - np.exp(logp), atol=1e-6)
        p = z.copy()
        mlp_cpu.softmax_inplace(p, parallel=parallel)
        np.testing.assert_allclose(p, np.exp(logp), atol=1e-6)
    with pytest.raises(ConfigError, match="outside"):
        mlp_cpu.softmax_xent_fwd_bwd(z, np.full((n_chains, rows), n), np.empty_like(z))
    with pytest.raises(ConfigError, match="bias has shape"):
        mlp_cpu.bias_relu_inplace(z, b[:, :-1])


def test_softmax_xent_is_stable() -> None:
    z = np.array([[[80.0, -80.0, 0.0], [-1e4, 1e4, 0.0]]], np.float32)
    dl = np.empty_like(z)
    ll = mlp_cpu.softmax_xent_fwd_bwd(z, np.array([[0, 0]]), dl)
    assert np.all(np.isfinite(ll)) and np.all(np.isfinite(dl))
    np.testing.assert_allclose(ll, [-2e4], rtol=1e-6)


def test_epilogues_are_plain_python() -> None:
    """The scalar epilogues run uncompiled (single source for njit and cuda.jit)."""
    z = np.array([0.5, -1.0, 2.0])
    dz = np.empty(3)
    ll = epilogues.softmax_xent_row(z, 2, dz)
    logp = mlp_numpy.log_softmax(z)
    assert ll == pytest.approx(logp[2])
    np.testing.assert_allclose(dz, np.eye(3)[2] - np.exp(logp))
    p = z.copy()
    epilogues.softmax_row(p, p)
    np.testing.assert_allclose(p, np.exp(logp))
    assert epilogues.relu(-1.0) == 0.0 and epilogues.relu(2.0) == 2.0
    assert epilogues.bias_relu(1.0, -2.0) == 0.0 and epilogues.bias_relu(1.0, 2.0) == 3.0
    assert epilogues.relu_grad(0.0, 5.0) == 0.0 and epilogues.relu_grad(1.0, 5.0) == 5.0
    # loaded on its own (not through snep.model, which imports numba) it needs no numba
    code = (
        "import importlib.util as u, sys; "
        f"s = u.spec_from_file_location('epi', {epilogues.__file__!r}); "
        "s.loader.exec_module(u.module_from_spec(s)); "
        "assert 'numba' not in sys.modules, 'epilogues.py imports numba'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_warmup_runs() -> None:
    mlp_cpu.warmup(np.float32)
    CpuMLP(ParamSpec((6, 5, 3)), 2, 4).warmup()
