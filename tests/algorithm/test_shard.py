"""A worker's shard and its chains' minibatches (snep.algorithm.shard), and the Adam pass
the baselines share (snep.algorithm.adam.AdamPass), against plain float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from tests.algorithm.models import GaussianMeans

from snep.algorithm.adam import AdamPass
from snep.algorithm.shard import LocalShard, chain_stream_seed
from snep.backends import get_backend
from snep.config import Config
from snep.data.minibatch import MinibatchStream


def _shard(n_chains: int, n: int = 23, batch: int = 5, seed: int = 7) -> LocalShard:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    return LocalShard(x, np.zeros(n, np.int64), n_chains, batch, seed, GaussianMeans(2.0),
                      get_backend("numpy"), 3)  # fmt: skip


def test_each_chain_sees_every_example_once_per_epoch():
    shard = _shard(3, n=20, batch=5)
    seen = [[] for _ in range(3)]
    for _ in range(4):  # one epoch of 20 examples in batches of 5
        shard.gather()
        for c in range(3):
            seen[c].extend(map(tuple, shard.batch_x[c].round(12)))
    for c in range(3):
        assert sorted(seen[c]) == sorted(map(tuple, shard.x_data.round(12)))
    assert seen[0] != seen[1]  # independent streams


def test_chain_zero_keeps_the_single_chain_stream():
    seed = 12345
    one = MinibatchStream(23, 5, seed % 2**63)
    shard = _shard(2, seed=seed)
    idx = np.zeros(10, np.intp)
    shard.next_indices(idx)
    assert np.array_equal(idx[:5], one.next_indices())
    assert chain_stream_seed(seed, 1) != chain_stream_seed(seed, 0)


def test_gradient_is_the_models_on_the_gathered_batch():
    shard = _shard(2)
    x = np.array([[0.1, -0.2, 0.3], [1.0, 0.0, -1.0]])
    shard.gather()
    loglik = shard.loglik_and_grad(x)
    r = shard.batch_x - x[:, None, :]
    assert np.allclose(shard.grad, r.sum(axis=1) / 2.0)
    assert np.allclose(loglik, -0.25 * (r * r).sum(axis=(1, 2)))


def test_stream_state_round_trip_and_chain_count_mismatch():
    a = _shard(2)
    for _ in range(3):
        a.gather()
    b = _shard(2)
    b.load_stream_state(a.stream_state(), "worker 0")
    a.gather()
    b.gather()
    assert np.array_equal(a.batch_x, b.batch_x)
    with pytest.raises(ValueError, match=r"worker 0: the checkpoint has 2 chain stream\(s\), "
                       r"this worker has 3 chains"):  # fmt: skip
        _shard(3).load_stream_state(a.stream_state(), "worker 0")


def test_adam_pass_is_adam_on_the_log_posterior():
    """Against Adam (Kingma & Ba 2015) written out in float64: ascent on
    ``(n / (B T)) grad_lik - x / prior_var`` with bias corrections."""
    config = Config().replace(
        sampler={"step_size": 1e-2, "step_unit": "absolute", "temperature": 2.0}
    )
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(6)
    n, batch = 40, 8
    adam = AdamPass(x0, 1.0 / 0.5, config, n, batch, 11, get_backend("numpy"))
    x, m, v = x0.copy(), np.zeros(6), np.zeros(6)
    b1, b2, eps = 0.9, config.sampler.beta2, config.sampler.adam_eps
    for t in range(1, 21):
        g_lik = rng.standard_normal(6)
        fired = adam.step(g_lik[None, :].astype(adam.x.dtype))
        g = n / (batch * 2.0) * g_lik - x / 0.5
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x + 1e-2 * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        assert fired == 0
    np.testing.assert_allclose(adam.x[0], x, rtol=1e-10, atol=1e-12)
