"""The JAX peer computes the same maths as snep (so the benchmark compares like with
like): on a small network, one jitted iteration with the noise fixed matches the float64
oracle (``mlp_numpy`` + ``fused_step_reference``) to float32 rounding, as snep's own
iteration does.  Not a benchmark: runs with the benchmarks disabled; skipped without JAX.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from jax_reference import STATE_FIELDS, JaxSnepWorker, scalar_args, step_on
from snep.maths.oracles import fused_step_reference
from snep.model import mlp_numpy
from snep.model.spec import ParamSpec, init_params
from snep.state import ChainArrays, PassScalars, SamplerKind

SPEC = ParamSpec((12, 16, 8, 5))  # P = 388
KINDS = list(SamplerKind)


def _state(rng: np.random.Generator, c: int) -> ChainArrays:
    a = ChainArrays.random(rng, c, SPEC.size)
    for i in range(c):
        a.x[i] = init_params(SPEC, rng) + rng.normal(0, 0.1, SPEC.size)
    a.acc_x[...] = 0.0
    a.acc_x2[...] = 0.0
    return a


@pytest.mark.parametrize("chains", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_one_jitted_iteration_matches_the_float64_oracle(kind, chains):
    import jax.numpy as jnp

    rng = np.random.default_rng(int(kind) * 10 + chains)
    a = _state(rng, chains)
    x = rng.random((chains, 20, SPEC.n_inputs), dtype=np.float32)
    y = rng.integers(0, SPEC.n_outputs, (chains, 20)).astype(np.int32)
    xi = rng.normal(0, 1, a.x.shape).astype(np.float32)
    s = PassScalars(
        lik_scale=3.0, prec_floor=0.1, step_size=1e-2 if kind != SamplerKind.SGHMC else 1e-3,
        noise_scale=1.0, beta1=0.9, site_step=0.05, seed=11, step=0,
    )  # fmt: skip
    s.set_step(kind, 1)
    st = {k: jnp.asarray(getattr(a, k).astype(np.float32)) for k in STATE_FIELDS}
    got, _, fired = step_on(SPEC, kind, st, jnp.asarray(x), jnp.asarray(y), jnp.asarray(xi),
                            scalar_args(s), bool(s.update_site))  # fmt: skip
    a64 = a.astype(np.float64)
    _, grad64 = mlp_numpy.loglik_and_grad(SPEC, a64.x, x.astype(np.float64), y)
    fired_64 = fused_step_reference(kind, a64, grad64, xi.astype(np.float64), s)
    assert int(fired) == fired_64 > 0
    for name in STATE_FIELDS:
        want = getattr(a64, name)
        scale = max(np.abs(want).max(), 1.0)
        np.testing.assert_allclose(
            np.asarray(got[name]), want, rtol=2e-4, atol=2e-6 * scale, err_msg=name
        )


def test_worker_runs_and_refreshes_the_anchor():
    rng = np.random.default_rng(5)
    a = _state(rng, 1)
    a.anchor_prec[...] = a.cavity_prec + a.site_prec
    x = rng.random((200, SPEC.n_inputs), dtype=np.float32)
    y = rng.integers(0, SPEC.n_outputs, 200)
    s = PassScalars(lik_scale=3.0, step_size=1e-3, noise_scale=1.0, site_step=0.05)
    w = JaxSnepWorker(SPEC, SamplerKind.ADAM_SGLD, s, x, y, 1, 20, 10)
    w.load(a)
    for _ in range(10):
        w.step()
    w.block()
    st = {k: np.asarray(v) for k, v in w.state.items()}
    assert all(np.isfinite(v).all() for v in st.values())
    assert not np.array_equal(st["x"], a.x.astype(np.float32))
    np.testing.assert_array_equal(st["anchor_prec"], st["cavity_prec"] + st["site_prec"])
