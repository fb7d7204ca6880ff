"""The ``cuda`` backend: float32 CuPy arrays, cuBLAS GEMMs, numba.cuda epilogues and the
fused pass of ``kernels/fused_step.cu`` (docs/method.md §2).

Pieces, each tested against its float64 oracle (``bench/gpu_check.py`` on a GPU, the
epilogues also under Numba's CUDA simulator in ``tests/backends``):

* the MLP (Hasenclever et al., JMLR 18 (2017), §6) forward/backward:
  :class:`~snep.backends.cuda.epilogues.EpilogueMLP` with ``cupy.matmul`` (cuBLAS) for
  the GEMMs and the numba.cuda kernels built from :mod:`snep.model.epilogues` between
  them, or (``gemm="tiled"``, ``"tiled-cpp"``, ``"tiled-tf32"``) the hand-written batched
  GEMMs with fused epilogues of :mod:`snep.backends.cuda.gemm` (numba.cuda) and
  ``kernels/mlp_gemm.cu`` (CUDA C++, :mod:`snep.backends.cuda.gemm_raw`);
* the fused sampler/site/moment pass and the Philox noise: :mod:`snep.backends.cuda.fused`
  (CuPy ``RawModule``: the AOT fatbin when built, NVRTC otherwise);
* the server reply (cavity, anchor, chain shift): ``reply_update_float32`` of
  ``kernels/fused_step.cu`` (:func:`snep.backends.cuda.fused.reply_update`), the same
  ``snep::reply_update`` the CPU extension runs.

All arrays of this backend are CuPy arrays; numpy inputs of the MLP (minibatches) are
copied to the device.  Work is queued on CuPy's current stream (the numba.cuda kernels
are launched on the same stream); nothing synchronises with the host except reading the
guard count of :meth:`CudaBackend.fused_step` (optional) and what the caller reads back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.backends.cuda import fused as cuda_fused
from snep.backends.cuda.fused import _cupy
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

cupy = _cupy()  # BackendUnavailableError (naming the pip package) when CuPy is missing

from numba import cuda as _nb_cuda  # noqa: E402  (after the CuPy check)

from snep.backends.cuda.epilogues import EpilogueMLP  # noqa: E402

__all__ = ["CudaBackend", "CudaMLP", "chain_arrays_to_device", "current_numba_stream"]

_streams: dict[int, Any] = {}


def current_numba_stream() -> Any:
    """CuPy's current stream as a numba stream (0, numba's default, for the legacy one)."""
    ptr = int(cupy.cuda.get_current_stream().ptr)
    if ptr == 0:
        return 0
    s = _streams.get(ptr)
    if s is None:
        if len(_streams) > 64:
            _streams.clear()
        s = _streams[ptr] = _nb_cuda.external_stream(ptr)
    return s


class CudaMLP(EpilogueMLP):
    """Batched MLP kernels on CuPy arrays (the :class:`~snep.backends.base.MLPKernels`
    interface).

    ``gemm="matmul"`` (the default): the GEMMs are ``cupy.matmul`` (cuBLAS), the reference
    path of this backend and its speed bar.  ``cupy.matmul`` copies operands that are not
    contiguous (the weight views of the flat parameters, whose chains are ``P`` apart, and
    the transposes of the backward pass) and writes a strided output (the weight-gradient
    views) through a temporary: correct, and a few extra memory passes.  The elementwise
    passes are the numba.cuda kernels of :mod:`snep.backends.cuda.epilogues`.

    ``gemm="tiled"`` (numba.cuda, :mod:`snep.backends.cuda.gemm`), ``"tiled-cpp"`` (the same
    kernel in CUDA C++) or ``"tiled-tf32"`` (its tensor-core variant, TF32 inputs with fp32
    accumulation): hand-written batched GEMMs that read the weight views and transposes in
    place, write the weight gradients straight into ``grad_out`` and fuse the bias, ReLU and
    backward ReLU mask into the GEMMs, without cuBLAS.  They are checked against the
    float64 oracle under the CUDA simulator and by ``bench/gpu_check.py``; ``"matmul"``
    stays the default until the GPU check has shown them correct and fast on a GPU.

    Parameters
    ----------
    spec : ParamSpec
    n_chains, batch_size : int
    gemm : {"matmul", "tiled", "tiled-cpp", "tiled-tf32"}
        GEMM implementation (see :class:`~snep.backends.cuda.epilogues.EpilogueMLP`).

    Notes
    -----
    :meth:`loglik_and_grad` takes ``params`` and ``grad_out`` as C-contiguous cupy float32
    ``(C, P)`` arrays, ``x``/``y`` on the host or the device, and returns a cupy float64
    ``(C,)`` array without waiting for the GPU.
    """

    def __init__(
        self, spec: ParamSpec, n_chains: int, batch_size: int, gemm: str = "matmul"
    ) -> None:
        super().__init__(
            spec,
            n_chains,
            batch_size,
            xp=cupy,
            matmul=cupy.matmul,
            dtype=np.float32,
            stream=current_numba_stream,
            gemm=gemm,
        )


def chain_arrays_to_device(arrays: ChainArrays) -> ChainArrays:
    """A copy of ``arrays`` as C-contiguous cupy float32 arrays."""
    return ChainArrays(
        *(cupy.ascontiguousarray(cupy.asarray(a, dtype=np.float32)) for a in arrays.arrays())
    )


class CudaBackend:
    """Float32 CUDA backend on CuPy arrays.

    Parameters
    ----------
    device : int, optional
        CUDA device to use (made current by the constructor); default: CuPy's current one.
    """

    name = "cuda"
    dtype = np.float32
    #: the array module of this backend's arrays (see :mod:`snep.backends.base`)
    xp = cupy

    def __init__(self, device: int | None = None) -> None:
        if device is not None:
            cupy.cuda.Device(int(device)).use()
        self.device = int(cupy.cuda.Device().id)
        self._graphs: Any = None

    # -- CUDA graphs (snep.backends.cuda.graph) ----------------------------------------------
    def _graph_state(self) -> Any:
        if self._graphs is None:
            from snep.backends.cuda.graph import CudaGraphs

            self._graphs = CudaGraphs()
        return self._graphs

    def step_inputs(self, n_samples: int, batch_size: int) -> Any:
        """A device record of one iteration's minibatch indices and pass scalars, filled from
        pinned host records (:class:`~snep.backends.cuda.graph.CudaStepInputs`)."""
        return self._graph_state().step_inputs(n_samples, batch_size)

    def run_eager(self, body: Any) -> None:
        """Queue ``body`` (one iteration's launches, reading the step record) now, uncaptured."""
        self._graph_state().run_eager(body)

    def capture(self, body: Any) -> Any:
        """Run ``body`` (one iteration's launches) now and return a
        :class:`~snep.backends.cuda.graph.CudaGraph` that replays it; ``body`` must read
        everything that changes between iterations from device memory."""
        return self._graph_state().capture(body)

    @staticmethod
    def fused_step_device_params(
        kind: SamplerKind, arrays: ChainArrays, grad: Any, params: Any
    ) -> None:
        """The fused pass with its scalars read from device memory (capturable); see
        :func:`cuda_fused.fused_step_device_params`."""
        cuda_fused.fused_step_device_params(kind, arrays, grad, params)

    # -- host/device ------------------------------------------------------------------------
    @staticmethod
    def to_host(a: Any) -> np.ndarray:
        """A numpy copy of a device array (waits for the work that writes it)."""
        return cupy.asnumpy(a)

    @staticmethod
    def to_device(a: Any, dtype: Any = None) -> Any:
        """``a`` (host or device) as a cupy array of ``dtype``."""
        return cupy.asarray(a, dtype=dtype)

    @staticmethod
    def synchronize() -> None:
        """Wait for the work queued on the current stream (before MPI reads device memory:
        it does not follow CUDA streams)."""
        cupy.cuda.get_current_stream().synchronize()

    @staticmethod
    def take_fired() -> int:
        """Guard firings counted on the device since the last read (a host sync)."""
        return cuda_fused.take_fired()

    # -- MLP ------------------------------------------------------------------------------
    def mlp(self, spec: ParamSpec, n_chains: int, batch_size: int, gemm: str = "matmul") -> CudaMLP:
        """MLP kernels for ``n_chains`` chains and minibatches of ``batch_size``; ``gemm``
        picks the GEMMs (:class:`CudaMLP`)."""
        return CudaMLP(spec, n_chains, batch_size, gemm=gemm)

    # -- fused pass and noise ---------------------------------------------------------------
    def fused_step(
        self,
        kind: SamplerKind,
        arrays: ChainArrays,
        grad: Any,
        scalars: PassScalars,
        noise: Any = None,
        *,
        return_fired: bool = False,
    ) -> int | None:
        """One fused sampler/moment/site pass in place; see :func:`cuda_fused.fused_step`.

        By default nothing waits for the GPU: the guard count stays on the device until
        :meth:`take_fired` (the worker reads it at each sync); ``return_fired=True``
        waits and returns it.
        """
        return cuda_fused.fused_step(
            kind, arrays, grad, scalars, noise=noise, return_fired=return_fired
        )

    def normals(self, n_chains: int, n_params: int, seed: int, stream: int, step: int) -> Any:
        """The standard normals the fused pass draws for (seed, stream, step), (C, P) cupy."""
        out = cupy.empty((n_chains, n_params), np.float32)
        return cuda_fused.fill_normal(out, seed, stream, step)

    # -- server reply -------------------------------------------------------------------------
    def apply_reply(
        self,
        arrays: ChainArrays,
        cavity: tuple[Any, Any],
        scale_momentum: bool,
    ) -> None:
        """A server reply, in place: the ``reply_update_float32`` kernel
        (:func:`snep.backends.cuda.fused.reply_update`), which runs ``snep::reply_update``
        of ``kernels/snep_fused.cuh`` as the CPU extension does (its oracle is
        :func:`snep.maths.oracles.reply_update_reference`).

        The cavity becomes the reply's (rounded to float32), the anchor moves with the
        cavity, and the chain is shifted to keep its standardised position under
        ``cavity + site``: ``x <- m_new + sqrt(v_new / v_old) (x - m_old)`` (docs/method.md §1.3);
        with ``scale_momentum`` (SGHMC) the momentum ``s1`` is scaled too.  ``cavity`` is
        a (precision, precision_mean) pair of shape (P,) or (C, P), host or device, in the
        wire's dtype.
        """
        cavity_prec, cavity_pm = (
            cupy.ascontiguousarray(cupy.asarray(c, np.float32)) for c in cavity
        )
        cuda_fused.reply_update(arrays, cavity_prec, cavity_pm, scale_momentum)
