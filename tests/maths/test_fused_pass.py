"""The compiled fused pass against the float64 oracle, with the noise passed in."""

from __future__ import annotations

import numpy as np
import pytest

from snep.backends import get_backend
from snep.maths.noise import reference_normals
from snep.maths.oracles import fused_step_reference
from snep.state import ChainArrays, PassScalars, SamplerKind

KINDS = list(SamplerKind)


def random_state(rng: np.random.Generator, c: int, p: int) -> ChainArrays:
    return ChainArrays.random(rng, c, p)


def scalars_for(kind: SamplerKind, **over) -> PassScalars:
    s = PassScalars(
        lik_scale=3.0,
        inv_beta=1.0,
        prec_floor=0.1,
        step_size=1e-2 if kind != SamplerKind.SGHMC else 1e-3,
        noise_scale=1.0,
        beta1=0.9,
        bias_corr1=1 - 0.9**5,
        bias_corr2=1 - 0.999**5,
        site_step=0.05,
        seed=11,
        step=5,
    )
    for k, v in over.items():
        setattr(s, k, v)
    return s


VARIANTS = {
    "site": {},
    "no-site": {"update_site": 0},
    "accumulate": {"accumulate": 1, "update_site": 0},
    "site-from-acc": {"accumulate": 1, "inv_n_acc": 0.25},
    "gamma+beta": {"gamma_term": 1, "inv_beta": 4.0},
    "optimiser": {"noise_scale": 0.0, "beta1": 0.0, "bias_corr1": 1.0},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_cpu_matches_oracle_with_noise_passed_in(kind, variant):
    rng = np.random.default_rng(int(kind) * 100 + len(variant))
    c, p = 2, 3001
    a32 = random_state(rng, c, p)
    a64 = a32.astype(np.float64)
    grad = rng.normal(0, 1, (c, p)).astype(np.float32)
    noise = rng.normal(0, 1, (c, p)).astype(np.float32)
    s = scalars_for(kind, **VARIANTS[variant])
    fired_ref = fused_step_reference(
        kind, a64, grad.astype(np.float64), noise.astype(np.float64), s
    )
    fired = get_backend("cpu").fused_step(kind, a32, grad, s, noise=noise)
    assert fired == fired_ref > 0
    for name, got, want in zip(
        ChainArrays.__dataclass_fields__, a32.arrays(), a64.arrays(), strict=True
    ):
        scale = np.abs(want).max() + 1e-30
        err = np.abs(got - want).max() / scale
        assert err < 2e-5, f"{kind.name}/{variant}: {name} differs by {err:.2e} (relative)"


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_in_kernel_noise_equals_passed_noise(kind):
    rng = np.random.default_rng(7)
    c, p = 3, 2050
    a = random_state(rng, c, p)
    b = a.astype(np.float32)
    grad = rng.normal(0, 1, (c, p)).astype(np.float32)
    s = scalars_for(kind)
    backend = get_backend("cpu")
    backend.fused_step(kind, a, grad, s)
    noise = backend.normals(c, p, s.seed, s.stream, s.step)
    backend.fused_step(kind, b, grad, s, noise=noise)
    for got, want in zip(a.arrays(), b.arrays(), strict=True):
        np.testing.assert_array_equal(got, want)
    # and that noise is the documented generator's
    assert np.abs(noise - reference_normals(c, p, s.seed, s.stream, s.step)).max() < 4e-6


def test_same_seed_same_numbers_any_thread_count():
    rng = np.random.default_rng(3)
    a = random_state(rng, 2, 70_001)  # >= 32 tiles: the parallel path runs
    b = a.astype(np.float32)
    grad = rng.normal(0, 1, a.x.shape).astype(np.float32)
    s = scalars_for(SamplerKind.ADAM_SGLD)
    get_backend("cpu", n_threads=1).fused_step(SamplerKind.ADAM_SGLD, a, grad, s)
    get_backend("cpu", n_threads=2).fused_step(SamplerKind.ADAM_SGLD, b, grad, s)
    for got, want in zip(a.arrays(), b.arrays(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_projection_keeps_site_proper():
    rng = np.random.default_rng(5)
    a = random_state(rng, 1, 5000)
    a.x[...] = rng.normal(0, 100, a.x.shape)  # wild samples push the site far out
    s = scalars_for(SamplerKind.SGLD, site_step=0.9)
    get_backend("cpu").fused_step(SamplerKind.SGLD, a, np.zeros_like(a.x), s)
    var = 1.0 / a.site_prec
    mean = a.site_pm / a.site_prec
    assert np.all(a.site_prec > 0)
    assert var.min() >= s.v_lo * (1 - 1e-6) and var.max() <= s.v_hi * (1 + 1e-6)
    assert mean.min() >= s.m_lo * (1 + 1e-6) and mean.max() <= s.m_hi * (1 + 1e-6)


def test_shape_mismatch_is_a_clear_error():
    a = ChainArrays.zeros(1, 10)
    with pytest.raises(ValueError, match=r"'grad' has shape \(1, 9\), expected \(1, 10\)"):
        get_backend("cpu").fused_step(
            SamplerKind.SGLD, a, np.zeros((1, 9), np.float32), PassScalars()
        )
