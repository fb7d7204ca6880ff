"""One :class:`RunSetup` for both transports: the pieces a run is built from.

The in-process transport (:mod:`snep.transport.inprocess`) and the MPI one
(:mod:`snep.transport.launch`) build the same run from the same configuration: the
parameter layout, the prior ``theta_0`` (docs/method.md §1.1), the shared initial
position, the shards, each worker's model kernels, the worker and server classes of
``train.method`` (:data:`snep.config.METHODS`) and, at the end, the
:class:`~snep.posterior.Posterior` of the server.  Building them here, once, is what
makes a synchronous MPI run equal the in-process run bitwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snep.algorithm.worker import chains_per_worker, worker_seed
from snep.backends import Backend, MLPKernels, get_backend
from snep.config import METHODS, Config, Method
from snep.data.dataset import Dataset
from snep.data.sharding import make_shards
from snep.errors import ConfigError
from snep.maths.family import DiagGaussian
from snep.model.protocol import FlatSpec, check_model
from snep.model.spec import ParamSpec, init_params
from snep.posterior import Posterior

__all__ = [
    "FitResult",
    "RunSetup",
    "build_spec",
    "initial_position",
    "make_server",
    "make_worker",
    "model_factory",
    "prior_for",
    "server_posterior",
]


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


def prior_for(config: Config, spec: ParamSpec) -> DiagGaussian:
    """``theta_0``: the prior N(0, ``snep.prior_var`` I) in natural parameters."""
    p = spec.size
    return DiagGaussian(np.full(p, 1.0 / config.snep.prior_var), np.zeros(p))


def initial_position(config: Config, spec: ParamSpec, model: Any = None) -> np.ndarray:
    """The position every worker starts from (the same on every rank and in process):
    the MLP's initialisation, or a user's ``model.init_params(rng)`` (default zeros)."""
    rng = np.random.default_rng(worker_seed(config.train.seed, 2**31) % 2**63)
    if model is None:
        return init_params(spec, rng)
    if not hasattr(model, "init_params"):
        return np.zeros(spec.size)
    x0 = np.asarray(model.init_params(rng), np.float64)
    if x0.shape != (spec.size,):
        raise ConfigError(
            f"model {type(model).__name__}.init_params returned shape {x0.shape}; expected "
            f"({spec.size},) (n_params)"
        )
    return x0


def model_factory(config: Config, backend: Backend, spec: ParamSpec) -> Callable[[int], MLPKernels]:
    """``batch -> MLP kernels`` for a worker's chains (:func:`chains_per_worker`), with
    ``train.gemm``'s GEMMs on a device backend."""
    gemm, chains = config.train.gemm, chains_per_worker(config)
    if gemm == "matmul":
        return lambda batch: backend.mlp(spec, chains, batch)
    return lambda batch: backend.mlp(spec, chains, batch, gemm=gemm)


def make_worker(
    config: Config,
    backend: Backend,
    make_model: Callable[[int], MLPKernels],
    worker_id: int,
    n_workers: int,
    x: np.ndarray,
    y: np.ndarray,
    x0: np.ndarray,
) -> Any:
    """Worker ``worker_id`` of ``train.method`` on the shard ``(x, y)``."""
    worker_class = METHODS[config.train.method].load("worker")
    model = make_model(min(config.train.batch_size, len(y)))
    return worker_class(worker_id, n_workers, model, x, y, config, backend, x0)


def make_server(config: Config, prior: DiagGaussian, x0: np.ndarray, n_workers: int) -> Any:
    """The server of ``train.method``: the posterior server, or a baseline's."""
    server_class = METHODS[config.train.method].load("server")
    return server_class.from_config(config, prior, x0, n_workers)


