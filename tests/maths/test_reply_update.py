"""The compiled reply update (cavity, anchor, chain shift) against its float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

from snep.backends import get_backend
from snep.state import ChainArrays

from .test_fused_pass import random_state


@pytest.mark.parametrize("momentum", [False, True])
@pytest.mark.parametrize("n_params", [1, 1023, 70_001])
def test_cpu_reply_update_matches_oracle(n_params, momentum):
    rng = np.random.default_rng(n_params)
    a32 = random_state(rng, 1, n_params)
    a64 = a32.astype(np.float64)
    cavity_prec = rng.uniform(1, 50, n_params).astype(np.float32)
    cavity_pm = (cavity_prec * rng.normal(0, 1, n_params)).astype(np.float32)
    cavity = (cavity_prec, cavity_pm)
    get_backend("numpy").apply_reply(a64, cavity, momentum)
    get_backend("cpu").apply_reply(a32, cavity, momentum)
    for name, got, want in zip(
        ChainArrays.__dataclass_fields__, a32.arrays(), a64.arrays(), strict=True
    ):
        err = np.abs(got - want).max() / (np.abs(want).max() + 1e-30)
        assert err < 2e-6, f"{name} differs by {err:.1e} (relative)"
    np.testing.assert_array_equal(a32.cavity_prec[0], cavity_prec)
    np.testing.assert_array_equal(a32.cavity_pm[0], cavity_pm)


def test_cpu_reply_update_rounds_a_float64_cavity_once():
    """A float64 wire's cavity enters the float32 chain as its nearest float32 value."""
    rng = np.random.default_rng(3)
    a = random_state(rng, 1, 257)
    cavity = (rng.uniform(1, 50, 257), rng.normal(0, 10, 257))
    get_backend("cpu").apply_reply(a, cavity, False)
    np.testing.assert_array_equal(a.cavity_prec[0], cavity[0].astype(np.float32))
    np.testing.assert_array_equal(a.cavity_pm[0], cavity[1].astype(np.float32))


def test_shift_keeps_the_standardised_position():
    a = ChainArrays.zeros(1, 3, np.float64)
    a.site_prec[...] = 1.0
    a.cavity_prec[...] = 3.0  # local N(0, 1/4)
    a.x[...] = 0.5  # one standard deviation above the mean
    cavity = (np.full(3, 15.0), np.full(3, 15.0 * 2.0))  # cavity N(2, 1/15)
    get_backend("numpy").apply_reply(a, cavity, False)
    local_prec = 15.0 + 1.0
    mean = 30.0 / local_prec
    np.testing.assert_allclose(a.x[0], mean + 1 / np.sqrt(local_prec))
