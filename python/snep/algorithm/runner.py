"""In-process runner: n SNEP workers and the posterior server in one process.

Deterministic simulation of the asynchronous system of docs/method.md §1.4: each
worker ``w`` takes one iteration every ``speeds[w]`` units of virtual time; a
push reaches the server at once and its reply reaches the worker
``reply_delay`` units later (staleness).  Events are processed in
(time, worker) order, so the same seed gives the same posterior, bitwise.  The
worker and server code are the same objects an MPI transport drives.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snep.algorithm.baselines import AsgdServer, AsgdWorker, EasgdServer, EasgdWorker
from snep.algorithm.messages import Push, Reply
from snep.algorithm.server import PosteriorServer
from snep.algorithm.worker import SnepWorker, chains_per_worker, worker_seed
from snep.backends import Backend, MLPKernels, get_backend
from snep.backends.base import is_host, require_graph_capture
from snep.config import Config
from snep.data.dataset import Dataset
from snep.data.minibatch import MinibatchStream, gather_batch
from snep.data.sharding import make_shards
from snep.errors import ConfigError, DataError
from snep.evaluate import Evaluator
from snep.family import DiagGaussian
from snep.io import save_npz
from snep.model.spec import ParamSpec, init_params
from snep.posterior import Posterior
from snep.samplers.noise import NOISE_STREAM_SAMPLER
from snep.samplers.reference import ChainArrays
from snep.samplers.scalars import PassScalars, SamplerKind

__all__ = ["FitResult", "Simulation", "build_spec", "fit", "run_adam", "run_in_process", "simulate"]

Callback = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    """What a run produced: the posterior, the metrics history and counters."""

    posterior: Posterior
    history: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation's metrics."""
        return self.history[-1] if self.history else {}


def build_spec(config: Config, dataset: Dataset) -> ParamSpec:
    """The MLP layout for ``dataset``: inputs, ``model.hidden``, classes."""
    return ParamSpec((dataset.n_features, *config.model.hidden, dataset.n_classes))


def _prior(config: Config, spec: ParamSpec) -> DiagGaussian:
    p = spec.size
    return DiagGaussian(np.full(p, 1.0 / config.snep.prior_var), np.zeros(p))


def _initial_position(config: Config, spec: ParamSpec) -> np.ndarray:
    return init_params(spec, np.random.default_rng(worker_seed(config.train.seed, 2**31) % 2**63))


@dataclass
class Simulation:
    """The server and workers after :func:`simulate`, with the metrics history."""

    server: PosteriorServer
    workers: list[SnepWorker]
    history: list[dict[str, Any]]
    stats: dict[str, Any]


