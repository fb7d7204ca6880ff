"""Shared pieces of the benchmark suites: workloads, their construction, and the timing call.

Everything here is preallocated at construction so that the timed calls measure the
steady state (docs/method.md §3: warm up first, synchronise inside the timed call, put
backend/dtype/P/threads in ``extra_info``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from snep.algorithm.server import PosteriorServer
from snep.algorithm.shard import LocalShard
from snep.algorithm.worker import SAMPLER_KINDS, SnepWorker, pass_scalars
from snep.backends import get_backend
from snep.config import Config, ModelConfig, SamplerConfig, SNEPConfig, TrainConfig
from snep.maths.family import DiagGaussian
from snep.model.mlp_cpu import CpuMLP
from snep.model.spec import ParamSpec, init_params
from snep.state import ChainArrays, SamplerKind

__all__ = [
    "HIDDEN",
    "LAYERS",
    "N_LOCAL",
    "STEP_SIZES",
    "BatchedSnepIteration",
    "NumpyGemms",
    "WorkerBench",
    "bench_call",
    "cpu_mlp_call",
    "make_config",
    "make_shard",
    "make_worker",
    "sampler_kind",
]

#: the paper's MNIST network (docs/method.md §1.8): P = 545,810
LAYERS = (784, 500, 300, 10)
HIDDEN = LAYERS[1:-1]
#: rows of one worker's shard: MNIST's 60,000 over 8 workers
N_LOCAL = 7500
#: sampler step sizes: Adam-SGLD's h of the reference configuration; a small SGLD
#: epsilon that keeps the chain finite over thousands of benchmark rounds
STEP_SIZES = {"adam_sgld": 1e-3, "sgld": 1e-6}


def make_shard(n: int = N_LOCAL, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic MNIST-shaped shard: pixels uniform in [0, 1] (float32), labels 0..9 (int32)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, LAYERS[0]), dtype=np.float32)
    y = rng.integers(0, LAYERS[-1], n).astype(np.int32)
    return x, y


def make_config(sampler: str, batch: int, threads: int) -> Config:
    """The reference configuration (docs/method.md §1.8) for one worker with ``sampler``."""
    return Config(
        train=TrainConfig(
            workers=1,
            batch_size=batch,
            seed=0,
            average_from=10**9,  # the server keeps no running averages while timed
            backend="cpu",
            threads=threads,
        ),
        model=ModelConfig(hidden=HIDDEN),
        sampler=SamplerConfig(kind=sampler, step_size=STEP_SIZES[sampler], step_unit="absolute"),
        # one chain (BatchedSnepIteration times several); n_inner = n_sync = 10, prior
        # variance 0.5, v_init 0.01; the paper's site step on the site's mean parameters,
        # fused in the pass (the dataclass default since the issue "A posterior that is
        # real" is the pooled step on the local posterior, a host pass after the kernel)
        snep=SNEPConfig(n_chains=1, v_init=0.01, site_update="site", score_cv=False),
    )


@dataclasses.dataclass
class WorkerBench:
    """A registered SNEP worker with its in-process posterior server."""

    worker: SnepWorker
    server: PosteriorServer
    config: Config

    def step(self) -> None:
        """One worker iteration; when a sync is due, the push and the server's reply too."""
        push = self.worker.step()
        if push is not None:
            self.worker.receive(self.server.push(push))

    def sync(self) -> None:
        """One sync alone: push ``Delta``, apply it on the server, receive ``theta``."""
        self.worker.receive(self.server.push(self.worker.make_push()))

    def finite(self) -> bool:
        """True when the chain and the site are finite."""
        a = self.worker.arrays
        return bool(np.isfinite(a.x).all() and np.isfinite(a.site_pm).all())


def make_worker(
    spec: ParamSpec, shard: tuple[np.ndarray, np.ndarray], sampler: str, batch: int, threads: int
) -> WorkerBench:
    """A SnepWorker on ``shard`` registered with a local PosteriorServer (as ``simulate`` does)."""
    config = make_config(sampler, batch, threads)
    backend = get_backend("cpu", threads)
    x0 = init_params(spec, np.random.default_rng(1))
    p = spec.size
    prior = DiagGaussian(np.full(p, 1.0 / config.snep.prior_var), np.zeros(p))
    server = PosteriorServer(prior, 1, config.train.averaging_start)
    model = backend.mlp(spec, 1, min(batch, len(shard[1])))
    worker = SnepWorker(0, 1, model, shard[0], shard[1], config, backend, x0)
    server.register(0, worker.initial_site())
    worker.start(server.reply_to(0))
    return WorkerBench(worker, server, config)


