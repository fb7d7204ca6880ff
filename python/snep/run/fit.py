"""Training in this process: :func:`fit`, and the checks a run passes before it starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from snep.backends import Backend, get_backend
from snep.backends.base import is_host, require_graph_capture
from snep.config import METHODS, Config
from snep.data.arrays import as_model_data
from snep.errors import ConfigError
from snep.model.protocol import check_model
from snep.run.setup import FitResult, build_spec
from snep.transport.env import mpi_world_size

__all__ = ["blas_threads", "check_backend", "fit"]

Callback = Callable[[dict[str, Any]], None]


def fit(
    config: Config,
    data: Any,
    backend: Backend | str | None = None,
    callback: Callback | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    *,
    model: Any = None,
) -> FitResult | None:
    """Train with ``config.train.method`` (:data:`snep.config.METHODS`): the public entry.

    Parameters
    ----------
    config : Config
        The run's configuration (``train.iterations = 0``: derived from
        ``train.epochs`` and the size of ``data``).
    data : Dataset or arrays
        A :class:`~snep.data.dataset.Dataset` (the MLP's classification data); with
        ``model``, also ``(x, y)``, ``(x, y, x_test, y_test)`` or a mapping with those
        keys (:func:`snep.data.arrays.as_model_data`).
    backend : Backend or str, optional
        Default ``train.backend``.
    callback : callable, optional
        Receives each evaluation record (a dict) as it is made.
    checkpoint, resume : path, optional
        Checkpoint file to write, and one to continue from (methods that checkpoint:
        SNEP and EP); under MPI, ``checkpoint`` names a directory and any ``resume``
        continues from it.
    model : object, optional
        Your own model instead of the MLP (:mod:`snep.model.protocol`: ``n_params``
        and ``loglik_and_grad``, optionally ``predict_proba`` and ``init_params``).

    Returns
    -------
    FitResult or None
        The posterior, the metrics history and counters.  Under ``mpiexec`` (more
        than one rank) the run is ``train.server_ranks`` server ranks (one by default)
        and ``train.workers`` worker ranks: rank 0 returns the result, the others
        ``None``.
    """
    if model is not None:
        data = as_model_data(data)
    config = config.with_data_size(data.n_train)
    method = METHODS[config.train.method]
    if resume is not None and not method.checkpointed:
        raise ConfigError(
            f"resume is for the methods that checkpoint (SNEP, EP); train.method = "
            f"{method.name!r} has no checkpoint"
        )
    if mpi_world_size() > 1:
        from snep.transport.launch import run_mpi

        return run_mpi(
            config, data, backend if not isinstance(backend, str) else None, callback,
            checkpoint_dir=None if checkpoint is None else Path(checkpoint),
            resume=resume is not None, model=model,
        )  # fmt: skip
    if isinstance(backend, str) or backend is None:
        backend = get_backend(backend or config.train.backend, config.train.threads)
    check_backend(config, backend, model=model)
    n_params = build_spec(config, data).size if model is None else check_model(model)
    with blas_threads(config, n_params):
        if not method.distributed:
            from snep.algorithm.adam import run_adam

            return run_adam(config, data, backend, callback, model=model)
        from snep.transport.inprocess import run_in_process

        return run_in_process(config, data, backend, callback, checkpoint, resume, model=model)


def check_backend(config: Config, backend: Backend, mpi: bool = False, model: Any = None) -> None:
    """Whether ``backend`` can run ``config`` (in process, or a rank of an MPI run with
    ``mpi``), as a clear :class:`ConfigError` before anything starts.

    A device backend (``cuda``) runs the SNEP and EP workers; the baselines (Adam, A-SGD,
    EASGD) are written for host arrays.  ``train.cuda_graph`` needs a backend that
    captures CUDA graphs, and a ``train.gemm`` other than ``"matmul"`` a device backend.
    ``train.cuda_aware_mpi`` applies to MPI runs only.
    """
    if model is not None and not is_host(backend):
        raise ConfigError(
            f"a user's model runs on the host backends ('cpu', 'numpy'), not on "
            f"{backend.name!r}: its loglik_and_grad receives NumPy arrays; use backend 'cpu'"
        )
    if config.train.cuda_aware_mpi and not mpi:
        raise ConfigError(
            "train.cuda_aware_mpi = true applies to runs under mpiexec (it hands MPI device "
            "buffers); an in-process run sends no messages: set it to false"
        )
    if not is_host(backend) and not METHODS[config.train.method].posterior:
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
