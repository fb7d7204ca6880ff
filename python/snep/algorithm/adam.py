"""The one-worker Adam baseline: the MAP estimate (docs/method.md §1.7)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from snep.algorithm.shard import LocalShard
from snep.algorithm.worker import worker_seed
from snep.backends import Backend
from snep.config import Config
from snep.data.dataset import Dataset
from snep.maths.noise import NOISE_STREAM_SAMPLER
from snep.posterior import Posterior
from snep.run.setup import FitResult, RunSetup
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["AdamPass", "run_adam"]


class AdamPass:
    """Adam ascent on the log posterior, one chain, through the fused pass.

    The pass's Adam-SGLD rule with the noise off and ``beta1 = 0.9`` (unless
    ``sampler.beta1`` sets it); the Gaussian factor is the prior (``inv_beta = 0``: the
    site and cavity rows enter with weight zero and the site step is off, so they hold
    ones and zeros only to keep the pass's arithmetic finite).  Shared by the one-worker
    Adam baseline (:func:`run_adam`) and EASGD's local steps
    (:class:`~snep.algorithm.baselines.EasgdWorker`), docs/method.md §1.7.

    Parameters
    ----------
    x0 : ndarray (P,)
        Starting point.
    prior_prec : float or ndarray (P,)
        The prior's precision (zero mean).
    config : Config
        The run's configuration (``sampler``: learning rate, Adam moments, temperature).
    n_local, batch_size : int
        Shard and minibatch sizes: the minibatch log-likelihood is scaled by
        ``n_local / (batch_size T)``.
    seed : int
        The pass's noise seed (unused with the noise off; kept for its counters).
    backend : Backend
        Host backend whose ``fused_step`` runs the pass.
    """

    def __init__(
        self,
        x0: np.ndarray,
        prior_prec: Any,
        config: Config,
        n_local: int,
        batch_size: int,
        seed: int,
        backend: Backend,
    ) -> None:
        sampler = config.sampler
        self.backend = backend
        self.arrays = a = ChainArrays.zeros(1, int(np.asarray(x0).size), backend.dtype)
        a.x[0] = x0
        a.anchor_prec[0] = prior_prec
        a.site_prec[...] = 1.0
        a.cavity_prec[...] = 1.0
        self.scalars = PassScalars(
            lik_scale=n_local / (batch_size * sampler.temperature),
            inv_beta=0.0,
            prec_floor=config.snep.prec_floor,
            step_size=sampler.learning_rate,
            noise_scale=0.0,
            beta1=sampler.beta1 if sampler.beta1 > 0 else 0.9,
            beta2=sampler.beta2,
            adam_eps=sampler.adam_eps,
            accumulate=0,
            update_site=0,
            seed=seed,
            stream=NOISE_STREAM_SAMPLER,
        )
        self.steps = 0

    @property
    def x(self) -> np.ndarray:
        """The position, (1, P) in the backend's dtype."""
        return self.arrays.x

    def step(self, grad: np.ndarray) -> int:
        """One Adam step with the minibatch log-likelihood gradient ``grad`` (1, P);
        returns how often the pass's guard fired."""
        self.steps += 1
        self.scalars.set_step(SamplerKind.ADAM_SGLD, self.steps)
        return self.backend.fused_step(SamplerKind.ADAM_SGLD, self.arrays, grad, self.scalars)


def run_adam(
    config: Config,
    dataset: Dataset,
    backend: Backend | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    model: Any = None,
) -> FitResult:
    """Single-worker Adam on the log posterior (the MAP baseline of docs/method.md §1.7):
    :class:`AdamPass` over the whole training set.  The returned "posterior" is the
    point estimate with a negligible variance.
    """
    setup = RunSetup.create(config, dataset, backend, model)  # iterations from epochs if 0
    config, backend, spec = setup.config, setup.backend, setup.spec
    train = config.train
    seed = worker_seed(train.seed, 0)
    batch = min(train.batch_size, dataset.n_train)
    mlp = setup.model if setup.model is not None else backend.mlp(spec, 1, batch)
    shard = LocalShard(dataset.x_train, dataset.y_train, 1, batch, seed, mlp, backend, spec.size)
    adam = AdamPass(
        setup.initial_position(), setup.prior().precision, config, shard.n_local, batch, seed,
        backend,
    )  # fmt: skip
    evaluator = setup.evaluator()
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for t in range(1, train.iterations + 1):
        shard.gather()
        loglik = shard.loglik_and_grad(adam.x)
        adam.step(shard.grad)
        if t % train.eval_every == 0 or t == train.iterations:
            record = {
                "iteration": t,
                "epochs_per_worker": t * batch / dataset.n_train,
                "wall_seconds": time.perf_counter() - t_start,
                "comm_seconds": 0.0,
                **evaluator.point(adam.x[0].astype(np.float64)),
                "minibatch_loglik": float(loglik[0]) / batch,
            }
            history.append(record)
            if callback is not None:
                callback(record)
    mean = adam.x[0].astype(np.float64)
    prec = np.full(spec.size, 1e12)
    posterior = Posterior(spec, prec, prec * mean, model=setup.model)
    return FitResult(posterior, history, {"wall_seconds": time.perf_counter() - t_start})
