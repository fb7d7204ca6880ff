"""Messages between SNEP workers and the posterior server (docs/method.md §1.4).

Plain arrays and integers only, so that a transport can send them as typed
buffers (the in-process runner passes them directly; MPI sends the arrays).

The arrays are already in the wire's dtype (``train.wire``, float32 by default): a
worker rounds its delta before it pushes and counts the rounded delta as sent, and the
server rounds the cavity it replies with, so that the in-process runner and MPI see the
same numbers and a synchronous MPI run equals the in-process run bitwise.  Rounding a
delta loses nothing for good: what the rounding left out stays in the difference
between the worker's site and what it has sent, and goes with its next push.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = ["WIRE_DTYPES", "Push", "Reply", "Worker", "wire_dtype"]

WIRE_DTYPES = ("float32", "float64")


def wire_dtype(wire: str) -> np.dtype:
    """The numpy dtype of message arrays for ``train.wire``."""
    if wire not in WIRE_DTYPES:
        raise ValueError(f"train.wire = {wire!r}: expected one of {WIRE_DTYPES}")
    return np.dtype(wire)


@dataclass
class Push:
    """A worker's change of its site since its last push: ``Delta = lambda_i - lambda_i^sent``."""

    worker: int
    iteration: int
    delta_precision: np.ndarray  # (P,) the wire's dtype
    delta_precision_mean: np.ndarray  # (P,) the wire's dtype
    version_seen: int  # the posterior version the worker held when it pushed


@dataclass
class Reply:
    """The server's answer to a push (or to registration): for SNEP the answered worker's
    cavity ``c_i = theta - lambda_i`` after the push, in natural parameters; for the
    point-estimate baselines the centre in ``precision`` (and zeros)."""

    precision: np.ndarray  # (P,) the wire's dtype
    precision_mean: np.ndarray  # (P,) the wire's dtype
    version: int
    accepted: bool = True


class Worker(Protocol):
    """What a transport (in-process or MPI) needs of a worker: the SNEP/EP worker
    (:class:`~snep.algorithm.worker.SnepWorker`) and the point-estimate baselines'
    (:mod:`snep.algorithm.baselines`) alike."""

    worker: int  #: id in [0, n_workers)
    iteration: int  #: completed iterations
    version: int  #: the server version of the last reply
    in_flight: bool  #: a push awaits its reply
    pushes: int
    guard_fired: int
    n_params: int
    config: Any
    backend: Any
    xp: Any  #: the array module of the worker's arrays

    @property
    def last_loglik(self) -> float: ...  # mean minibatch log-likelihood per example

    def initial_site(self) -> Any: ...  # what registration sends (a DiagGaussian)

    def start(self, reply: Reply) -> None: ...  # the registration reply

    def step(self) -> Push | None: ...  # one iteration; a push when one is due

    def make_push(self) -> Push: ...

    def receive(self, reply: Reply) -> None: ...

    def bind_push_arrays(self, precision: Any, precision_mean: Any) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def diagnostics(self) -> dict[str, float]: ...  # cross-chain R-hat/ESS (NaN: none)

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: Any) -> None: ...
