"""The in-process transport: n workers and their server in one process.

Deterministic simulation of the asynchronous system of docs/method.md §1.4: each
worker ``w`` takes one iteration every ``speeds[w]`` units of virtual time; a
push reaches the server at once and its reply reaches the worker
``reply_delay`` units later (staleness).  Events are processed in
(time, worker) order, so the same seed gives the same posterior, bitwise.  The
worker and server code are the same objects the MPI transport drives
(:mod:`snep.transport.mpi`), built by the same :class:`~snep.run.setup.RunSetup`.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snep.algorithm.messages import Push, Reply, Worker
from snep.algorithm.server import PosteriorServer
from snep.backends import Backend, MLPKernels
from snep.config import Config
from snep.data.dataset import Dataset
from snep.errors import ConfigError, DataError
from snep.io import save_npz
from snep.maths.family import DiagGaussian
from snep.run.setup import FitResult, RunSetup, make_server, make_worker

__all__ = [
    "Simulation",
    "chain_diagnostics",
    "checkpoint_history",
    "load_checkpoint",
    "run_in_process",
    "simulate",
]

Callback = Callable[[dict[str, Any]], None]


@dataclass
class Simulation:
    """The server and workers after :func:`simulate`, with the metrics history."""

    server: PosteriorServer
    workers: list[Worker]
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
    config.train.check_resolved("simulate")  # config.with_data_size(n_train) first
    n = len(shards)
    workers = [
        make_worker(config, backend, make_model, w, n, x, y, x0) for w, (x, y) in enumerate(shards)
    ]
    run = _VirtualTimeRun(config, workers, n_train or sum(len(y) for _, y in shards))
    run.evaluate, run.callback, run.observer, run.checkpoint = (
        evaluate,
        callback,
        observer,
        checkpoint,
    )
    if resume is None:
        run.start(make_server(config, prior, x0, n))
    else:
        run.restore(resume)
    return run.run()


Event = tuple[float, int, int, int, Any]  # (time, order, kind, worker, payload)
REPLY, STEP = 0, 1  # event kinds: a reply's delivery, a worker's iteration


class _VirtualTimeRun:
    """The state of :func:`simulate`: server, workers, the event queue and counters."""

    def __init__(self, config: Config, workers: list[Worker], n_train: int) -> None:
        self.config, self.train = config, config.train
        self.workers, self.n, self.n_train = workers, len(workers), n_train
        self.speeds = self.train.speeds or (1.0,) * self.n
        self.events: list[Event] = []
        self.history: list[dict[str, Any]] = []
        self.evaluate: Callable[[PosteriorServer], dict[str, Any]] | None = None
        self.callback: Callback | None = None
        self.observer: Callable[[PosteriorServer, Push], None] | None = None
        self.checkpoint: Callable[[dict[str, np.ndarray]], None] | None = None
        self.n_records = 0

    def start(self, server: Any) -> None:
        """A fresh run: register the initial sites, start the workers, queue a step each."""
        self.server = server
        for w in self.workers:
            server.register(w.worker, w.initial_site())
        for w in self.workers:
            w.start(server.reply_to(w.worker))
        for w in range(self.n):
            heapq.heappush(self.events, (self.speeds[w], w, STEP, w, None))
        self.order, self.total_steps, self.next_eval = self.n, 0, self.train.eval_every
        self.comm_seconds = 0.0
        self.t_start = time.perf_counter()

    def restore(self, resume: Mapping[str, np.ndarray]) -> None:
        """Continue from a checkpoint's state (:func:`_restore`)."""
        self.server, self.events, self.history, counters, floats = _restore(
            resume, self.workers, self.config
        )
        self.order, self.total_steps, self.next_eval = counters
        self.comm_seconds, elapsed = floats
        self.t_start = time.perf_counter() - elapsed

    def save(self) -> None:
        """Give the whole state to ``checkpoint`` (npz-ready arrays)."""
        state = {f"server.{k}": v for k, v in self.server.state_dict().items()}
        for w in self.workers:
            state.update({f"worker{w.worker}.{k}": v for k, v in w.state_dict().items()})
        state.update(_events_state(self.events))
        state["runner.counters"] = np.array(
            [self.order, self.total_steps, self.next_eval], np.int64
        )
        state["runner.floats"] = np.array([self.comm_seconds, time.perf_counter() - self.t_start])
        state["runner.history"] = np.frombuffer(json.dumps(self.history).encode(), np.uint8)
        config = json.dumps(self.config.to_dict()).encode()
        state["runner.config"] = np.frombuffer(config, np.uint8)
        self.checkpoint(state)

    def record(self) -> None:
        """One evaluation record: to the history, the callback, and maybe a checkpoint."""
        mean_iter = self.total_steps / self.n
        rec = {
            "iteration": mean_iter,
            "epochs_per_worker": mean_iter * self.train.batch_size / self.n_train,
            "wall_seconds": time.perf_counter() - self.t_start,
            "comm_seconds": self.comm_seconds,
            **(self.evaluate(self.server) if self.evaluate else {}),
            **self.server.stats(),
            "guard_fired": int(sum(w.guard_fired for w in self.workers)),
            "minibatch_loglik": float(np.mean([w.last_loglik for w in self.workers])),
            **chain_diagnostics(self.workers),
        }
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)
        self.n_records += 1
        every = self.train.checkpoint_every
        if self.checkpoint is not None and every and self.n_records % every == 0:
            self.save()

    def apply(self, push: Push) -> Reply:
        reply = self.server.push(push)
        if self.observer is not None:
            self.observer(self.server, push)
        return reply

    def step(self, now: float, w: int) -> None:
        """Worker ``w``'s iteration at virtual time ``now``, its push and reply."""
        worker = self.workers[w]
        push = worker.step()
        self.total_steps += 1
        if push is not None:
            t0 = time.perf_counter()
            reply = self.apply(push)
            if self.train.reply_delay > 0:  # the reply carries the cavity as of this push
                reply = Reply(
                    reply.precision.copy(),
                    reply.precision_mean.copy(),
                    reply.version,
                    reply.accepted,
                )
                when = now + self.train.reply_delay
                heapq.heappush(self.events, (when, self.order, REPLY, w, reply))
                self.order += 1
            else:
                worker.receive(reply)
            self.comm_seconds += time.perf_counter() - t0
        if worker.iteration < self.train.iterations:
            heapq.heappush(self.events, (now + self.speeds[w], self.order, STEP, w, None))
            self.order += 1

    def run(self) -> Simulation:
        """Process the events to the end of the run; the final pushes; the last record."""
        train, n = self.train, self.n
        total_target = train.iterations * n
        while self.events:
            now, _, kind, w, payload = heapq.heappop(self.events)
            if kind == REPLY:
                t0 = time.perf_counter()
                self.workers[w].receive(payload)
                self.comm_seconds += time.perf_counter() - t0
                continue
            if self.workers[w].iteration >= train.iterations:
                continue
            self.step(now, w)
            if self.total_steps >= self.next_eval * n and self.total_steps < total_target:
                self.next_eval += train.eval_every  # before record(): a checkpoint saves it
                self.record()
        # final pushes, so that the server holds every worker's last site
        for worker in self.workers:
            if not worker.in_flight:
                worker.receive(self.apply(worker.make_push()))
        # a run continued from this final checkpoint evaluates next on the usual grid
        self.next_eval = (self.total_steps // (n * train.eval_every) + 1) * train.eval_every
        self.record()
        wall = time.perf_counter() - self.t_start
        stats = {
            **self.server.stats(),
            **self.server.staleness_report(wall),
            "wall_seconds": wall,
            "comm_seconds": self.comm_seconds,
            "workers": [w.stats() for w in self.workers],
        }
        return Simulation(self.server, self.workers, self.history, stats)


def chain_diagnostics(workers: Sequence[Worker]) -> dict[str, float]:
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


def _restore(resume: Mapping[str, np.ndarray], workers: list[Worker], config: Config):
    raw = json.loads(bytes(resume["runner.config"]).decode())
    in_flight = any(int(kind) == REPLY for kind in resume["runner.events"][:, 2])
    if "wire" not in raw.get("train", {}) and in_flight:
        raise ConfigError(
            "the checkpoint was written before replies carried the worker's cavity "
            "(train.wire, 2026-11-30) and holds replies in flight (train.reply_delay > 0), "
            "which were theta then: it cannot be resumed; start the run again"
        )
    # through Config: keys added to snep since the checkpoint take their defaults
    saved = Config.from_dict(raw).to_dict()
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
        {k.removeprefix("server."): v for k, v in resume.items() if k.startswith("server.")},
        config.train.wire,
    )
    server.set_average_from(config.train.averaging_start)  # the run's length may change
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
    model: Any = None,
) -> FitResult:
    """Run ``train.method`` (SNEP, EP or a distributed baseline) with
    ``config.train.workers`` simulated workers.

    ``callback`` receives every evaluation record (a dict of metrics) as it is made.
    ``checkpoint``: a path written atomically every ``train.checkpoint_every``
    evaluations (methods that checkpoint, :attr:`snep.config.Method.checkpointed`);
    ``resume``: a checkpoint to continue from.
    """
    setup = RunSetup.create(config, dataset, backend, model)
    save = None
    if checkpoint is not None and setup.method.checkpointed:
        save = lambda state: save_npz(checkpoint, **state)  # noqa: E731
    sim = simulate(
        setup.config,
        setup.shards(),
        setup.model_factory(),
        setup.initial_position(),
        setup.prior(),
        setup.backend,
        evaluate=setup.evaluator(),
        callback=callback,
        n_train=dataset.n_train,
        checkpoint=save,
        resume=None if resume is None else load_checkpoint(resume),
    )
    return FitResult(setup.to_posterior(sim.server), sim.history, sim.stats)


def checkpoint_history(state: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The evaluation records a checkpoint holds (those made before it was written)."""
    return json.loads(bytes(state["runner.history"]).decode())


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
