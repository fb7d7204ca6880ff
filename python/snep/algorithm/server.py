"""The posterior server (Hasenclever et al. 2017, §"The posterior server";
docs/method.md §1.4): pure state and message handling, no I/O, so that the in-process
runner and the MPI transport drive the same code.

State: ``theta = theta_0 + sum_i lambda_i^sent`` in float64, a version
counter, each worker's last iteration and accumulated site, and running
averages of the posterior's moments from a configurable iteration on.  Deltas
commute, so the result does not depend on arrival order.

A push's reply is the pushing worker's cavity ``c_i = theta - lambda_i``, computed
here in float64 and rounded once to the wire's dtype (``train.wire``): what the
worker needs, with no cancellation left for it to do in lower precision.  The
per-push arithmetic is one fused pass (:mod:`snep.algorithm.exchange_kernels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from snep.algorithm.exchange_kernels import (
    apply_push,
    apply_push_average,
    cavity,
    delta_is_finite,
    start_average,
)
from snep.algorithm.messages import Push, Reply, wire_dtype
from snep.maths.family import DiagGaussian

__all__ = ["PosteriorServer"]


class PosteriorServer:
    """Holds the global approximation and applies workers' pushes.

    Parameters
    ----------
    prior : DiagGaussian
        ``theta_0``, the prior's natural parameters (float64, length P).
    n_workers : int
        Number of workers that must register.
    average_from : int
        Pushes from worker iterations at or after this one update the running
        average of the posterior mean and variance.
    wire : {"float32", "float64"}
        The dtype of the replies' cavities (:func:`snep.algorithm.messages.wire_dtype`).
    """

    def __init__(
        self, prior: DiagGaussian, n_workers: int, average_from: int, wire: str = "float32"
    ) -> None:
        self.prior = DiagGaussian(
            np.array(prior.precision, np.float64), np.array(prior.precision_mean, np.float64)
        )
        self.n_workers = n_workers
        self.average_from = average_from
        self.precision = self.prior.precision.copy()
        self.precision_mean = self.prior.precision_mean.copy()
        self.sites: dict[int, DiagGaussian] = {}
        self.version = 0
        self.last_iteration = np.zeros(n_workers, np.int64)
        self.pushes = np.zeros(n_workers, np.int64)
        self.staleness: list[list[int]] = [[] for _ in range(n_workers)]
        self.rejected = 0
        self.average_count = 0
        self.average_mean: np.ndarray | None = None
        self.average_var: np.ndarray | None = None
        self.wire = wire
        self._replies: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per worker, reused

    def set_average_from(self, average_from: int) -> None:
        """Average from worker iteration ``average_from`` on (a resumed run whose length,
        and so its default start at 3/4 of the run, changed).

        A later start empties an average begun at the earlier one, so that a run
        resumed before either start averages as if it had had the new start from the
        outset; pushes already averaged past the new start are not recovered.
        """
        if average_from > self.average_from:
            self.average_count = 0
            self.average_mean = self.average_var = None
        self.average_from = average_from

    @classmethod
    def from_config(
        cls, config: Any, prior: DiagGaussian, x0: np.ndarray, n_workers: int
    ) -> PosteriorServer:
        """The server of a run of ``config`` (:attr:`snep.config.Method.server`)."""
        return cls(prior, n_workers, config.train.averaging_start, config.train.wire)

    @property
    def registered(self) -> bool:
        """True once every worker has sent its initial site."""
        return len(self.sites) == self.n_workers

    def register(self, worker: int, site: DiagGaussian) -> bool:
        """Add worker ``worker``'s initial site; returns :attr:`registered`."""
        if not 0 <= worker < self.n_workers:
            raise ValueError(f"worker id {worker} is out of range [0, {self.n_workers})")
        if worker in self.sites:
            raise ValueError(f"worker {worker} registered twice")
        prec = np.array(site.precision, np.float64)
        pm = np.array(site.precision_mean, np.float64)
        self.sites[worker] = DiagGaussian(prec, pm)
        self.precision += prec
        self.precision_mean += pm
        return self.registered

    def reset_sites(self, sites: Mapping[int, DiagGaussian]) -> None:
        """Make ``theta = theta_0 + sum_i sites[i]`` (a resumed run: the workers' last
        pushed sites are the ground truth of what the server has absorbed)."""
        self.sites = {
            w: DiagGaussian(
                np.array(g.precision, np.float64), np.array(g.precision_mean, np.float64)
            )
            for w, g in sites.items()
        }
        self.precision[...] = self.prior.precision
        self.precision_mean[...] = self.prior.precision_mean
        for g in self.sites.values():
            self.precision += g.precision
            self.precision_mean += g.precision_mean

    def _reply_buffer(self, worker: int) -> tuple[np.ndarray, np.ndarray]:
        if worker not in self._replies:
            dtype, p = wire_dtype(self.wire), self.precision.size
            self._replies[worker] = (np.empty(p, dtype), np.empty(p, dtype))
        return self._replies[worker]

    def reply_to(
        self, worker: int, out: tuple[np.ndarray, np.ndarray] | None = None, accepted: bool = True
    ) -> Reply:
        """Worker ``worker``'s cavity ``theta - lambda_i`` now, written into ``out`` (a pair
        of arrays of the wire's dtype; by default a buffer of this server's, reused for
        this worker's next reply, so the caller copies a reply it keeps)."""
        out = self._reply_buffer(worker) if out is None else out
        site = self.sites[worker]
        cavity(self.precision, self.precision_mean, site.precision, site.precision_mean, *out)
        return Reply(out[0], out[1], self.version, accepted)

    def push(self, msg: Push, out: tuple[np.ndarray, np.ndarray] | None = None) -> Reply:
        """Apply ``theta += Delta`` and reply with the worker's new cavity
        (:meth:`reply_to`'s ``out``); a non-finite delta is rejected and counted, and the
        reply is the cavity the worker had."""
        w = msg.worker
        self.staleness[w].append(self.version - msg.version_seen)
        if not delta_is_finite(msg.delta_precision, msg.delta_precision_mean):
            self.rejected += 1
            return self.reply_to(w, out, accepted=False)
        out = self._reply_buffer(w) if out is None else out
        site = self.sites[w]
        self.version += 1
        self.last_iteration[w] = msg.iteration
        self.pushes[w] += 1
        pass_args = (
            self.precision, self.precision_mean, site.precision, site.precision_mean,
            msg.delta_precision, msg.delta_precision_mean, *out,
        )  # fmt: skip
        averaging = msg.iteration >= self.average_from
        if averaging:
            self.average_count += 1
        if averaging and self.average_mean is not None:
            # running means: avg += (x - avg) / count
            weight = 1.0 / self.average_count
            apply_push_average(*pass_args, self.average_var, self.average_mean, weight)
        else:
            apply_push(*pass_args)
        if averaging and self.average_mean is None:
            self.average_var, self.average_mean = start_average(self.precision, self.precision_mean)
        return Reply(out[0], out[1], self.version)

    def staleness_report(self, wall_seconds: float) -> dict[str, Any]:
        """Per-worker staleness (mean and max versions behind at a push), syncs per second."""
        return {
            "staleness_per_worker": [float(np.mean(x)) if x else 0.0 for x in self.staleness],
            "staleness_max_per_worker": [int(max(x)) if x else 0 for x in self.staleness],
            "syncs_per_second": float(self.pushes.sum()) / max(wall_seconds, 1e-12),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to resume: arrays and scalars as numpy arrays (npz-ready)."""
        n = self.n_workers
        stale = [np.asarray(x, np.int64) for x in self.staleness]
        state = {
            "precision": self.precision,
            "precision_mean": self.precision_mean,
            "prior_precision": self.prior.precision,
            "prior_precision_mean": self.prior.precision_mean,
            "sites_precision": np.stack([self.sites[w].precision for w in range(n)]),
            "sites_precision_mean": np.stack([self.sites[w].precision_mean for w in range(n)]),
            "scalars": np.array(
                [n, self.average_from, self.version, self.rejected, self.average_count], np.int64
            ),
            "last_iteration": self.last_iteration,
            "pushes": self.pushes,
            "staleness": np.concatenate(stale) if stale else np.zeros(0, np.int64),
            "staleness_counts": np.array([len(x) for x in stale], np.int64),
        }
        if self.average_mean is not None:
            state["average_mean"] = self.average_mean
            state["average_var"] = self.average_var
        return state

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, np.ndarray], wire: str = "float32"
    ) -> PosteriorServer:
        """Rebuild a server saved by :meth:`state_dict` (replying in ``wire``'s dtype)."""
        n, average_from, version, rejected, average_count = (int(v) for v in state["scalars"])
        prior = DiagGaussian(state["prior_precision"], state["prior_precision_mean"])
        server = cls(prior, n, average_from, wire)
        server.precision[...] = state["precision"]
        server.precision_mean[...] = state["precision_mean"]
        for w in range(n):
            server.sites[w] = DiagGaussian(
                np.array(state["sites_precision"][w], np.float64),
                np.array(state["sites_precision_mean"][w], np.float64),
            )
        server.version, server.rejected, server.average_count = version, rejected, average_count
        server.last_iteration[...] = state["last_iteration"]
        server.pushes[...] = state["pushes"]
        bounds = np.cumsum(state["staleness_counts"])[:-1]
        server.staleness = [list(map(int, x)) for x in np.split(state["staleness"], bounds)]
        if "average_mean" in state:
            server.average_mean = np.array(state["average_mean"], np.float64)
            server.average_var = np.array(state["average_var"], np.float64)
        return server

    def stats(self) -> dict[str, float]:
        """Version, pushes, rejected pushes and mean staleness (versions behind at a push)."""
        stale = [s for per in self.staleness for s in per]
        return {
            "version": self.version,
            "pushes": int(self.pushes.sum()),
            "rejected": self.rejected,
            "staleness_mean": float(np.mean(stale)) if stale else 0.0,
            "staleness_max": int(max(stale)) if stale else 0,
        }
