"""The ``cuda`` backend (docs/method.md §2): CuPy arrays, the fused pass and the MLP's
GEMMs and epilogues as CUDA kernels.

``backend`` (:class:`~snep.backends.cuda.backend.CudaBackend`; imports CuPy),
``fused`` (the fused pass's launcher and the kernel sources), ``gemm`` (numba.cuda
GEMM), ``gemm_raw`` (the CUDA C++ GEMM through CuPy), ``gemm_common`` (their shared
tiling and its oracle), ``epilogues`` (the MLP on the device), ``graph`` (CUDA graphs
of a worker iteration).  This file imports nothing, so that the host-only parts
(``fused.pack_params``, used by every worker) load without CuPy.
"""