def make_default_worker(
    spec: ParamSpec,
    shard: tuple[np.ndarray, np.ndarray],
    batch: int,
    threads: int,
    n_workers: int = 4,
) -> WorkerBench:
    """Worker 0 of ``n_workers``, with the dataclass defaults (SGHMC with the step per
    datum, 8 chains, the site step on the local posterior with the score control
    variate), registered with a PosteriorServer whose other workers hold the same initial
    site: the default sampler's whole iteration, site step and control variate included
    (issue 14: its per-chain cost).  Four workers, as in the MNIST runs, and a tenth of the
    default step per datum: the synthetic shard lights every pixel (MNIST leaves most of
    them at zero), so its likelihood is far more curved and the default step diverges
    within the timed rounds (as one MNIST worker's does, docs/results.md §0b); the step
    changes no cost."""
    config = Config(
        train=TrainConfig(
            workers=n_workers, batch_size=batch, seed=0, average_from=10**9, backend="cpu",
            threads=threads,
        ),
        model=ModelConfig(hidden=HIDDEN),
        sampler=SamplerConfig(step_size=0.1),
    )  # fmt: skip
    backend = get_backend("cpu", threads)
    x0 = init_params(spec, np.random.default_rng(1))
    p = spec.size
    prior = DiagGaussian(np.full(p, 1.0 / config.snep.prior_var), np.zeros(p))
    server = PosteriorServer(prior, n_workers, config.train.averaging_start)
    chains = config.snep.n_chains
    model = backend.mlp(spec, chains, min(batch, len(shard[1])))
    worker = SnepWorker(0, n_workers, model, shard[0], shard[1], config, backend, x0)
    for w in range(n_workers):
        server.register(w, worker.initial_site())
    worker.start(server.reply_to(0))
    return WorkerBench(worker, server, config)


class BatchedSnepIteration:
    """The hot path of :meth:`SnepWorker.step` for ``C`` chains in one set of kernel calls.

    ``SnepWorker`` holds one chain; this runs the same per-iteration work batched over
    chains (docs/method.md §2): one minibatch per chain, ``CpuMLP.loglik_and_grad`` on
    ``(C, B, D)``, one fused pass over ``(C, P)``, the anchor refresh every ``n_inner``
    iterations.  The state is initialised like a worker's (site ``N(x0, v_init)``,
    cavity = prior).  Used for the ``--bench-large`` chain counts.
    """

    def __init__(
        self,
        spec: ParamSpec,
        shard: tuple[np.ndarray, np.ndarray],
        sampler: str,
        n_chains: int,
        batch: int,
        threads: int,
    ) -> None:
        config = make_config(sampler, batch, threads)
        snep = config.snep
        self.spec, self.config = spec, config
        self.backend = get_backend("cpu", threads)
        self.kind = SAMPLER_KINDS[sampler]
        c, p = n_chains, spec.size
        mlp = self.backend.mlp(spec, c, batch)
        self.shard = LocalShard(*shard, c, batch, 100, mlp, self.backend, p)
        a = self.arrays = ChainArrays.zeros(c, p)
        rng = np.random.default_rng(1)
        for i in range(c):
            a.x[i] = init_params(spec, rng)
        a.site_prec[...] = 1.0 / snep.v_init
        a.site_pm[...] = a.x / snep.v_init
        a.cavity_prec[...] = 1.0 / snep.prior_var
        np.add(a.cavity_prec, a.site_prec, out=a.anchor_prec)
        np.add(a.cavity_pm, a.site_pm, out=a.anchor_pm)
        self.scalars = pass_scalars(config, 1.0, self.shard.n_local, batch, seed=12345)
        self.iteration = 0
        self.guard_fired = 0

    def step(self) -> None:
        """One iteration of every chain."""
        self.shard.gather()
        self.shard.loglik_and_grad(self.arrays.x)
        self.iteration += 1
        s = self.scalars
        s.site_step = self.config.snep.site_step(self.iteration)
        s.set_step(self.kind, self.iteration)
        self.guard_fired += self.backend.fused_step(self.kind, self.arrays, self.shard.grad, s)
        if self.iteration % self.config.snep.n_inner == 0:
            a = self.arrays
            np.add(a.cavity_prec, a.site_prec, out=a.anchor_prec)
            np.add(a.cavity_pm, a.site_pm, out=a.anchor_pm)

    def finite(self) -> bool:
        """True when the chains and sites are finite."""
        a = self.arrays
        return bool(np.isfinite(a.x).all() and np.isfinite(a.site_pm).all())


