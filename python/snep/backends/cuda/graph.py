"""CUDA-graph capture of a worker iteration for the ``cuda`` backend (docs/method.md §2, §4).

A SNEP iteration (Hasenclever et al., JMLR 18 (2017): minibatch gather, MLP
forward/backward, fused sampler/site/moment pass, per sample) is a fixed sequence of
small kernels; launching them one by one costs more host time than the GPU spends
on them at small batch sizes.  Captured once into a CUDA graph, an iteration is one
``cudaGraphLaunch``.  Without ``train.cuda_graph`` the worker runs the same launches
uncaptured (:meth:`CudaGraphs.run_eager`), from the same step record.

A graph replays the kernels with the arguments of the capture, so everything that
changes from one iteration to the next must be read from device memory when the kernels
run.  Per iteration that is (:func:`step_record_dtype`): the minibatch indices of each
sample and each sample's ``struct FusedParams`` (step counter, bias corrections, site
step, accumulate flags).  The host writes them into one record of a ring of pinned host
buffers and copies the record asynchronously into a fixed device buffer
(:class:`CudaStepInputs`) before launching the graph; the gather reads its indices there
and the fused pass its scalars (``fused_step_dparams_float32``).  Nothing waits for the
GPU inside an iteration: the host blocks only when it is about to reuse a ring slot
whose copy has not run yet, i.e. when it is ``depth`` iterations ahead of the GPU.

The graph runs on its own stream; :class:`CudaGraph` orders it after the work queued
on the current stream and the current stream after it (two events per launch), so a
server reply or an evaluation queued between iterations sees the right arrays.
Temporaries of the captured work come from a memory pool kept for the graphs alone,
so nothing else can be handed the blocks a replay writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from snep.backends.cuda.fused import FUSED_PARAMS_DTYPE, _cupy
from snep.errors import ConfigError

__all__ = ["CudaGraph", "CudaGraphs", "CudaStepInputs", "step_record_dtype"]

#: pinned host records in flight before the host waits for the GPU
DEFAULT_DEPTH = 8


def step_record_dtype(n_samples: int, batch_size: int) -> np.dtype:
    """The inputs of one captured iteration: ``idx`` (n_samples, batch_size) int64
    minibatch indices and ``params`` (n_samples,) ``struct FusedParams``, in that order
    (both 8-byte aligned, so the record can be copied as bytes)."""
    if int(n_samples) < 1 or int(batch_size) < 1:
        raise ConfigError(
            f"step_record_dtype: n_samples={n_samples}, batch_size={batch_size}; both must be >= 1"
        )
    return np.dtype(
        [
            ("idx", np.int64, (int(n_samples), int(batch_size))),
            ("params", FUSED_PARAMS_DTYPE, (int(n_samples),)),
        ]
    )


class CudaStepInputs:
    """A device buffer holding one iteration's :func:`step_record_dtype` record, filled
    from a ring of pinned host records by asynchronous copies on the graph stream.

    Use: ``rec = inputs.host()`` (the next free host record), fill ``rec["idx"]`` and
    ``rec["params"]``, then :meth:`upload`; kernels read :attr:`idx` and :meth:`params`.
    """

    def __init__(self, n_samples: int, batch_size: int, stream: Any, depth: int = DEFAULT_DEPTH):
        cupy = _cupy()
        import cupyx

        self.dtype = step_record_dtype(n_samples, batch_size)
        self.stream = stream
        nbytes = self.dtype.itemsize
        self.device = cupy.zeros(nbytes, np.uint8)
        idx_bytes = self.dtype.fields["idx"][0].itemsize
        #: device view of the indices, (n_samples, batch_size) int64
        self.idx = self.device[:idx_bytes].view(np.int64).reshape(n_samples, batch_size)
        self._params_off = self.dtype.fields["params"][1]
        self._slots = [cupyx.empty_pinned((nbytes,), np.uint8) for _ in range(int(depth))]
        self._events: list[Any] = [None] * len(self._slots)
        self._next = 0
        self._current = -1

    def params(self, k: int) -> Any:
        """Device bytes of sample ``k``'s ``struct FusedParams``."""
        size = FUSED_PARAMS_DTYPE.itemsize
        off = self._params_off + int(k) * size
        return self.device[off : off + size]

    def host(self) -> np.ndarray:
        """The next host record (0-d, of :attr:`dtype`), once its previous copy has run."""
        r = self._next
        if self._events[r] is not None:
            self._events[r].synchronize()  # only when the host is `depth` records ahead
        self._current = r
        self._next = (r + 1) % len(self._slots)
        return self._slots[r].view(self.dtype).reshape(())

    def upload(self) -> None:
        """Queue the copy of the record last returned by :meth:`host` on the graph stream."""
        r = self._current
        if r < 0:
            raise ConfigError("CudaStepInputs.upload: call host() and fill the record first")
        self.device.set(self._slots[r], stream=self.stream)
        cupy = _cupy()
        if self._events[r] is None:
            self._events[r] = cupy.cuda.Event(disable_timing=True)
        self._events[r].record(self.stream)
        self._current = -1


class CudaGraph:
    """A captured iteration; :meth:`launch` replays it on the graph stream, ordered
    after the current stream's work and before its later work."""

    def __init__(self, graph: Any, owner: CudaGraphs) -> None:
        self.graph = graph
        self.owner = owner

    def launch(self) -> None:
        owner = self.owner
        owner.enter()
        self.graph.launch(stream=owner.stream)
        owner.leave()


class CudaGraphs:
    """Per-backend graph state: the graph stream, its memory pool and the ordering events.

    :meth:`capture` runs ``body`` once now (the current iteration: it also compiles and
    loads every kernel and fills the pool) and captures a second, unexecuted, pass into a
    graph for the following iterations.
    """

    def __init__(self) -> None:
        cupy = _cupy()
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()
        self._before = cupy.cuda.Event(disable_timing=True)
        self._after = cupy.cuda.Event(disable_timing=True)

    def enter(self) -> None:
        """Make the graph stream wait for the work queued so far on the current stream."""
        cupy = _cupy()
        self._before.record(cupy.cuda.get_current_stream())
        self.stream.wait_event(self._before)

    def leave(self) -> None:
        """Make the current stream wait for the work queued so far on the graph stream."""
        cupy = _cupy()
        self._after.record(self.stream)
        cupy.cuda.get_current_stream().wait_event(self._after)

    def step_inputs(self, n_samples: int, batch_size: int) -> CudaStepInputs:
        return CudaStepInputs(n_samples, batch_size, self.stream)

    def run_eager(self, body: Callable[[], None]) -> None:
        """Queue ``body``'s launches now on the graph stream (after the step record's copy),
        ordered against the current stream, without capturing them."""
        self.enter()
        with self.stream:
            body()
        self.leave()

    def capture(self, body: Callable[[], None]) -> CudaGraph:
        cupy = _cupy()
        stream = self.stream
        self.enter()
        with cupy.cuda.using_allocator(self.pool.malloc), stream:
            body()  # this iteration, eagerly
            stream.begin_capture()
            try:
                body()
            except BaseException:
                try:
                    stream.end_capture()
                except Exception:  # an invalidated capture: the body's error is the news
                    pass
                raise
            graph = stream.end_capture()
        self.leave()
        return CudaGraph(graph, self)
