"""A SNEP worker (Hasenclever et al. 2017, Algorithm "SNEP" with the posterior
server; docs/method.md §1.3): pure state and message handling, no I/O.

The worker holds its shard, its site ``lambda_i`` (kept proper), the anchor
``theta'_i``, the last site it pushed ``lambda_i^sent``, its cavity view
``c_i = theta_server - lambda_i^sent`` and a persistent SG-MCMC chain.  Every
iteration it takes one sampler step on the tilted distribution

    p_i(x) ∝ exp(<theta'_i - lambda_i / beta, s(x)>) exp(l_i(x) / beta)

and one natural-gradient step on the site, fused in one pass over the
parameters (``kernels/snep_fused.cuh``).  Every ``n_inner`` iterations the
anchor is refreshed to the local posterior ``theta_loc = c_i + lambda_i``;
every ``n_sync`` iterations (at most one request in flight) it pushes
``Delta = lambda_i - lambda_i^sent`` rounded to the wire's dtype (and counts the
rounded delta as sent, so the rounding error goes with the next push), and when the
server's reply, its new cavity, arrives it sets the cavity and shifts the chain so its
standardised position is kept.

``method="ep"`` is the EP-with-MCMC-moments / SMS variant (Xu et al. 2014):
the tilted moments are estimated from the samples of a window of ``ep_window``
iterations and the site is set by a damped EP update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from snep.algorithm.device_iteration import DeviceIteration
from snep.algorithm.exchange_kernels import make_delta
from snep.algorithm.messages import Push, Reply, wire_dtype
from snep.algorithm.pooled_host import damp_site_to_guard, score_site_step
from snep.algorithm.score import accumulate_score, score_moments
from snep.algorithm.shard import LocalShard
from snep.backends import Backend, MLPKernels
from snep.backends.base import (
    array_module,
    is_device,
    require_graph_capture,
    to_device,
    to_host,
)
from snep.config import METHODS, Config
from snep.diagnostics import ChainTrace
from snep.errors import ConfigError
from snep.maths.family import DiagGaussian
from snep.maths.noise import NOISE_STREAM_SAMPLER
from snep.maths.oracles import (
    GUARD_SLACK,
    chain_variance,
    guard_cap,
    local_step_reference,
    site_step_reference,
)
from snep.state import ChainArrays, PassScalars, SamplerKind

__all__ = ["SnepWorker", "chains_per_worker", "pass_scalars", "worker_seed"]

SAMPLER_KINDS = {
    "sgld": SamplerKind.SGLD,
    "psgld": SamplerKind.PSGLD,
    "sghmc": SamplerKind.SGHMC,
    "adam_sgld": SamplerKind.ADAM_SGLD,
}


def worker_seed(seed: int, worker: int) -> int:
    """A 64-bit seed for worker ``worker`` of a run seeded with ``seed``."""
    words = np.random.SeedSequence([seed, worker, 0x534E4550]).generate_state(2, np.uint32)
    return int(words[0]) | (int(words[1]) << 32)


def chains_per_worker(config: Config) -> int:
    """Chains a worker runs: ``snep.n_chains`` for SNEP and EP, one for the point-estimate
    baselines (the leading axis of every chain array, and of the model's inputs)."""
    return config.snep.n_chains if METHODS[config.train.method].posterior else 1


#: share of the prior's precision that the n improper sites may take from q together
IMPROPER_SHARE = 0.9


def site_precision_floor(config: Config, n_workers: int, beta: float) -> float:
    """The lower bound of a site's precision in the step on the local posterior.

    ``1 / v_hi`` (a proper site), unless ``snep.improper_sites`` and ``beta = 1``: then
    ``-0.9 / (prior_var n)``, so that the n sites together remove at most 90% of the
    prior's precision and q and every cavity stay proper, whatever the asynchrony (a
    bound relative to the worker's cavity would not be: stale cavities let the sites
    overshoot together).  A site that should be flat then fluctuates around zero
    instead of being held above ``1 / v_hi``, which biases it sharp
    (:func:`~snep.maths.oracles.local_step_reference`).  Off by default: on an MLP
    (MNIST, 4 workers) the flattened sites let the chains diverge, with this bound and
    with one keeping each q_loc at least 90% as precise as the prior; p-SNEP keeps
    proper sites (with improper ones its 4- and 8-worker runs on the wine regression
    diverged).
    """
    snep = config.snep
    if snep.improper_sites and beta == 1.0:
        return -IMPROPER_SHARE / (snep.prior_var * n_workers)
    return 1.0 / snep.v_hi


#: statistics traced per chain for the cross-chain diagnostics: the minibatch
#: log-likelihood and this many fixed random coordinates of the chain
N_TRACED_COORDS = 3
#: stored draws of the diagnostics trace per evaluation interval (thinned beyond)
TRACE_CAPACITY = 512


#: rate of the running estimate of the gradient noise's variance (score control variate)
NOISE_VAR_RATE = 0.05
#: samples each half of the chains must give per site step for the score control
#: variate: the gradient noise is the residual of ``g``'s regression on ``x`` (an
#: intercept and a slope), so two samples fit exactly and leave a noise estimate of zero.
#: Measured (MNIST 784-100-10, 4 workers, one sample per step): with halves of 2 chains
#: the coefficients ``1 / curvature`` went unchecked by the noise and the means jumped
#: by 10^3-10^4 in the first site steps (4 and 5 chains: 90% error by iteration 100);
#: halves of 3 learned (6 chains: 6.9% BMA error at iteration 300)
MIN_CV_HALF_SAMPLES = 3


def sampler_step(config: Config, n_local: int, n_workers: int) -> float:
    """The sampler's step size: ``sampler.step_size``, for SGLD and SGHMC with
    ``sampler.step_unit = "data"`` times ``T / (n_workers * n_local)``: the tilted
    distribution's curvature grows like the data size over the temperature."""
    sampler = config.sampler
    if sampler.step_unit == "data" and sampler.kind in ("sgld", "sghmc"):
        return sampler.step_size * sampler.temperature / (n_workers * n_local)
    return sampler.step_size


def pass_scalars(
    config: Config, beta: float, n_local: int, batch_size: int, seed: int, n_workers: int = 1
) -> PassScalars:
    """The fixed scalars of a worker's fused pass from the run's configuration.

    ``beta`` is the worker's (power-)EP beta, ``n_local`` its shard size, ``seed`` its
    noise seed and ``n_workers`` the number of workers (for a step given per datum,
    :func:`sampler_step`); the minibatch log-likelihood is scaled by
    ``n_local / (beta B T)`` (the tilted distribution of Hasenclever et al. 2017 at
    temperature T).  The per-step fields (step counter, bias corrections, site step,
    accumulate flags) are set by the worker each iteration.
    """
    snep, sampler = config.snep, config.sampler
    return PassScalars(
        lik_scale=n_local / (beta * batch_size * sampler.temperature),
        inv_beta=1.0 / beta,
        prec_floor=snep.prec_floor,
        step_size=sampler_step(config, n_local, n_workers),
        noise_scale=1.0,
        rms_decay=sampler.rms_decay,
        rms_eps=sampler.rms_eps,
        friction=sampler.friction,
        beta1=sampler.beta1,
        beta2=sampler.beta2,
        adam_eps=sampler.adam_eps,
        kappa=sampler.kappa,
        gamma_term=int(sampler.gamma_term),
        m_lo=snep.m_lo,
        m_hi=snep.m_hi,
        v_lo=snep.v_lo,
        v_hi=snep.v_hi,
        seed=seed,
        stream=NOISE_STREAM_SAMPLER,
    )


class SnepWorker:
    """One SNEP worker with ``snep.n_chains`` chains, batched.

    The chains share the worker's site, anchor and cavity (stored once per chain row,
    identical rows, so that the fused pass reads them per chain) and draw independent
    minibatches and noise.  The pass accumulates each chain's moments and the site step
    uses the moments pooled over chains and samples (:meth:`_pooled_site_step`); only
    the paper's step on the site with one chain stays fused in the pass.  Chains start
    dispersed: drawn from the local posterior ``cavity + site`` at registration.

    Parameters
    ----------
    worker : int
        Worker id in ``[0, n_workers)``.
    n_workers : int
        Number of workers (sets p-SNEP's beta and the initial site variance).
    model : MLPKernels
        Log-likelihood and gradient kernels for one chain and minibatches of
        ``min(batch_size, N_i)`` (the MLP, or any model with the same interface).
    x, y : ndarray
        This worker's shard: inputs (N_i, D) and labels (N_i,).
    config : Config
        Run configuration.
    backend : Backend
        Compute backend (arrays are in its dtype).
    x0 : ndarray (P,)
        Shared initial position (Glorot/He initialisation).
    """

    def __init__(
        self,
        worker: int,
        n_workers: int,
        model: MLPKernels,
        x: np.ndarray,
        y: np.ndarray,
        config: Config,
        backend: Backend,
        x0: np.ndarray,
    ) -> None:
        train, snep, sampler = config.train, config.snep, config.sampler
        self.worker = worker
        self.n_workers = n_workers
        self.config = config
        self.backend = backend
        self.method = train.method
        info = METHODS[train.method]
        #: SNEP's stochastic natural-gradient site step (else EP/SMS's moment matching,
        #: or a baseline without sites)
        self._snep_step = info.posterior and not info.moment_matching
        self._moment_matching = info.moment_matching
        dtype = backend.dtype
        # the chain arrays live where the backend computes (numpy, or CuPy for cuda); the
        # shard, the minibatch and the float64 sites of the protocol stay on the host
        self.xp = xp = array_module(backend)
        self._defer_fired = is_device(backend)  # the guard count is kept on the device
        self.beta = snep.effective_beta(n_workers)
        self.kind = SAMPLER_KINDS[sampler.kind]
        self.seed = worker_seed(train.seed, worker)
        self.n_chains = C = chains_per_worker(config)
        self.n_params = P = int(np.asarray(x0).size)
        #: the shard, each chain's minibatches and the model's gradient
        self.shard = LocalShard(x, y, C, train.batch_size, self.seed, model, backend, P)
        n_local, self.batch_size = self.shard.n_local, self.shard.batch_size
        self.arrays = ChainArrays.zeros(C, P, dtype, xp)
        self._init_score_cv(P)
        self._init_chains(x0)
        self._init_trace(P)
        self._init_messages()
        self.scalars = pass_scalars(
            config, self.beta, n_local, self.batch_size, self.seed, n_workers
        )
        self._init_counters()
        self._graphed = bool(train.cuda_graph)
        if self._graphed:
            require_graph_capture(backend)
        #: the iteration's launches on a device backend (None on the host)
        self._device = DeviceIteration(self) if self.shard.on_device else None

    def _init_score_cv(self, P: int) -> None:
        snep, C, xp, dtype = self.config.snep, self.n_chains, self.xp, self.backend.dtype
        # the score control variate of the pooled site step (snep.score_cv): per chain,
        # sums of the log tilted density's gradient g, of x g and of g^2 at the samples
        self._score_cv = (
            snep.score_cv and snep.site_update == "local"
            and (C // 2) * self._samples_per_iteration() >= MIN_CV_HALF_SAMPLES
            and METHODS[self.method].posterior
        )  # fmt: skip
        self._acc_g = xp.zeros((C, P), dtype) if self._score_cv else None
        self._acc_xg = xp.zeros((C, P), dtype) if self._score_cv else None
        self._acc_g2 = xp.zeros((C, P), dtype) if self._score_cv else None
        # per half of the chains, running estimates (from the earlier site steps) of the
        # gradient noise's variance and of the curvature: the control variates'
        # coefficients
        self._score_stats = None
        if self._score_cv:  # rows: gradient noise variance (inf: none yet), var x, cov(x, g)
            stats = np.zeros((2, 3, P))
            stats[:, 0] = np.inf
            self._score_stats = to_device(self.backend, stats, np.float64)
        #: SNEP's pooled site step with the control variate on the host runs in one pass
        #: (:meth:`_score_site_step`) into this new site (precision, precision-mean)
        one_pass = self._score_cv and self._pooled and xp is np
        self._new_site = (np.empty(P, dtype), np.empty(P, dtype)) if one_pass else None

    def _init_chains(self, x0: np.ndarray) -> None:
        """Every chain at ``x0``; the initial site N(x0, n * v_init) (docs/method.md §1.4)."""
        backend, dtype = self.backend, self.backend.dtype
        self.arrays.x[...] = to_device(backend, x0, dtype)
        v = self.n_workers * self.config.snep.v_init
        self.arrays.site_prec[...] = 1.0 / v
        self.arrays.site_pm[...] = to_device(backend, np.asarray(x0) / v, dtype)

    def _init_trace(self, P: int) -> None:
        C, xp, backend = self.n_chains, self.xp, self.backend
        # cross-chain diagnostics: per chain, the minibatch log-likelihood and a few
        # fixed coordinates, traced over each evaluation interval (thinned to a bound)
        rng = np.random.default_rng([self.seed % (2**63), 0x444941])
        self._traced = to_device(
            backend, np.sort(rng.choice(P, min(N_TRACED_COORDS, P), replace=False)), np.int64
        )
        n_stats = 1 + int(self._traced.size)
        self._trace = ChainTrace(
            C, n_stats, TRACE_CAPACITY, xp=xp, to_host=lambda a: to_host(backend, a)
        )
        self._trace_row = xp.zeros((C, n_stats), np.float64)
        self._chain_loglik = xp.zeros(C, np.float64)
        self.last_diagnostics = {"rhat_max": float("nan"), "ess_min": float("nan")}

    def _init_messages(self) -> None:
        # float64 views of the site: the last one pushed, the one before (restored
        # when the server rejects a push) and a scratch set; rotated, never reallocated
        self.sent = self._site64()
        self._sent_before_push = self._site64()
        self._scratch = self._site64()
        self._delta = self._site64()  # a push's Δ in float64
        # the push's arrays in the wire's dtype (Δ itself on a float64 wire): valid
        # until the next push
        self._wire = wire_dtype(self.config.train.wire)
        self._delta_wire = self._wire_site(self._delta)
        # array module of those float64 sites, and so of pushes and replies: numpy (host
        # messages), or the backend's with CUDA-aware MPI (enable_device_messages)
        self._mx = np

    def _wire_site(self, delta: DiagGaussian) -> DiagGaussian:
        if self._wire == np.float64:
            return delta
        return DiagGaussian(
            delta.precision.astype(self._wire), delta.precision_mean.astype(self._wire)
        )

    def _init_counters(self) -> None:
        self.iteration = 0  # completed iterations
        self.sampler_steps = 0
        self.in_flight = False
        self.last_push = 0
        self.version = -1
        self.guard_fired = 0
        self.ep_rejected = 0
        self.pushes = 0
        self.replies = 0
        self._last_loglik: object = float("nan")  # per example; device scalar until read
        self._window = 0  # samples accumulated (EP variant)

    def bind_push_arrays(self, precision: Any, precision_mean: Any) -> None:
        """Compute every later push's Δ (in the wire's dtype) into these arrays: a
        transport's send buffer, so that sending copies nothing.  They must live where
        the protocol's arrays do (the host, or the device with device messages)."""
        wire = DiagGaussian(precision, precision_mean)
        if self._delta_wire is self._delta:  # a float64 wire: Δ is computed there
            self._delta = wire
        self._delta_wire = wire

    @property
    def device_messages(self) -> bool:
        """Whether pushes and replies are device arrays (:meth:`enable_device_messages`)."""
        return self._mx is not np

    def enable_device_messages(self) -> None:
        """Keep the protocol's float64 sites (the last pushed, the one before, the push's
        Δ) in device memory, so that a push is computed on the device and handed to a
        CUDA-aware MPI as a device buffer, and a reply is received into one
        (``train.cuda_aware_mpi``).  Call before the first message (and before
        :meth:`load_state_dict` on a resume)."""
        if self._device is None:
            raise ConfigError(
                f"device messages need a device backend; worker {self.worker} runs on "
                f"{getattr(self.backend, 'name', type(self.backend).__name__)!r}"
            )
        if self.device_messages:
            return
        backend, f64 = self.backend, np.float64

        def on_device(g: DiagGaussian) -> DiagGaussian:
            return DiagGaussian(
                to_device(backend, g.precision, f64), to_device(backend, g.precision_mean, f64)
            )

        self.sent, self._sent_before_push = on_device(self.sent), on_device(self._sent_before_push)
        self._scratch, self._delta = on_device(self._scratch), on_device(self._delta)
        self._delta_wire = self._wire_site(self._delta)
        self._mx = self.xp

    def _protocol_host(self, a: object) -> np.ndarray:
        """A host copy of a protocol array (``a`` itself for host messages)."""
        return a if self._mx is np else to_host(self.backend, a)

    def _protocol_set(self, dst: object, src: np.ndarray) -> None:
        """``dst[...] = src`` for a protocol array from a host array."""
        if self._mx is np:
            dst[...] = src
        else:
            dst[...] = to_device(self.backend, src, np.float64)

    # ------------------------------------------------------------------ state
    def _host64(self, a: object) -> np.ndarray:
        return to_host(self.backend, a).astype(np.float64)

    def _site64(self) -> DiagGaussian:
        a = self.arrays
        return DiagGaussian(self._host64(a.site_prec[0]), self._host64(a.site_pm[0]))

    def _collect_fired(self) -> None:
        """Add the guard firings a device backend counted since the last read (a sync)."""
        if self._defer_fired:
            self.guard_fired += int(self.backend.take_fired())

    @property
    def last_loglik(self) -> float:
        """Mean log-likelihood per example of the last minibatch (reading it syncs a GPU)."""
        value = self._last_loglik
        return value if isinstance(value, float) else float(to_host(self.backend, value))

    def initial_site(self) -> DiagGaussian:
        """The site to register with the server (float64 copies)."""
        return self._site64()

    def site(self) -> DiagGaussian:
        """The current site ``lambda_i`` (float64 copies)."""
        return self._site64()

    def local_posterior(self) -> DiagGaussian:
        """``theta_loc = c_i + lambda_i`` (float64)."""
        a = self.arrays
        return DiagGaussian(
            self._host64(a.cavity_prec[0]) + self._host64(a.site_prec[0]),
            self._host64(a.cavity_pm[0]) + self._host64(a.site_pm[0]),
        )

    def start(self, reply: Reply) -> None:
        """Registration reply: set the cavity and the anchor to ``theta_loc``;
        with several chains, draw each chain from the local posterior ``theta_loc`` (chains
        start dispersed, so that the cross-chain diagnostics can see poor mixing)."""
        self._set_cavity(reply)
        self._refresh_anchor()
        self.version = reply.version
        if self.n_chains > 1:
            loc = self.local_posterior()
            rng = np.random.default_rng([self.seed % (2**63), 0x5354415254])
            z = rng.standard_normal((self.n_chains, loc.precision.size))
            x = loc.precision_mean / loc.precision + z / np.sqrt(loc.precision)
            self.arrays.x[...] = to_device(self.backend, x, self.arrays.x.dtype)

    def _set_cavity(self, reply: Reply) -> None:
        """The cavity from a reply (computed by the server in float64, in the wire's dtype)."""
        a = self.arrays
        if self._mx is not np:  # device messages: already on the device
            a.cavity_prec[...] = reply.precision
            a.cavity_pm[...] = reply.precision_mean
        elif self.xp is np:
            np.copyto(a.cavity_prec, reply.precision, casting="same_kind")
            np.copyto(a.cavity_pm, reply.precision_mean, casting="same_kind")
        else:  # rounded to the chain's dtype on the host, then one copy to the device
            a.cavity_prec[...] = to_device(self.backend, reply.precision, a.cavity_prec.dtype)
            a.cavity_pm[...] = to_device(self.backend, reply.precision_mean, a.cavity_pm.dtype)

    def _refresh_anchor(self) -> None:
        a, xp = self.arrays, self.xp
        xp.add(a.cavity_prec, a.site_prec, out=a.anchor_prec)
        xp.add(a.cavity_pm, a.site_pm, out=a.anchor_pm)

    # ------------------------------------------------------------- iteration
    def _samples_per_iteration(self) -> int:
        return self.config.snep.n_samples if self._snep_step else 1

    @property
    def _pooled(self) -> bool:
        """Whether the site step runs after the pass, on the moments pooled over chains and
        samples (several chains, or the step on the local posterior); else the pass fuses
        the step on the site's mean parameters."""
        local = self.config.snep.site_update == "local"
        return self._snep_step and (self.n_chains > 1 or local)

    def _set_sample_scalars(self, k: int, k_samples: int) -> None:
        """The pass scalars of sample ``k`` of ``k_samples`` of this iteration (after the
        sampler step counter has advanced)."""
        s = self.scalars
        s.set_step(self.kind, self.sampler_steps)
        if self._snep_step and not self._pooled:  # the pass takes the site step
            last = k == k_samples - 1
            s.accumulate = int(k_samples > 1)
            s.update_site = int(last)
            s.inv_n_acc = 1.0 / k_samples if (k_samples > 1 and last) else 0.0
        else:  # the pooled SNEP step or EP/SMS's window: accumulate, the step comes after
            # (with the score control variate the worker accumulates, before the pass)
            s.accumulate, s.update_site, s.inv_n_acc = int(not self._score_cv), 0, 0.0

    def step(self) -> Push | None:
        """One SNEP iteration; returns a :class:`Push` when a sync is due."""
        snep = self.config.snep
        self.scalars.site_step = snep.site_step(self.iteration)
        k_samples = self._samples_per_iteration()
        # SNEP refreshes its anchor every n_inner iterations; EP/SMS updates its site from
        # a window of ep_window iterations (and refreshes the anchor then)
        period = snep.n_inner if self._snep_step else snep.ep_window
        refresh = (self.iteration + 1) % period == 0
        refresh_on_device = refresh and self._snep_step and self._device is not None
        if self._device is not None:
            self._device.run(k_samples, refresh_on_device)
        else:
            self._host_samples(k_samples)
        self._trace_append()
        self.iteration += 1
        if self._moment_matching:
            self._window += 1
        if refresh:
            if self._moment_matching:
                self._ep_update()
            if not refresh_on_device:
                self._refresh_anchor()
        if not self.in_flight and self.iteration - self.last_push >= snep.n_sync:
            return self.make_push()
        return None

    def _host_samples(self, k_samples: int) -> None:
        """This iteration's samples on a host backend (per sample: minibatch, fwd+bwd, the
        fused pass), then the pooled site step when it follows the pass."""
        a, shard, s = self.arrays, self.shard, self.scalars
        for k in range(k_samples):
            shard.gather()
            loglik = shard.loglik_and_grad(a.x)
            self._chain_loglik[...] = np.asarray(loglik) / self.batch_size
            self._last_loglik = float(self._chain_loglik.mean())
            self.sampler_steps += 1
            self._set_sample_scalars(k, k_samples)
            one_pass = self._new_site is not None and k == k_samples - 1
            if one_pass:  # the whole pooled site step, before the pass moves the chains
                self._score_site_step(k_samples)
            elif self._score_cv:
                self._accumulate_score()
            self.guard_fired += self.backend.fused_step(self.kind, a, shard.grad, s)
        if self._new_site is not None:
            a.site_prec[...] = self._new_site[0]
            a.site_pm[...] = self._new_site[1]
        elif self._pooled:
            self._pooled_site_step(k_samples)

    def _score_site_step(self, k_samples: int) -> None:
        """The pooled site step with the score control variate, from this (last) sample
        and the accumulated ones, in one host pass before the fused pass moves the chains
        (:func:`snep.algorithm.pooled_host.score_site_step`: bitwise what
        :meth:`_accumulate_score` and :meth:`_pooled_site_step` compute) into
        ``self._new_site``."""
        acc = (self._acc_g, self._acc_xg, self._acc_g2) if k_samples > 1 else None
        score_site_step(
            self.arrays, self.shard.grad, acc, self._score_stats, self.n_chains // 2,
            k_samples, NOISE_VAR_RATE, self.scalars,
            site_precision_floor(self.config, self.n_workers, self.beta), *self._new_site,
            n_threads=getattr(self.backend, "n_threads", 1),
        )  # fmt: skip

    def _accumulate_score(self) -> None:
        """Accumulate this iteration's samples (before the pass moves them) for the score
        control variate (:func:`snep.algorithm.score.accumulate_score`)."""
        accumulate_score(
            self.arrays, self.shard.grad, self._acc_g, self._acc_xg, self._acc_g2, self.scalars,
            self.xp,
        )  # fmt: skip

    def _score_moments(self, n_per_chain: int) -> tuple[Any, Any]:
        """The tilted mean and variance from the accumulated samples with the score as
        a control variate, cross-fitted over two halves of the chains
        (:func:`snep.algorithm.score.score_moments`): coefficients from the same chains'
        recent spread correlate with the samples they correct (measured on the wine
        regression with 4 workers: variances x1.08-1.14 of the EP fixed point, against
        x0.98-1.02 cross-fitted)."""
        return score_moments(
            self.arrays, self._acc_g, self._acc_xg, self._acc_g2, self._score_stats,
            self.n_chains // 2, n_per_chain, NOISE_VAR_RATE, self.xp,
        )  # fmt: skip

    def _pooled_site_step(self, k_samples: int) -> None:
        """The SNEP inner step from the moments of this iteration's samples, pooled over
        the chains (the pass accumulated them): one site for all chains, written to every
        chain's row (Hasenclever et al. 2017, §SNEP; docs/method.md §1.5)."""
        self._site_step_from_acc(k_samples, self.scalars)

    def _rows64(self) -> tuple[Any, Any, Any, Any]:
        """Float64 copies of the site and the cavity (row 0; the rows are identical)."""
        a, f64 = self.arrays, np.float64
        return (
            a.site_prec[0].astype(f64), a.site_pm[0].astype(f64),
            a.cavity_prec[0].astype(f64), a.cavity_pm[0].astype(f64),
        )  # fmt: skip

    def _site_step_from_acc(self, n_per_chain: int, scalars: PassScalars) -> None:
        """The site step from the accumulated samples (``n_per_chain`` per chain), then
        fresh accumulators: on the local posterior's moments (``snep.site_update =
        "local"``, :func:`~snep.maths.oracles.local_step_reference`; several chains
        give their unbiased pooled variance, :func:`~snep.maths.oracles.chain_variance`)
        or on the site's mean parameters (:func:`~snep.maths.oracles.site_step_reference`);
        ``scalars.site_step`` is the step (the SNEP schedule, or EP's damping)."""
        a, xp, f64 = self.arrays, self.xp, np.float64
        sp, spm, cp, cpm = self._rows64()
        local = self.config.snep.site_update == "local"
        if self._score_cv:
            sx, var_hat = self._score_moments(n_per_chain)
            sx2 = None
        elif local and self.n_chains > 1:
            sx, var_hat = chain_variance(a.acc_x, a.acc_x2, n_per_chain, xp)
            sx2 = None
        else:
            inv_n = 1.0 / (self.n_chains * n_per_chain)
            sx = a.acc_x.sum(axis=0, dtype=f64) * inv_n
            sx2 = a.acc_x2.sum(axis=0, dtype=f64) * inv_n
            var_hat = None
        if local:
            prec, pm = local_step_reference(
                sp, spm, cp, cpm, sx, sx2, scalars,
                site_precision_floor(self.config, self.n_workers, self.beta),
                n_chains=self.n_chains, anchor_prec=a.anchor_prec[0].astype(f64), xp=xp,
                var_hat=var_hat,
            )  # fmt: skip
        else:
            prec, pm = site_step_reference(sp, spm, cp, cpm, sx, sx2, scalars, xp)
        a.site_prec[...] = prec
        a.site_pm[...] = pm
        a.acc_x[...] = 0.0
        a.acc_x2[...] = 0.0

    def _trace_append(self) -> None:
        """Trace this iteration's per-chain statistics (minibatch log-likelihood, a few
        fixed coordinates) for :meth:`diagnostics` (:class:`~snep.diagnostics.ChainTrace`
        thins them to a bound; on a device nothing is read back here)."""
        row = self._trace_row
        row[:, 0] = self._chain_loglik
        row[:, 1:] = self.arrays.x[:, self._traced]
        self._trace.append(row)

    def diagnostics(self) -> dict[str, float]:
        """Cross-chain split R-hat (max) and bulk ESS (min) of the traced statistics since
        the last call (Vehtari et al. 2021), then a fresh interval; NaN with one chain or
        fewer than 4 traced iterations."""
        found = {"rhat_max": float("nan"), "ess_min": float("nan")}
        if self.n_chains > 1:
            summary = self._trace.summary()
            found = {k: summary[k] for k in found}
        self._trace.reset()
        self.last_diagnostics = found
        return found

    def _ep_update(self) -> None:
        """Damped EP site update from the window's sample moments of every chain (Xu et
        al. 2014): damped in moment space with ``site_update = "local"`` (the step of
        :func:`~snep.maths.oracles.local_step_reference` with ``eps = damping``),
        else in natural parameters."""
        snep = self.config.snep
        a, xp = self.arrays, self.xp  # numpy or CuPy
        if snep.site_update == "local":
            self._ep_update_moments(max(self._window, 1))
            return
        # the window's samples of every chain (rows of acc); the site rows are identical
        n = max(self._window, 1) * self.n_chains
        mean = a.acc_x.sum(axis=0) / n
        var = xp.maximum(a.acc_x2.sum(axis=0) / n - mean * mean, snep.v_lo / self.n_workers)
        tilted_prec = 1.0 / var
        eta_prec = a.anchor_prec[0] - a.site_prec[0] / self.beta
        eta_pm = a.anchor_pm[0] - a.site_pm[0] / self.beta
        # the same guard as the fused pass (GUARD_SLACK): precision raised, mean kept
        lam_min = snep.prec_floor - GUARD_SLACK * a.site_prec[0] / self.beta
        bad = eta_prec < lam_min
        self.guard_fired += int(bad.sum())
        eta_prec = xp.where(bad, lam_min, eta_prec)
        new_prec = self.beta * (tilted_prec - eta_prec)
        new_pm = self.beta * (tilted_prec * mean - eta_pm)
        alpha = snep.damping
        prec = (1 - alpha) * a.site_prec[0] + alpha * new_prec
        pm = (1 - alpha) * a.site_pm[0] + alpha * new_pm
        ok = prec > 1.0 / snep.v_hi
        self.ep_rejected += int((~ok).sum())
        m = xp.clip(pm / xp.where(ok, prec, 1.0), snep.m_lo, snep.m_hi)
        v = xp.clip(1.0 / xp.where(ok, prec, 1.0), snep.v_lo, snep.v_hi)
        a.site_prec[...] = xp.where(ok, 1.0 / v, a.site_prec[0])
        a.site_pm[...] = xp.where(ok, m / v, a.site_pm[0])
        a.acc_x[...] = 0.0
        a.acc_x2[...] = 0.0
        self._window = 0

    def _ep_update_moments(self, window: int) -> None:
        """EP/SMS damped in moment space: q_loc's moments move by ``damping`` towards the
        window's pooled tilted moments, the site is q_loc minus the cavity.  Damping in
        natural parameters inverts a noisy variance (``E[1 / v] > 1 / E[v]``), which
        sharpened the sites: measured on the wine regression, variances x0.75-0.83 of
        the gold with one worker and x0.24-0.38 of the EP fixed point with four."""
        damping = self.config.snep.damping
        self._site_step_from_acc(window, dataclasses.replace(self.scalars, site_step=damping))
        self._window = 0

    # ------------------------------------------------------------------ sync
    def make_push(self) -> Push:
        """Push ``Delta = lambda_i - lambda_i^sent`` now (the caller checks none is in flight).

        ``Delta`` is computed in float64 and rounded to the wire's dtype; what counts as
        sent is ``lambda_i^sent + Delta_rounded``, the site the server will hold, so the
        rounding error stays in the next ``Delta``.  The push's arrays are the worker's
        buffers: valid until its next push.
        """
        a, site, delta, wire, mx = (
            self.arrays, self._scratch, self._delta, self._delta_wire, self._mx
        )  # fmt: skip
        self._collect_fired()
        if mx is np:  # one fused pass per array (exchange_kernels.make_delta)
            for row, sent, dst, new_sent in (
                (a.site_prec[0], self.sent.precision, wire.precision, site.precision),
                (a.site_pm[0], self.sent.precision_mean, wire.precision_mean, site.precision_mean),
            ):
                make_delta(np.ascontiguousarray(to_host(self.backend, row)), sent, dst, new_sent)
        else:  # device messages: the same arithmetic with the backend's array module
            site.precision[...] = a.site_prec[0]
            site.precision_mean[...] = a.site_pm[0]
            mx.subtract(site.precision, self.sent.precision, out=delta.precision)
            mx.subtract(site.precision_mean, self.sent.precision_mean, out=delta.precision_mean)
            if wire is not delta:  # the site the server will hold: sent + the rounded delta
                wire.precision[...] = delta.precision
                wire.precision_mean[...] = delta.precision_mean
                mx.add(self.sent.precision, wire.precision, out=site.precision)
                mx.add(self.sent.precision_mean, wire.precision_mean, out=site.precision_mean)
        push = Push(self.worker, self.iteration, wire.precision, wire.precision_mean, self.version)
        # rotate: previous <- sent, sent <- this site, scratch <- the free set
        self._sent_before_push, self.sent, self._scratch = self.sent, site, self._sent_before_push
        self.in_flight = True
        self.last_push = self.iteration
        self.pushes += 1
        return push

    def receive(self, reply: Reply) -> None:
        """The server's reply: new cavity, chain shifted to keep its standardised position."""
        self.replies += 1
        self.in_flight = False
        if not reply.accepted:  # the server kept its state: our last push never happened
            self.sent, self._sent_before_push = self._sent_before_push, self.sent
        self.backend.apply_reply(
            self.arrays,
            (reply.precision, reply.precision_mean),
            scale_momentum=self.kind == SamplerKind.SGHMC,
        )
        if self._pooled and self.config.snep.site_update == "local":
            self._damp_site_to_guard()
        self.version = reply.version

    def reject_range(self, lo: int, hi: int) -> None:
        """One server rank of several rejected its slice ``[lo, hi)`` of the last push
        (non-finite values there; :mod:`snep.transport.shards`): the record of what was
        sent goes back to before that push on the slice, as :meth:`receive` does for a
        whole rejected push."""
        for now, before in (
            (self.sent.precision, self._sent_before_push.precision),
            (self.sent.precision_mean, self._sent_before_push.precision_mean),
        ):
            now[lo:hi] = before[lo:hi]

    def _damp_site_to_guard(self) -> None:
        """After a reply lowered the cavity: the site's precision down to
        :func:`~snep.maths.oracles.guard_cap` where it exceeds it, keeping the local
        posterior's mean, so that the guard need not fire (the damping of the site step,
        applied to the new cavity; pushed with the next sync)."""
        a, xp, f64 = self.arrays, self.xp, np.float64
        floor = site_precision_floor(self.config, self.n_workers, self.beta)
        if xp is np:  # one host pass (bitwise the expressions below)
            damp_site_to_guard(a, self.scalars, floor)
            return
        sp, spm, cp, cpm = self._rows64()
        cap = xp.maximum(guard_cap(a.anchor_prec[0].astype(f64), cp, self.scalars, xp), floor)
        over = sp > cap  # no early exit: reading it would sync a device
        m = (cpm + spm) / (cp + sp)
        prec = xp.where(over, cap, sp)
        a.site_prec[...] = prec
        a.site_pm[...] = xp.where(over, m * (cp + prec) - cpm, spm)

    _COUNTERS = (
        "iteration",
        "sampler_steps",
        "last_push",
        "version",
        "guard_fired",
        "ep_rejected",
        "pushes",
        "replies",
        "_window",
        "in_flight",
    )

    def state_dict(self) -> dict[str, np.ndarray]:
        """The chain, site, anchor, cavity, sampler state, counters and minibatch stream
        (npz-ready), taken between iterations; a push in flight is recorded (its reply
        is the transport's to keep)."""
        self._collect_fired()
        names = ChainArrays.__dataclass_fields__
        state = {
            f"chain_{name}": to_host(self.backend, arr)
            for name, arr in zip(names, self.arrays.arrays(), strict=True)
        }
        host = self._protocol_host
        state["sent_precision"] = host(self.sent.precision)
        state["sent_precision_mean"] = host(self.sent.precision_mean)
        state["previous_sent_precision"] = host(self._sent_before_push.precision)
        state["previous_sent_precision_mean"] = host(self._sent_before_push.precision_mean)
        state["counters"] = np.array([getattr(self, c) for c in self._COUNTERS], np.int64)
        state["stream"] = self.shard.stream_state()
        if self._score_cv:
            state["acc_g"] = to_host(self.backend, self._acc_g)
            state["acc_xg"] = to_host(self.backend, self._acc_xg)
            state["acc_g2"] = to_host(self.backend, self._acc_g2)
            state["score_stats"] = to_host(self.backend, self._score_stats)
        state["trace"] = self._trace.draws()
        state["trace_counters"] = np.array(self._trace.counters(), np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a state saved by :meth:`state_dict` (same config and shard)."""
        for name, arr in zip(ChainArrays.__dataclass_fields__, self.arrays.arrays(), strict=True):
            saved = state[f"chain_{name}"]
            if saved.shape != arr.shape:
                raise ValueError(
                    f"worker {self.worker}: saved {name} has shape {saved.shape}, this worker's "
                    f"has {arr.shape}: the checkpoint belongs to another model or config"
                )
            arr[...] = to_device(self.backend, saved, arr.dtype)
        put = self._protocol_set
        put(self.sent.precision, state["sent_precision"])
        put(self.sent.precision_mean, state["sent_precision_mean"])
        put(self._sent_before_push.precision, state["previous_sent_precision"])
        put(self._sent_before_push.precision_mean, state["previous_sent_precision_mean"])
        for name, value in zip(self._COUNTERS, state["counters"], strict=True):
            setattr(self, name, int(value))
        self.in_flight = bool(self.in_flight)
        self.shard.load_stream_state(state["stream"], f"worker {self.worker}")
        if self._score_cv and "acc_g" in state:
            self._acc_g[...] = to_device(self.backend, state["acc_g"], self._acc_g.dtype)
            self._acc_xg[...] = to_device(self.backend, state["acc_xg"], self._acc_xg.dtype)
            self._acc_g2[...] = to_device(self.backend, state["acc_g2"], self._acc_g2.dtype)
            self._score_stats[...] = to_device(self.backend, state["score_stats"], np.float64)
        if "trace" in state:
            _, stride, appended = (int(v) for v in state["trace_counters"])
            draws = to_device(self.backend, np.asarray(state["trace"]), np.float64)
            self._trace.restore(draws, stride, appended)

    def stats(self) -> dict[str, float]:
        """Counters for the metrics stream."""
        self._collect_fired()
        return {
            "iteration": self.iteration,
            "pushes": self.pushes,
            "guard_fired": self.guard_fired,
            "ep_rejected": self.ep_rejected,
            "minibatch_loglik": self.last_loglik,
            **self.last_diagnostics,
        }
