"""The PyTorch baseline computes the same maths as snep (so the benchmark compares like
with like): on a small network, one torch iteration with the noise fixed matches the
snep iteration (``CpuMLP.loglik_and_grad`` + the fused pass) to float32 rounding, and
both match the float64 oracle.  Not a benchmark: runs with the benchmarks disabled.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from snep.backends import get_backend  # noqa: E402
from snep.maths.oracles import fused_step_reference  # noqa: E402
from snep.model import mlp_numpy  # noqa: E402
from snep.model.mlp_cpu import CpuMLP  # noqa: E402
from snep.model.spec import ParamSpec, init_params  # noqa: E402
from snep.state import (  # noqa: E402
    ChainArrays,
    PassScalars,
    SamplerKind,
)
from torch_reference import (  # noqa: E402
    STATE_FIELDS,
    CompiledTorchSnepWorker,
    ForeachTorchSnepWorker,
    TorchFwdBwd,
    TorchSnepWorker,
    layer_views,
)

SPEC = ParamSpec((12, 16, 8, 5))  # P = 388
KINDS = list(SamplerKind)


def _state(rng: np.random.Generator, c: int) -> ChainArrays:
    """A random proper state; about 5% of the tilted precisions are negative (guard fires)."""
    a = ChainArrays.random(rng, c, SPEC.size)
    for i in range(c):  # positions near a real initialisation, as in training
        a.x[i] = init_params(SPEC, rng) + rng.normal(0, 0.1, SPEC.size)
    a.acc_x[...] = 0.0  # the PyTorch step keeps no moment accumulators
    a.acc_x2[...] = 0.0
    return a


def _scalars(kind: SamplerKind, noise_scale: float) -> PassScalars:
    return PassScalars(
        lik_scale=3.0,
        prec_floor=0.1,
        step_size=1e-2 if kind != SamplerKind.SGHMC else 1e-3,
        noise_scale=noise_scale,
        beta1=0.9,
        site_step=0.05,
        seed=11,
        step=0,  # TorchSnepWorker.step_on advances step and the bias corrections
    )


def _batch(rng: np.random.Generator, c: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((c, b, SPEC.n_inputs), dtype=np.float32)
    y = rng.integers(0, SPEC.n_outputs, (c, b)).astype(np.int32)
    return x, y


def _noise_tensors(noise: np.ndarray) -> list:
    return list(layer_views(SPEC, torch.from_numpy(noise)))


@pytest.mark.parametrize("chains", [1, 3])
def test_fwd_bwd_matches_cpu_mlp_and_oracle(chains):
    rng = np.random.default_rng(chains)
    params = _state(rng, chains).x
    x, y = _batch(rng, chains, 20)
    fb = TorchFwdBwd(SPEC, params, x, y)
    loglik, _ = fb()
    grad_t = fb.flat_grad()
    grad_c = np.empty_like(params)
    loglik_c = CpuMLP(SPEC, chains, 20).loglik_and_grad(params, x, y, grad_c)
    loglik_64, grad_64 = mlp_numpy.loglik_and_grad(
        SPEC, params.astype(np.float64), x.astype(np.float64), y
    )
    np.testing.assert_allclose(loglik.numpy(), loglik_64, rtol=1e-5)
    np.testing.assert_allclose(loglik_c, loglik_64, rtol=1e-5)
    scale = np.abs(grad_64).max()
    np.testing.assert_allclose(grad_t, grad_64, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(grad_c, grad_64, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("noise", ["zero", "passed-in"])
@pytest.mark.parametrize("chains", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_one_iteration_matches_snep(kind, chains, noise):
    """One full iteration (fwd+bwd, sampler, site) with the same noise: torch == snep.

    ``zero``: snep's fused pass with ``noise_scale=0`` against torch with the noise
    fixed to zero.  ``passed-in``: both take the same standard normals.
    """
    rng = np.random.default_rng(int(kind) * 10 + chains)
    a = _state(rng, chains)
    x, y = _batch(rng, chains, 20)
    c, p = a.x.shape
    if noise == "zero":
        xi = np.zeros((c, p), np.float32)
        s = _scalars(kind, noise_scale=0.0)
    else:
        xi = rng.normal(0, 1, (c, p)).astype(np.float32)
        s = _scalars(kind, noise_scale=1.0)

    # torch: the baseline's iteration on this minibatch
    tw = TorchSnepWorker(SPEC, kind, s, x.reshape(-1, SPEC.n_inputs), y.reshape(-1), chains, 20)
    tw.load(a)
    ll_t = tw.step_on(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), _noise_tensors(xi))
    got_t = tw.numpy_state()

    # snep: CpuMLP + the compiled fused pass, with the scalars the torch step used
    s_step = tw.scalars
    a32 = a.astype(np.float32)
    grad = np.empty_like(a32.x)
    ll_c = CpuMLP(SPEC, chains, 20).loglik_and_grad(a32.x, x, y, grad)
    fired_c = get_backend("cpu", 1).fused_step(
        kind, a32, grad, s_step, noise=None if noise == "zero" else xi
    )

    # float64 oracle
    a64 = a.astype(np.float64)
    _, grad64 = mlp_numpy.loglik_and_grad(SPEC, a64.x, x.astype(np.float64), y)
    fired_64 = fused_step_reference(kind, a64, grad64, xi.astype(np.float64), s_step)

    np.testing.assert_allclose(ll_t.numpy(), ll_c, rtol=1e-5)
    assert tw.guard_fired == fired_c == fired_64 > 0
    for name in STATE_FIELDS:
        want = getattr(a64, name)
        scale = max(np.abs(want).max(), 1.0)
        for impl, got in (("torch", got_t[name]), ("snep", getattr(a32, name))):
            np.testing.assert_allclose(
                got, want, rtol=2e-4, atol=2e-6 * scale, err_msg=f"{impl}: {name}"
            )
        np.testing.assert_allclose(
            got_t[name], getattr(a32, name), rtol=2e-4, atol=2e-6 * scale, err_msg=name
        )


def test_worker_runs_and_refreshes_the_anchor():
    """Ten iterations with its own minibatches and torch.randn noise: finite, anchor = loc."""
    rng = np.random.default_rng(5)
    a = _state(rng, 1)
    a.anchor_prec[...] = a.cavity_prec + a.site_prec  # no guard: a proper tilted factor
    x, y = _batch(rng, 1, 200)
    tw = TorchSnepWorker(
        SPEC, SamplerKind.ADAM_SGLD, _scalars(SamplerKind.ADAM_SGLD, 1.0), x[0], y[0], 1, 20, 10
    )
    tw.load(a)
    x_before = tw.state["x"].clone()
    for _ in range(10):
        tw.step()
    st = tw.numpy_state()
    assert all(np.isfinite(v).all() for v in st.values())
    assert not torch.equal(tw.state["x"], x_before)
    np.testing.assert_array_equal(st["anchor_prec"], st["cavity_prec"] + st["site_prec"])
    np.testing.assert_array_equal(st["anchor_pm"], st["cavity_pm"] + st["site_pm"])


#: the strongest torch peers, each with the chains it is checked on, how it takes the noise
#: (one flat tensor, or one per parameter tensor as the eager worker) and its tolerance
_PEERS = {
    "compiled": (CompiledTorchSnepWorker, 1, torch.from_numpy, 2e-4),
    "foreach": (ForeachTorchSnepWorker, 2, _noise_tensors, 2e-5),
}


@pytest.mark.parametrize("peer", list(_PEERS))
@pytest.mark.parametrize("kind", [SamplerKind.SGLD, SamplerKind.ADAM_SGLD], ids=["SGLD", "ADAM"])
def test_peer_iteration_matches_the_eager_one(kind, peer):
    """The torch.compile and the foreach peers compute the eager baseline's iteration (so
    the oracle's); the foreach peer counts the guard's firings too."""
    cls, chains, noise_of, rtol = _PEERS[peer]
    rng = np.random.default_rng(int(kind) + chains)
    a = _state(rng, chains)
    x, y = _batch(rng, chains, 20)
    xi = rng.normal(0, 1, a.x.shape).astype(np.float32)
    s = _scalars(kind, noise_scale=1.0)
    args = (SPEC, kind, s, x.reshape(-1, SPEC.n_inputs), y.reshape(-1), chains, 20)
    eager, other = TorchSnepWorker(*args), cls(*args)
    eager.load(a)
    other.load(a)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    eager.step_on(xt, yt, _noise_tensors(xi))
    other.step_on(xt, yt, noise_of(xi))
    if peer == "foreach":
        assert other.guard_fired == eager.guard_fired > 0
    for name in STATE_FIELDS:
        want = eager.state[name].numpy()
        scale = max(np.abs(want).max(), 1.0)
        np.testing.assert_allclose(
            other.state[name].numpy(), want, rtol=rtol, atol=rtol * 0.01 * scale, err_msg=name
        )


def test_foreach_peer_refuses_the_samplers_it_does_not_implement():
    rng = np.random.default_rng(3)
    x, y = _batch(rng, 1, 20)
    s = _scalars(SamplerKind.SGHMC, noise_scale=1.0)
    worker = ForeachTorchSnepWorker(SPEC, SamplerKind.SGHMC, s, x[0], y[0], 1, 20)
    worker.load(_state(rng, 1))
    with pytest.raises(ValueError, match="implements sgld and adam_sgld, not"):
        worker.step_on(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
