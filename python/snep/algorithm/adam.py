"""The one-worker Adam baseline: the MAP estimate (docs/method.md §1.7)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from snep.algorithm.worker import worker_seed
from snep.backends import Backend
from snep.config import Config
from snep.data.dataset import Dataset
from snep.data.minibatch import MinibatchStream, gather_batch
from snep.maths.noise import NOISE_STREAM_SAMPLER
from snep.posterior import Posterior
from snep.run.setup import FitResult, RunSetup
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["run_adam"]


def run_adam(
    config: Config,
    dataset: Dataset,
    backend: Backend | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    model: Any = None,
) -> FitResult:
    """Single-worker Adam on the log posterior (the MAP baseline of docs/method.md §1.7).

    Same kernels as SNEP: the fused pass with the Adam-SGLD rule, noise off,
    ``beta1 = 0.9`` (unless set), the prior as the Gaussian factor and no site.
    The returned "posterior" is the point estimate with a negligible variance.
    """
    setup = RunSetup.create(config, dataset, backend, model)  # iterations from epochs if 0
    config, backend, spec = setup.config, setup.backend, setup.spec
    train, sampler = config.train, config.sampler
    x = np.ascontiguousarray(dataset.x_train, dtype=backend.dtype)
    y_train = np.asarray(dataset.y_train)
    y = np.ascontiguousarray(y_train, np.int32 if y_train.dtype.kind in "biu" else backend.dtype)
    n_data, batch = len(y), min(train.batch_size, len(y))
    stream = MinibatchStream(n_data, batch, worker_seed(train.seed, 0) % 2**63)
    mlp = setup.model if setup.model is not None else backend.mlp(spec, 1, batch)
    a = ChainArrays.zeros(1, spec.size, backend.dtype)
    a.x[0] = setup.initial_position()
    prior = setup.prior()
    a.anchor_prec[0] = prior.precision
    a.site_prec[...] = 1.0  # unused (no site step); keeps the arithmetic finite
    a.cavity_prec[...] = 1.0
    grad = np.zeros_like(a.x)
    bx = np.zeros((1, batch, *x.shape[1:]), backend.dtype)
    by = np.zeros((1, batch), y.dtype)
    beta1 = sampler.beta1 if sampler.beta1 > 0 else 0.9
    s = PassScalars(
        lik_scale=n_data / batch,
        inv_beta=0.0,  # eta = anchor = prior
        step_size=sampler.learning_rate,
        noise_scale=0.0,
        beta1=beta1,
        beta2=sampler.beta2,
        adam_eps=sampler.adam_eps,
        update_site=0,
        seed=worker_seed(train.seed, 0),
        stream=NOISE_STREAM_SAMPLER,
    )
    evaluator = setup.evaluator()
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for t in range(1, train.iterations + 1):
        gather_batch(x, y, stream.next_indices(), bx[0], by[0])
        loglik = mlp.loglik_and_grad(a.x, bx, by, grad)
        s.set_step(SamplerKind.ADAM_SGLD, t)
        backend.fused_step(SamplerKind.ADAM_SGLD, a, grad, s)
        if t % train.eval_every == 0 or t == train.iterations:
            record = {
                "iteration": t,
                "epochs_per_worker": t * batch / dataset.n_train,
                "wall_seconds": time.perf_counter() - t_start,
                "comm_seconds": 0.0,
                **evaluator.point(a.x[0].astype(np.float64)),
                "minibatch_loglik": float(loglik[0]) / batch,
            }
            history.append(record)
            if callback is not None:
                callback(record)
    mean = a.x[0].astype(np.float64)
    prec = np.full(spec.size, 1e12)
    posterior = Posterior(spec, prec, prec * mean, model=setup.model)
    return FitResult(posterior, history, {"wall_seconds": time.perf_counter() - t_start})