def server_posterior(spec: ParamSpec | FlatSpec, server: Any, model: Any = None) -> Posterior:
    """The :class:`Posterior` a server holds (copies, so the run may go on)."""
    return Posterior(
        spec,
        np.array(server.precision),
        np.array(server.precision_mean),
        None if server.average_mean is None else server.average_mean.copy(),
        None if server.average_var is None else server.average_var.copy(),
        model=model,
    )


@dataclass
class RunSetup:
    """The pieces of one run of ``config`` on ``dataset`` with ``backend``.

    Build with :meth:`create`, which resolves the run length from the data set's size
    (:meth:`snep.config.Config.with_data_size`) and the backend from the config.  With a
    user's ``model`` (:mod:`snep.model.protocol`) it replaces the MLP: its ``n_params``
    flat parameters, its likelihood on every worker, its ``predict_proba`` for scoring.
    """

    config: Config
    dataset: Any
    backend: Backend
    spec: ParamSpec | FlatSpec
    model: Any = None

    @classmethod
    def create(
        cls,
        config: Config,
        dataset: Any,
        backend: Backend | str | None = None,
        model: Any = None,
    ) -> RunSetup:
        """The setup of ``config`` on ``dataset``; ``backend`` by name or instance
        (default ``train.backend``); ``model``: a user's model instead of the MLP."""
        config = config.with_data_size(dataset.n_train)
        if backend is None or isinstance(backend, str):
            backend = get_backend(backend or config.train.backend, config.train.threads)
        if model is None:
            return cls(config, dataset, backend, build_spec(config, dataset))
        return cls(config, dataset, backend, FlatSpec(check_model(model)), model)

    @property
    def method(self) -> Method:
        """What ``train.method`` is (:data:`snep.config.METHODS`)."""
        return METHODS[self.config.train.method]

    def prior(self) -> DiagGaussian:
        """``theta_0`` (:func:`prior_for`)."""
        return prior_for(self.config, self.spec)

    def initial_position(self) -> np.ndarray:
        """The shared initial position (:func:`initial_position`)."""
        return initial_position(self.config, self.spec, self.model)

    def shard_indices(self) -> list[np.ndarray]:
        """Each worker's training rows (``train.sharding``, seeded by ``train.seed``)."""
        t = self.config.train
        return make_shards(self.dataset.y_train, t.workers, t.sharding, t.dirichlet_alpha, t.seed)

    def shard(self, worker_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Worker ``worker_id``'s data (copies: an MPI rank keeps only its own)."""
        idx = self.shard_indices()[worker_id]
        return self.dataset.x_train[idx].copy(), self.dataset.y_train[idx].copy()

    def shards(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every worker's data, in worker order."""
        d = self.dataset
        return [(d.x_train[idx], d.y_train[idx]) for idx in self.shard_indices()]

    def model_factory(self) -> Callable[[int], MLPKernels]:
        """``batch -> MLP kernels`` of a worker (:func:`model_factory`), or the user's
        model (shared: the contract of :mod:`snep.model.protocol`)."""
        if self.model is not None:
            return lambda batch: self.model
        return model_factory(self.config, self.backend, self.spec)

    def make_worker(self, worker_id: int, x: np.ndarray, y: np.ndarray) -> Any:
        """Worker ``worker_id`` on the shard ``(x, y)`` (:func:`make_worker`)."""
        return make_worker(
            self.config, self.backend, self.model_factory(), worker_id,
            self.config.train.workers, x, y, self.initial_position(),
        )  # fmt: skip

    def make_server(self) -> Any:
        """The server of the run (:func:`make_server`)."""
        return make_server(
            self.config, self.prior(), self.initial_position(), self.config.train.workers
        )

    def evaluator(self) -> Any:
        """The metrics of a server's posterior on the evaluation split."""
        from snep.evaluate import Evaluator

        return Evaluator(self.spec, self.dataset, self.backend, self.config, self.model)

    def to_posterior(self, server: Any) -> Posterior:
        """The posterior the server holds (:func:`server_posterior`)."""
        return server_posterior(self.spec, server, self.model)
