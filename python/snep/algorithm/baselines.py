"""Distributed-optimisation baselines over the same transport and kernels as SNEP
(docs/method.md §1.7).

* **A-SGD** (Downpour; Dean et al., "Large scale distributed deep networks",
  NIPS 2012): each worker accumulates minibatch gradients of the log posterior
  at its copy of the parameters and pushes their sum every ``N_sync``
  iterations; the server takes one Adam step (Kingma & Ba 2015) with the
  pushed gradient and replies with its parameters, which the worker adopts.
* **EASGD** (Zhang, Choromanska & LeCun, "Deep learning with elastic averaging
  SGD", NIPS 2015): each worker takes local Adam steps (the fused pass with the
  noise off) and every ``N_sync`` iterations exchanges an elastic force with the
  centre variable: ``x_i -= alpha (x_i - c)``, ``c += alpha (x_i - c)`` with
  moving rate ``alpha = 0.25``.

They speak the SNEP worker/server protocol: a push carries the gradient (A-SGD)
or the worker's parameters (EASGD) in its first payload slot, a reply the
server's parameters in its first slot; the second slots are zero.  The
servers expose the point estimate as a degenerate Gaussian (``precision`` =
1e12) so that the evaluator and the run directory treat every method alike;
``point_estimate = True`` tells the evaluator to skip the model average.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.algorithm.adam import AdamPass
from snep.algorithm.messages import Push, Reply, wire_dtype
from snep.algorithm.server import PosteriorServer
from snep.algorithm.shard import LocalShard
from snep.algorithm.worker import worker_seed
from snep.backends import Backend, MLPKernels
from snep.config import Config
from snep.maths.family import DiagGaussian

__all__ = [
    "ASGD_ADAM",
    "MOVING_RATE",
    "AsgdServer",
    "AsgdWorker",
    "EasgdServer",
    "EasgdWorker",
]

#: EASGD's moving rate (docs/method.md §1.7)
MOVING_RATE = 0.25
#: A-SGD server's Adam constants (Kingma & Ba 2015)
ASGD_ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
POINT_PRECISION = 1e12


class _PointServer:
    """What the evaluator, the runner and the MPI loop need of a server holding a point."""

    point_estimate = True

    @classmethod
    def from_config(cls, config: Any, prior: Any, x0: np.ndarray, n_workers: int) -> Any:
        """The server of a run of ``config`` (:attr:`snep.config.Method.server`)."""
        return cls(x0, n_workers, config.train.averaging_start, config.train.wire)

    def __init__(
        self, x0: np.ndarray, n_workers: int, average_from: int, wire: str = "float32"
    ) -> None:
        self.center = np.array(x0, np.float64)
        self.wire = wire
        dtype = wire_dtype(wire)
        self._reply = (np.empty(self.center.size, dtype), np.zeros(self.center.size, dtype))
        self.n_workers = n_workers
        self.average_from = average_from
        self.version = 0
        self.registered_workers: set[int] = set()
        self.last_iteration = np.zeros(n_workers, np.int64)
        self.pushes = np.zeros(n_workers, np.int64)
        self.staleness: list[list[int]] = [[] for _ in range(n_workers)]
        self.rejected = 0
        self.average_count = 0
        self.average_mean: np.ndarray | None = None
        self.average_var = None

    @property
    def precision(self) -> np.ndarray:
        return np.full_like(self.center, POINT_PRECISION)

    @property
    def precision_mean(self) -> np.ndarray:
        return POINT_PRECISION * self.center

    def register(self, worker: int, site: DiagGaussian) -> bool:
        self.registered_workers.add(worker)
        return len(self.registered_workers) == self.n_workers

    def reply_to(
        self,
        worker: int,
        out: tuple[np.ndarray, np.ndarray] | None = None,
        accepted: bool = True,
        center: np.ndarray | None = None,
    ) -> Reply:
        """The centre (``center``: the one given, else the current one) in ``out[0]``,
        zeros in ``out[1]``, in the wire's dtype (``out``: by default a buffer of this
        server's, reused for the next reply)."""
        out = self._reply if out is None else out
        np.copyto(out[0], self.center if center is None else center, casting="same_kind")
        out[1][...] = 0.0
        return Reply(out[0], out[1], self.version, accepted)

    def _after_push(self, msg: Push) -> None:
        self.staleness[msg.worker].append(self.version - msg.version_seen)
        self.version += 1
        self.last_iteration[msg.worker] = msg.iteration
        self.pushes[msg.worker] += 1
        if msg.iteration >= self.average_from:
            self.average_count += 1
            if self.average_mean is None:
                self.average_mean = self.center.copy()
            else:
                self.average_mean += (self.center - self.average_mean) / self.average_count

    # the same bookkeeping as the posterior server's
    staleness_report = PosteriorServer.staleness_report
    stats = PosteriorServer.stats


