"""Training in this process: :func:`fit`, and the checks a run passes before it starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from snep.backends import Backend, get_backend
from snep.backends.base import is_host, require_graph_capture
from snep.config import METHODS, Config
from snep.data.dataset import Dataset
from snep.errors import ConfigError
from snep.run.setup import FitResult, build_spec

__all__ = ["blas_threads", "check_backend", "fit"]

Callback = Callable[[dict[str, Any]], None]


def fit(
    config: Config,
    dataset: Dataset,
    backend: Backend | str | None = None,
    callback: Callback | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Train with ``config.train.method`` in this process (:data:`snep.config.METHODS`).

    ``checkpoint``/``resume``: see :func:`snep.transport.inprocess.run_in_process`
    (SNEP and EP only).
    ``train.iterations = 0`` is derived from ``train.epochs`` and the size of
    ``dataset`` (:meth:`~snep.config.Config.with_data_size`).
    """
    config = config.with_data_size(dataset.n_train)
    if isinstance(backend, str) or backend is None:
        backend = get_backend(backend or config.train.backend, config.train.threads)
    check_backend(config, backend)
    method = METHODS[config.train.method]
    if resume is not None and not method.checkpointed:
        raise ConfigError(
            f"resume is for the methods that checkpoint (SNEP, EP); train.method = "
            f"{method.name!r} has no checkpoint"
        )
    with blas_threads(config, build_spec(config, dataset).size):
        if not method.distributed:
            from snep.algorithm.adam import run_adam

            return run_adam(config, dataset, backend, callback)
        from snep.transport.inprocess import run_in_process

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