class NumpyGemms:
    """The bare GEMMs of one 784-500-300-10 forward + backward, with numpy into ``out=``.

    Three forward GEMMs, three weight-gradient GEMMs and two input-gradient GEMMs (the
    input layer needs none); no bias, activation or softmax work.  ``C == 1`` uses 2-D
    arrays, ``C > 1`` batched 3-D ones (numpy calls BLAS once per chain).
    """

    def __init__(self, layers: tuple[int, ...], n_chains: int, batch: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        lead = () if n_chains == 1 else (n_chains,)

        def arr(*shape: int) -> np.ndarray:
            return rng.standard_normal((*lead, *shape), dtype=np.float32)

        d, h1, h2, k = layers
        self.x = rng.random((*lead, batch, d), dtype=np.float32)
        self.w = [arr(d, h1), arr(h1, h2), arr(h2, k)]
        self.h = [arr(batch, h1), arr(batch, h2), arr(batch, k)]  # activations, logits
        self.dz = [arr(batch, h1), arr(batch, h2), arr(batch, k)]  # deltas
        self.gw = [np.empty_like(w) for w in self.w]
        t = (lambda a: a.T) if n_chains == 1 else (lambda a: a.transpose(0, 2, 1))
        self.x_t = t(self.x)
        self.h_t = [t(a) for a in self.h]
        self.w_t = [t(w) for w in self.w]
        self.flops = 2 * n_chains * batch * (d * h1 + h1 * h2 + h2 * k) * 3 - 2 * n_chains * (
            batch * d * h1
        )

    def __call__(self) -> None:
        mm = np.matmul
        w, h, dz, gw = self.w, self.h, self.dz, self.gw
        # forward
        mm(self.x, w[0], out=h[0])
        mm(h[0], w[1], out=h[1])
        mm(h[1], w[2], out=h[2])
        # backward: weight gradients and input gradients
        mm(self.h_t[1], dz[2], out=gw[2])
        mm(dz[2], self.w_t[2], out=dz[1])
        mm(self.h_t[0], dz[1], out=gw[1])
        mm(dz[1], self.w_t[1], out=dz[0])
        mm(self.x_t, dz[0], out=gw[0])


def cpu_mlp_call(
    spec: ParamSpec, shard: tuple[np.ndarray, np.ndarray], n_chains: int, batch: int
) -> Callable[[], Any]:
    """``CpuMLP.loglik_and_grad`` alone on one fixed minibatch per chain (warmed up)."""
    mlp = CpuMLP(spec, n_chains, batch)
    mlp.warmup()
    rng = np.random.default_rng(2)
    params = np.stack([init_params(spec, rng) for _ in range(n_chains)]).astype(np.float32)
    x, y = shard
    idx = rng.permutation(len(y))[: n_chains * batch].reshape(n_chains, batch)
    bx, by = np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])
    grad = np.empty_like(params)
    return lambda: mlp.loglik_and_grad(params, bx, by, grad)


def bench_call(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    group: str,
    warmup: int = 3,
    **extra_info: Any,
) -> Any:
    """Warm ``fn`` up, then time it with pytest-benchmark under ``group`` with ``extra_info``.

    ``fn`` must finish its work before it returns (CPU code here: it does).
    """
    for _ in range(warmup):
        fn()
    benchmark.group = group
    benchmark.extra_info.update({"dtype": "float32", "device": "cpu", "ranks": 1, **extra_info})
    return benchmark(fn)


def sampler_kind(name: str) -> SamplerKind:
    """``"adam_sgld"`` -> ``SamplerKind.ADAM_SGLD``."""
    return SAMPLER_KINDS[name]