class AsgdServer(_PointServer):
    """Downpour's parameter server: an Adam ascent step per pushed gradient."""

    def __init__(
        self, x0: np.ndarray, n_workers: int, average_from: int, lr: float, wire: str = "float32"
    ) -> None:
        super().__init__(x0, n_workers, average_from, wire)
        self.lr = lr
        self.m = np.zeros_like(self.center)
        self.v = np.zeros_like(self.center)
        self.steps = 0

    @classmethod
    def from_config(cls, config: Any, prior: Any, x0: np.ndarray, n_workers: int) -> Any:
        """The server of a run of ``config``, with the sampler's learning rate."""
        t = config.train
        return cls(x0, n_workers, t.averaging_start, config.sampler.learning_rate, t.wire)

    def push(self, msg: Push, out: tuple[np.ndarray, np.ndarray] | None = None) -> Reply:
        g = msg.delta_precision
        if not np.isfinite(g).all():
            self.rejected += 1
            return self.reply_to(msg.worker, out, accepted=False)
        b1, b2, eps = ASGD_ADAM["beta1"], ASGD_ADAM["beta2"], ASGD_ADAM["eps"]
        self.steps += 1
        self.m *= b1
        self.m += (1 - b1) * g
        self.v *= b2
        self.v += (1 - b2) * g * g
        m_hat = self.m / (1 - b1**self.steps)
        v_hat = self.v / (1 - b2**self.steps)
        self.center += self.lr * m_hat / (np.sqrt(v_hat) + eps)
        self._after_push(msg)
        return self.reply_to(msg.worker, out)


class EasgdServer(_PointServer):
    """EASGD's centre variable: ``c += alpha (x_i - c)``; replies with c before the move."""

    def __init__(
        self, x0: np.ndarray, n_workers: int, average_from: int, wire: str = "float32"
    ) -> None:
        super().__init__(x0, n_workers, average_from, wire)
        self._before = np.empty_like(self.center)

    def push(self, msg: Push, out: tuple[np.ndarray, np.ndarray] | None = None) -> Reply:
        x = msg.delta_precision
        if not np.isfinite(x).all():
            self.rejected += 1
            return self.reply_to(msg.worker, out, accepted=False)
        np.copyto(self._before, self.center)
        self.center += MOVING_RATE * (x - self.center)
        self._after_push(msg)
        return self.reply_to(msg.worker, out, center=self._before)