def simulate(
    config: Config,
    shards: Sequence[tuple[np.ndarray, np.ndarray]],
    make_model: Callable[[int], MLPKernels],
    x0: np.ndarray,
    prior: DiagGaussian,
    backend: Backend,
    evaluate: Callable[[PosteriorServer], dict[str, Any]] | None = None,
    callback: Callback | None = None,
    observer: Callable[[PosteriorServer, Push], None] | None = None,
    n_train: int | None = None,
    checkpoint: Callable[[dict[str, np.ndarray]], None] | None = None,
    resume: Mapping[str, np.ndarray] | None = None,
) -> Simulation:
    """Run SNEP workers on ``shards`` against one posterior server, in virtual time.

    Parameters
    ----------
    shards : sequence of (x, y)
        Each worker's data.
    make_model : callable
        ``make_model(batch_size)`` returns the likelihood kernels of a worker's chains:
        ``loglik_and_grad(params (C, P), x (C, B, D), y (C, B), grad_out (C, P))`` with
        ``C = snep.n_chains`` (one for the baselines), each chain its own minibatch.
    x0 : ndarray (P,)
        Shared initial position.
    prior : DiagGaussian
        ``theta_0``.
    evaluate : callable, optional
        Metrics of the server's current posterior, merged into each record.
    observer : callable, optional
        Called as ``observer(server, push)`` after every applied push (tests
        use it to trace the posterior).
    checkpoint : callable, optional
        Receives the whole simulation state (server, workers, pending events,
        history; npz-ready arrays) every ``train.checkpoint_every`` evaluations.
    resume : mapping, optional
        A state given to ``checkpoint`` by an earlier run with the same
        configuration (``train.iterations`` may be larger): the run continues
        from it, bitwise as if it had not stopped.
    """
    train = config.train
    train.check_resolved("simulate")  # config.with_data_size(n_train) first
    n = len(shards)
    n_train = n_train or sum(len(y) for _, y in shards)
    worker_class = WORKER_CLASSES[train.method]
    workers = [
        worker_class(w, n, make_model(min(train.batch_size, len(y))), x, y, config, backend, x0)
        for w, (x, y) in enumerate(shards)
    ]
    speeds = train.speeds or (1.0,) * n
    delay = train.reply_delay
    # events: (time, order, kind, worker, payload); kind 0 = reply delivery, 1 = step
    events: list[tuple[float, int, int, int, Any]] = []
    history: list[dict[str, Any]] = []
    if resume is None:
        server = make_server(config, prior, x0, n)
        for w in workers:
            server.register(w.worker, w.initial_site())
        for w in workers:
            w.start(server.theta())
        for w in range(n):
            heapq.heappush(events, (speeds[w], w, 1, w, None))
        order, total_steps, next_eval = n, 0, train.eval_every
        comm_seconds, elapsed = 0.0, 0.0
    else:
        server, events, history, counters, floats = _restore(resume, workers, config)
        order, total_steps, next_eval = counters
        comm_seconds, elapsed = floats
    t_start = time.perf_counter() - elapsed
    total_target = train.iterations * n
    n_records = 0

    def save() -> None:
        state = {f"server.{k}": v for k, v in server.state_dict().items()}
        for w in workers:
            state.update({f"worker{w.worker}.{k}": v for k, v in w.state_dict().items()})
        state.update(_events_state(events))
        state["runner.counters"] = np.array([order, total_steps, next_eval], np.int64)
        state["runner.floats"] = np.array([comm_seconds, time.perf_counter() - t_start])
        state["runner.history"] = np.frombuffer(json.dumps(history).encode(), np.uint8)
        state["runner.config"] = np.frombuffer(json.dumps(config.to_dict()).encode(), np.uint8)
        checkpoint(state)

    def record() -> None:
        mean_iter = total_steps / n
        rec = {
            "iteration": mean_iter,
            "epochs_per_worker": mean_iter * train.batch_size / n_train,
            "wall_seconds": time.perf_counter() - t_start,
            "comm_seconds": comm_seconds,
            **(evaluate(server) if evaluate else {}),
            **server.stats(),
            "guard_fired": int(sum(w.guard_fired for w in workers)),
            "minibatch_loglik": float(np.mean([w.last_loglik for w in workers])),
            **chain_diagnostics(workers),
        }
        history.append(rec)
        if callback is not None:
            callback(rec)
        nonlocal n_records
        n_records += 1
        if (
            checkpoint is not None
            and train.checkpoint_every
            and (n_records % train.checkpoint_every == 0)
        ):
            save()

    def apply(push: Push) -> Reply:
        reply = server.push(push)
        if observer is not None:
            observer(server, push)
        return reply

    while events:
        now, _, kind, w, payload = heapq.heappop(events)
        worker = workers[w]
        if kind == 0:
            t0 = time.perf_counter()
            worker.receive(payload)
            comm_seconds += time.perf_counter() - t0
            continue
        if worker.iteration >= train.iterations:
            continue
        push = worker.step()
        total_steps += 1
        if push is not None:
            t0 = time.perf_counter()
            reply = apply(push)
            if delay > 0:  # the reply carries theta as of this push
                reply = Reply(
                    reply.precision.copy(),
                    reply.precision_mean.copy(),
                    reply.version,
                    reply.accepted,
                )
                heapq.heappush(events, (now + delay, order, 0, w, reply))
                order += 1
            else:
                worker.receive(reply)
            comm_seconds += time.perf_counter() - t0
        if worker.iteration < train.iterations:
            heapq.heappush(events, (now + speeds[w], order, 1, w, None))
            order += 1
        if total_steps >= next_eval * n and total_steps < total_target:
            next_eval += train.eval_every  # before record(): a checkpoint saves the next one
            record()

    # final pushes, so that the server holds every worker's last site
    for worker in workers:
        if not worker.in_flight:
            worker.receive(apply(worker.make_push()))
    # a run continued from this final checkpoint evaluates next on the usual grid
    next_eval = (total_steps // (n * train.eval_every) + 1) * train.eval_every
    record()
    wall = time.perf_counter() - t_start
    stats = {
        **server.stats(),
        **server.staleness_report(wall),
        "wall_seconds": wall,
        "comm_seconds": comm_seconds,
        "workers": [w.stats() for w in workers],
    }
    return Simulation(server, workers, history, stats)


def chain_diagnostics(workers: Sequence[SnepWorker]) -> dict[str, float]:
    """The worst cross-chain split R-hat and the smallest bulk ESS over the workers since
    the last call (:meth:`SnepWorker.diagnostics`; NaN with one chain), with a warning
    naming each worker whose R-hat exceeds :data:`snep.diagnostics.RHAT_WARN`."""
    from snep.diagnostics import RHAT_WARN

    found = [w.diagnostics() for w in workers]
    for w, d in zip(workers, found, strict=True):
        if d["rhat_max"] > RHAT_WARN:
            warn_rhat(w.worker)
    rhat = [d["rhat_max"] for d in found if np.isfinite(d["rhat_max"])]
    ess = [d["ess_min"] for d in found if np.isfinite(d["ess_min"])]
    return {
        "rhat_max": max(rhat) if rhat else float("nan"),
        "ess_min": min(ess) if ess else float("nan"),
    }


def warn_rhat(worker: int) -> None:
    """Warn that worker ``worker``'s chains disagree (R-hat > 1.1); the same text at every
    interval, so that Python shows it once per worker (the values are in the metrics)."""
    import warnings

    warnings.warn(
        f"worker {worker}: cross-chain R-hat > 1.1 over an evaluation interval: its chains "
        "disagree (not mixed, or in different modes), so the tilted moments and the sites "
        "are unreliable; run longer, or change sampler.step_size / snep.n_chains (values: "
        "rhat_max, ess_min in metrics.jsonl)",
        RuntimeWarning,
        stacklevel=2,
    )


#: worker classes by ``train.method`` (the in-process runner and MPI use the same)
WORKER_CLASSES: dict[str, type[SnepWorker]] = {
    "snep": SnepWorker,
    "ep": SnepWorker,
    "asgd": AsgdWorker,
    "easgd": EasgdWorker,
}


def make_server(config: Config, prior: DiagGaussian, x0: np.ndarray, n_workers: int) -> Any:
    """The server of ``config.train.method``: the posterior server, or a baseline's."""
    method, start = config.train.method, config.train.averaging_start
    if method == "asgd":
        return AsgdServer(x0, n_workers, start, lr=config.sampler.learning_rate)
    if method == "easgd":
        return EasgdServer(x0, n_workers, start)
    return PosteriorServer(prior, n_workers, start)


def _events_state(events: list[tuple[float, int, int, int, Any]]) -> dict[str, np.ndarray]:
    meta = np.zeros((len(events), 6))
    state: dict[str, np.ndarray] = {}
    for k, (t, order, kind, w, payload) in enumerate(events):
        meta[k, :4] = (t, order, kind, w)
        if payload is not None:
            meta[k, 4:] = (payload.version, float(payload.accepted))
            state[f"runner.reply{k}.precision"] = payload.precision
            state[f"runner.reply{k}.precision_mean"] = payload.precision_mean
    state["runner.events"] = meta
    return state


def _restore(resume: Mapping[str, np.ndarray], workers: list[SnepWorker], config: Config):
    # through Config: keys added to snep since the checkpoint take their defaults
    saved = Config.from_dict(json.loads(bytes(resume["runner.config"]).decode())).to_dict()
    current = config.to_dict()
    for d in (saved, current):  # what may change between a run and its resumption
        # threads: a machine setting (a different BLAS split may change the last bits)
        for key in ("iterations", "epochs", "eval_every", "checkpoint_every", "threads"):
            d["train"].pop(key, None)
    if saved != current:
        changed = sorted(
            f"{section}.{key}"
            for section in current
            for key in set(current[section]) | set(saved.get(section, {}))
            if current[section].get(key) != saved.get(section, {}).get(key)
        )
        raise ConfigError(
            f"the checkpoint was written with another configuration (differs in {changed}); "
            "resume with the run's own config.toml (only train.iterations, epochs, "
            "eval_every, checkpoint_every and threads may change)"
        )
    server = PosteriorServer.from_state_dict(
        {k.removeprefix("server."): v for k, v in resume.items() if k.startswith("server.")}
    )
    for w in workers:
        prefix = f"worker{w.worker}."
        w.load_state_dict(
            {k.removeprefix(prefix): v for k, v in resume.items() if k.startswith(prefix)}
        )
    events: list[tuple[float, int, int, int, Any]] = []
    for k, (t, order, kind, w, version, accepted) in enumerate(resume["runner.events"]):
        payload = None
        if int(kind) == 0:
            payload = Reply(
                np.array(resume[f"runner.reply{k}.precision"]),
                np.array(resume[f"runner.reply{k}.precision_mean"]),
                int(version),
                bool(accepted),
            )
        events.append((float(t), int(order), int(kind), int(w), payload))
    heapq.heapify(events)
    # workers that had finished but may run further with a larger train.iterations
    queued = {w for (_, _, kind, w, _) in events if kind == 1}
    speeds = config.train.speeds or (1.0,) * len(workers)
    order = int(resume["runner.counters"][0])
    for w in workers:
        if w.worker not in queued and w.iteration < config.train.iterations:
            heapq.heappush(
                events, (float(w.iteration) * speeds[w.worker], order, 1, w.worker, None)
            )
            order += 1
    counters = (order, *map(int, resume["runner.counters"][1:]))
    history = json.loads(bytes(resume["runner.history"]).decode())
    return server, events, history, counters, tuple(map(float, resume["runner.floats"]))


def run_in_process(
    config: Config,
    dataset: Dataset,
    backend: Backend | None = None,
    callback: Callback | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Run SNEP (or its EP variant) on an MLP with ``config.train.workers`` simulated workers.

    ``callback`` receives every evaluation record (a dict of metrics) as it is made.
    ``checkpoint``: a path written atomically every ``train.checkpoint_every``
    evaluations; ``resume``: a checkpoint to continue from.
    """
    config = config.with_data_size(dataset.n_train)  # iterations from epochs if 0
    train = config.train
    backend = backend or get_backend(train.backend, train.threads)
    spec = build_spec(config, dataset)
    shards = make_shards(
        dataset.y_train, train.workers, train.sharding, train.dirichlet_alpha, train.seed
    )
    sim = simulate(
        config,
        [(dataset.x_train[idx], dataset.y_train[idx]) for idx in shards],
        model_factory(config, backend, spec),
        _initial_position(config, spec),
        _prior(config, spec),
        backend,
        evaluate=Evaluator(spec, dataset, backend, config),
        callback=callback,
        n_train=dataset.n_train,
        checkpoint=None
        if checkpoint is None or config.train.method in ("asgd", "easgd")
        else (lambda state: save_npz(checkpoint, **state)),
        resume=None if resume is None else load_checkpoint(resume),
    )
    server = sim.server
    posterior = Posterior(
        spec,
        np.array(server.precision),
        np.array(server.precision_mean),
        None if server.average_mean is None else server.average_mean.copy(),
        None if server.average_var is None else server.average_var.copy(),
    )
    return FitResult(posterior, sim.history, sim.stats)


def run_adam(
    config: Config,
    dataset: Dataset,
    backend: Backend | None = None,
    callback: Callback | None = None,
) -> FitResult:
    """Single-worker Adam on the log posterior (the MAP baseline of docs/method.md §1.7).

    Same kernels as SNEP: the fused pass with the Adam-SGLD rule, noise off,
    ``beta1 = 0.9`` (unless set), the prior as the Gaussian factor and no site.
    The returned "posterior" is the point estimate with a negligible variance.
    """
    config = config.with_data_size(dataset.n_train)  # iterations from epochs if 0
    train, sampler = config.train, config.sampler
    backend = backend or get_backend(train.backend, train.threads)
    spec = build_spec(config, dataset)
    x = np.ascontiguousarray(dataset.x_train, dtype=backend.dtype)
    y = np.ascontiguousarray(dataset.y_train, dtype=np.int32)
    n_data, batch = len(y), min(train.batch_size, len(y))
    stream = MinibatchStream(n_data, batch, worker_seed(train.seed, 0) % 2**63)
    mlp = backend.mlp(spec, 1, batch)
    a = ChainArrays.zeros(1, spec.size, backend.dtype)
    a.x[0] = _initial_position(config, spec)
    prior = _prior(config, spec)
    a.anchor_prec[0] = prior.precision
    a.site_prec[...] = 1.0  # unused (no site step); keeps the arithmetic finite
    a.cavity_prec[...] = 1.0
    grad = np.zeros_like(a.x)
    bx = np.zeros((1, batch, spec.layer_sizes[0]), backend.dtype)
    by = np.zeros((1, batch), np.int32)
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
    evaluator = Evaluator(spec, dataset, backend, config)
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
    posterior = Posterior(spec, prec, prec * mean)
    return FitResult(posterior, history, {"wall_seconds": time.perf_counter() - t_start})


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a checkpoint written by :func:`run_in_process` (clear error if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {str(path)!r} does not exist; a run directory keeps it as "
            "checkpoint.npz once its first evaluation has been made"
        )
    with np.load(path, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    if "runner.counters" not in state:
        raise DataError(f"{str(path)!r} is not a snep checkpoint (no runner state in it)")
    return state


def fit(
    config: Config,
    dataset: Dataset,
    backend: Backend | str | None = None,
    callback: Callback | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Train with ``config.train.method`` (``snep``, ``ep`` or ``adam``) in this process.

    ``checkpoint``/``resume``: see :func:`run_in_process` (SNEP and EP only).
    ``train.iterations = 0`` is derived from ``train.epochs`` and the size of
    ``dataset`` (:meth:`~snep.config.Config.with_data_size`).
    """
    config = config.with_data_size(dataset.n_train)
    if isinstance(backend, str) or backend is None:
        backend = get_backend(backend or config.train.backend, config.train.threads)
    check_backend(config, backend)
    with blas_threads(config, build_spec(config, dataset).size):
        if config.train.method == "adam":
            if resume is not None:
                raise ConfigError("resume is for SNEP/EP runs; the Adam baseline has no checkpoint")
            return run_adam(config, dataset, backend, callback)
        return run_in_process(config, dataset, backend, callback, checkpoint, resume)


def check_backend(config: Config, backend: Backend, mpi: bool = False) -> None:
    """Whether ``backend`` can run ``config`` (in process, or a rank of an MPI run with
    ``mpi``), as a clear :class:`ConfigError` before anything starts.

    A device backend (``cuda``) runs the SNEP and EP workers; the baselines (Adam, A-SGD,
    EASGD) are written for host arrays.  ``train.cuda_graph`` needs a backend that
    captures CUDA graphs, and a ``train.gemm`` other than ``"matmul"`` a device backend.
    ``train.cuda_aware_mpi`` applies to MPI runs only.
    """
    if config.train.cuda_aware_mpi and not mpi:
        raise ConfigError(
            "train.cuda_aware_mpi = true applies to runs under mpiexec (it hands MPI device "
            "buffers); an in-process run sends no messages: set it to false"
        )
    if not is_host(backend) and config.train.method not in ("snep", "ep"):
        raise ConfigError(
            f"train.method = {config.train.method!r} runs on the host backends ('cpu', "
            f"'numpy'), not on {backend.name!r}; use --backend cpu for the baselines "
            "(the cuda backend runs the snep and ep methods)"
        )
    if config.train.cuda_graph:
        require_graph_capture(backend)
    if config.train.gemm != "matmul" and is_host(backend):
        raise ConfigError(
            f"train.gemm = {config.train.gemm!r} selects a GEMM of the cuda backend; the "
            f"backend is {backend.name!r}. Use --backend cuda, or train.gemm = 'matmul'"
        )


def model_factory(config: Config, backend: Backend, spec: ParamSpec) -> Callable[[int], MLPKernels]:
    """``batch -> MLP kernels`` for a worker's chains (:func:`chains_per_worker`), with
    ``train.gemm``'s GEMMs on a device backend."""
    gemm, chains = config.train.gemm, chains_per_worker(config)
    if gemm == "matmul":
        return lambda batch: backend.mlp(spec, chains, batch)
    return lambda batch: backend.mlp(spec, chains, batch, gemm=gemm)


#: below this many parameters the GEMMs are too small to gain from BLAS threads
SMALL_MODEL = 200_000


def blas_threads(config: Config, n_params: int) -> Any:
    """Limit BLAS threads for a run: ``train.threads`` when set, else 1 for small models.

    OpenBLAS's threads busy-wait after each GEMM; on small GEMMs a thread team
    costs more than it saves, and far more when the cores are shared.
    """
    from threadpoolctl import threadpool_limits

    threads = config.train.threads or (1 if n_params < SMALL_MODEL else None)
    return threadpool_limits(limits=threads, user_api="blas")