class _PointWorker:
    """What the two baselines' workers share: a shard (:class:`LocalShard`, one chain),
    the position ``x`` they work on, and the protocol's bookkeeping (docs/method.md
    §1.7).  The payload of a push (a gradient sum or the position) goes in its first
    slot, zeros in the second."""

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
        self.worker, self.n_workers, self.config, self.backend = worker, n_workers, config, backend
        self.xp = np
        self.seed = worker_seed(config.train.seed, worker)
        self.n_params = P = int(np.asarray(x0).size)
        self.shard = LocalShard(x, y, 1, config.train.batch_size, self.seed, model, backend, P)
        self.prior_prec = 1.0 / config.snep.prior_var
        self.lik_scale = self.shard.n_local / (self.shard.batch_size * config.sampler.temperature)
        self.x = np.array(np.asarray(x0)[None, :], dtype=backend.dtype)  # (1, P)
        self.iteration = self.last_push = self.pushes = self.replies = 0
        self.guard_fired = 0
        self.version = -1
        self.in_flight = False
        self._last_loglik = float("nan")
        self._payload = np.zeros(P)
        wire = wire_dtype(config.train.wire)
        self._push_arrays = (np.empty(P, wire), np.zeros(P, wire))

    @property
    def last_loglik(self) -> float:
        """Mean log-likelihood per example of the last minibatch."""
        return self._last_loglik

    def initial_site(self) -> DiagGaussian:
        """What registration sends: the position as a degenerate Gaussian (the servers
        keep their own centre; only the count of registrations matters)."""
        x = self.x[0].astype(np.float64)
        return DiagGaussian(np.full_like(x, POINT_PRECISION), POINT_PRECISION * x)

    def start(self, reply: Reply) -> None:
        """Start from the server's centre."""
        self.x[0] = reply.precision
        self.version = reply.version

    def _minibatch_grad(self) -> None:
        self.shard.gather()
        loglik = self.shard.loglik_and_grad(self.x)
        self._last_loglik = float(loglik[0]) / self.shard.batch_size

    def _maybe_push(self) -> Push | None:
        self.iteration += 1
        if not self.in_flight and self.iteration - self.last_push >= self.config.snep.n_sync:
            return self.make_push()
        return None

    def bind_push_arrays(self, precision: np.ndarray, precision_mean: np.ndarray) -> None:
        """Write every later push into these arrays (a transport's send buffer)."""
        precision_mean[...] = 0.0
        self._push_arrays = (precision, precision_mean)

    def make_push(self) -> Push:
        """The payload, in the wire's dtype, in the first slot (zeros in the second)."""
        np.copyto(self._push_arrays[0], self._payload, casting="same_kind")
        push = Push(self.worker, self.iteration, *self._push_arrays, self.version)
        self.in_flight = True
        self.last_push = self.iteration
        self.pushes += 1
        return push

    def stats(self) -> dict[str, float]:
        """Counters for the metrics stream."""
        return {
            "iteration": self.iteration,
            "pushes": self.pushes,
            "guard_fired": self.guard_fired,
            "minibatch_loglik": self.last_loglik,
        }

    def diagnostics(self) -> dict[str, float]:
        """One chain: no cross-chain diagnostics."""
        return {"rhat_max": float("nan"), "ess_min": float("nan")}

    def state_dict(self) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} runs have no checkpoints")

    def load_state_dict(self, state: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} runs have no checkpoints")


class AsgdWorker(_PointWorker):
    """Downpour worker: accumulate log-posterior gradients, push their sum every N_sync."""

    def step(self) -> Push | None:
        self._minibatch_grad()
        x = self.x[0]
        # gradient of the log posterior at the (stale) parameters: likelihood + prior
        self._payload += self.lik_scale * self.shard.grad[0] - self.prior_prec * x
        return self._maybe_push()

    def make_push(self) -> Push:
        push = super().make_push()
        self._payload[...] = 0.0
        return push

    def receive(self, reply: Reply) -> None:
        self.replies += 1
        self.in_flight = False
        self.x[0] = reply.precision  # adopt the server's parameters
        self.version = reply.version


class EasgdWorker(_PointWorker):
    """EASGD worker: local Adam steps (:class:`~snep.algorithm.adam.AdamPass`), elastic
    exchange with the centre every N_sync."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shard = self.shard
        self.adam = AdamPass(
            self.x[0], self.prior_prec, self.config, shard.n_local, shard.batch_size,
            self.seed, self.backend,
        )  # fmt: skip
        self.x = self.adam.x  # the pass moves the position in place

    def step(self) -> Push | None:
        self._minibatch_grad()
        self.guard_fired += self.adam.step(self.shard.grad)
        return self._maybe_push()

    def make_push(self) -> Push:
        np.copyto(self._payload, self.x[0])
        return super().make_push()

    def receive(self, reply: Reply) -> None:
        self.replies += 1
        self.in_flight = False
        if reply.accepted:  # x_i -= alpha (x_i - c), c as the server held it
            x = self.x[0]
            x -= (MOVING_RATE * (x - reply.precision)).astype(x.dtype)
        self.version = reply.version
