"""Fast CPU MLP: batched BLAS GEMMs plus fused Numba epilogues, float32 by default.

The forward/backward pass of the MLP of Hasenclever et al., JMLR 18 (2017), §6, batched over
a leading chain axis ``C`` (docs/method.md §2, "Batched over chains"):

* every GEMM is one ``np.matmul(..., out=...)`` on 3-D arrays; the weights are
  ``(C, n_in, n_out)`` views into the flat parameters (batch stride ``P``) and the weight
  gradients are written straight into ``(C, n_in, n_out)`` views of the caller's gradient
  buffer — numpy's matmul loop calls BLAS ``gemm`` per chain for any operand whose inner
  two axes have unit stride on one side, so no copies are made;
* the elementwise work between GEMMs (bias + ReLU, softmax + log-likelihood + its
  gradient, ReLU backward, bias gradient) runs in Numba kernels built from the scalar
  functions of :mod:`snep.model.epilogues` (the single source of truth, shared with the
  CUDA backend);
* every workspace is preallocated by :class:`CpuMLP`, so the hot path allocates nothing
  but its (C,) result (docs/method.md §3: a few MB of numpy temporaries cost page faults on every
  call).

Each kernel is compiled twice from one Python body: a serial variant and a ``prange``
parallel variant.  :class:`CpuMLP` uses the serial ones unless asked (see its Notes for the
measurements: next to OpenBLAS's threads the parallel ones were slower at every size).

Numba's on-disk cache (``cache=True``) only watches this file; a hash of ``epilogues.py`` is
put into the cached kernels' names so that editing the epilogues recompiles them too.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import prange

from snep.errors import ConfigError
from snep.model import epilogues
from snep.model.spec import ParamSpec

__all__ = [
    "CpuMLP",
    "bias_grad",
    "bias_inplace",
    "bias_relu_inplace",
    "relu_backward_inplace",
    "softmax_inplace",
    "softmax_xent_fwd_bwd",
    "warmup",
]

_FASTMATH = True

# ---------------------------------------------------------------------------------------
# scalar epilogues, compiled for the CPU (inlined by LLVM into the loops below)
# ---------------------------------------------------------------------------------------
_jit_scalar = numba.njit(fastmath=_FASTMATH, cache=True)
_bias_relu = _jit_scalar(epilogues.bias_relu)
_relu_grad = _jit_scalar(epilogues.relu_grad)
_softmax_xent_row = _jit_scalar(epilogues.softmax_xent_row)
_softmax_row = _jit_scalar(epilogues.softmax_row)


# ---------------------------------------------------------------------------------------
# kernel bodies (plain Python; each is compiled below as a serial and a parallel variant)
#
# Biases are addressed as ``flat[c, off:off + n]`` of the whole (C, P) parameter (or
# gradient) array rather than as a strided (C, n) view: Numba types a slice of a row of a
# C-contiguous array as contiguous, so these loops vectorise; with a (C, n) view of stride
# P (layout 'A') they do not (3-4x slower).  Rows are taken as 1-D slices ``z[c, i]`` for
# the same reason.
# ---------------------------------------------------------------------------------------
def _bias_relu_py(z: np.ndarray, p: np.ndarray, off: int) -> None:
    n_chains, n_rows, n = z.shape
    for r in prange(n_chains * n_rows):
        c = r // n_rows
        zr = z[c, r - c * n_rows]
        bc = p[c, off : off + n]
        for j in range(n):
            zr[j] = _bias_relu(zr[j], bc[j])


def _bias_py(z: np.ndarray, p: np.ndarray, off: int) -> None:
    n_chains, n_rows, n = z.shape
    for r in prange(n_chains * n_rows):
        c = r // n_rows
        zr = z[c, r - c * n_rows]
        bc = p[c, off : off + n]
        for j in range(n):
            zr[j] += bc[j]


def _relu_backward_py(dz: np.ndarray, h: np.ndarray) -> None:
    n_chains, n_rows, n = dz.shape
    for r in prange(n_chains * n_rows):
        c = r // n_rows
        i = r - c * n_rows
        dr = dz[c, i]
        hr = h[c, i]
        for j in range(n):
            dr[j] = _relu_grad(hr[j], dr[j])


def _bias_grad_py(dz: np.ndarray, g: np.ndarray, off: int) -> None:
    n_chains, n_rows, n = dz.shape
    for c in prange(n_chains):
        gc = g[c, off : off + n]
        d0 = dz[c, 0]
        for j in range(n):
            gc[j] = d0[j]
        for i in range(1, n_rows):
            di = dz[c, i]
            for j in range(n):
                gc[j] += di[j]


def _relu_backward_bias_grad_py(dz: np.ndarray, h: np.ndarray, g: np.ndarray, off: int) -> None:
    """Fused ``dz *= (h > 0)`` and ``g[c, off:off+n] = Σ_i dz[c, i]``, row by row.

    Two inner loops per row (the row stays in L1) vectorise; one loop that both stores
    ``dz`` and accumulates ``g`` did not (8 µs vs 16 µs at 100 × 500).
    """
    n_chains, n_rows, n = dz.shape
    for c in prange(n_chains):
        gc = g[c, off : off + n]
        for j in range(n):
            gc[j] = 0.0
        for i in range(n_rows):
            di = dz[c, i]
            hi = h[c, i]
            for j in range(n):
                di[j] = _relu_grad(hi[j], di[j])
            for j in range(n):
                gc[j] += di[j]


def _softmax_xent_py(
    logits: np.ndarray, y: np.ndarray, dlogits: np.ndarray, row_ll: np.ndarray
) -> np.ndarray:
    n_chains, n_rows, k = logits.shape
    for c in range(n_chains):
        for i in range(n_rows):
            if y[c, i] < 0 or y[c, i] >= k:
                raise ConfigError(
                    "softmax_xent_fwd_bwd: a label in y is outside [0, K); labels must be "
                    "class indices 0..K-1"
                )
    for r in prange(n_chains * n_rows):
        c = r // n_rows
        i = r - c * n_rows
        row_ll[r] = _softmax_xent_row(logits[c, i], y[c, i], dlogits[c, i])
    # Summed in float64 in a fixed order, so the result is bitwise reproducible.
    out = np.empty(n_chains, dtype=np.float64)
    for c in range(n_chains):
        acc = 0.0
        for i in range(n_rows):
            acc += row_ll[c * n_rows + i]
        out[c] = acc
    return out


def _softmax_py(z: np.ndarray) -> None:
    n_chains, n_rows, _ = z.shape
    for r in prange(n_chains * n_rows):
        c = r // n_rows
        zr = z[c, r - c * n_rows]
        _softmax_row(zr, zr)


# ---------------------------------------------------------------------------------------
# compile each body twice
# ---------------------------------------------------------------------------------------
_EPI_HASH = hashlib.sha256(Path(epilogues.__file__).read_bytes()).hexdigest()[:12]


def _compile(py_func: Callable[..., Any], parallel: bool) -> Any:
    """njit a kernel body; distinct qualnames keep the two variants' cache files apart.

    Numba's cache index is named after the function's qualname and does not record the
    ``parallel`` flag, and it only watches this file's timestamp, so the qualname carries
    the variant and a hash of ``epilogues.py``.
    """
    variant = "par" if parallel else "ser"
    base = py_func.__name__.removesuffix("_py").lstrip("_")
    f = types.FunctionType(
        py_func.__code__, py_func.__globals__, base, py_func.__defaults__, py_func.__closure__
    )
    f.__qualname__ = f"{base}_{variant}_{_EPI_HASH}"
    f.__doc__ = py_func.__doc__
    return numba.njit(parallel=parallel, fastmath=_FASTMATH, cache=True)(f)


class _Kernels:
    """One compiled variant (serial or parallel) of every kernel."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        self.bias_relu = _compile(_bias_relu_py, parallel)
        self.bias = _compile(_bias_py, parallel)
        self.relu_backward = _compile(_relu_backward_py, parallel)
        self.bias_grad = _compile(_bias_grad_py, parallel)
        self.relu_backward_bias_grad = _compile(_relu_backward_bias_grad_py, parallel)
        self.softmax_xent = _compile(_softmax_xent_py, parallel)
        self.softmax = _compile(_softmax_py, parallel)


SERIAL = _Kernels(parallel=False)
"""Serial kernels: the default (see the measurements in :class:`CpuMLP`)."""
PARALLEL = _Kernels(parallel=True)
"""``prange`` kernels, parallel over rows (over chains for the bias gradient)."""


def _kernels(parallel: bool) -> _Kernels:
    return PARALLEL if parallel else SERIAL


# ---------------------------------------------------------------------------------------
# public kernel entry points (checked; the model calls the compiled kernels directly)
# ---------------------------------------------------------------------------------------
def _check3(name: str, a: Any, ref_shape: tuple[int, ...] | None = None) -> None:
    if not isinstance(a, np.ndarray) or a.ndim != 3:
        raise ConfigError(
            f"{name}: got shape {getattr(a, 'shape', None)}, expected a 3-D (C, B, n) ndarray"
        )
    if ref_shape is not None and a.shape != ref_shape:
        raise ConfigError(f"{name}: got shape {a.shape}, expected {ref_shape}")


def _check_bias(name: str, b: Any, n_chains: int, n: int) -> None:
    if not isinstance(b, np.ndarray) or b.shape != (n_chains, n):
        raise ConfigError(
            f"{name}: bias has shape {getattr(b, 'shape', None)}, expected {(n_chains, n)}"
        )


def bias_relu_inplace(z: np.ndarray, b: np.ndarray, *, parallel: bool = False) -> None:
    """``z[c, i, :] = max(z[c, i, :] + b[c, :], 0)`` in place; z (C, B, n), b (C, n)."""
    _check3("bias_relu_inplace", z)
    _check_bias("bias_relu_inplace", b, z.shape[0], z.shape[2])
    _kernels(parallel).bias_relu(z, b, 0)


def bias_inplace(z: np.ndarray, b: np.ndarray, *, parallel: bool = False) -> None:
    """``z[c, i, :] += b[c, :]`` in place (the output layer: no activation)."""
    _check3("bias_inplace", z)
    _check_bias("bias_inplace", b, z.shape[0], z.shape[2])
    _kernels(parallel).bias(z, b, 0)


def relu_backward_inplace(dz: np.ndarray, h: np.ndarray, *, parallel: bool = False) -> None:
    """``dz *= (h > 0)`` in place, with ``h`` the ReLU's output; both (C, B, n)."""
    _check3("relu_backward_inplace", dz)
    _check3("relu_backward_inplace", h, dz.shape)
    _kernels(parallel).relu_backward(dz, h)


def bias_grad(dz: np.ndarray, db_out: np.ndarray, *, parallel: bool = False) -> None:
    """``db_out[c, :] = Σ_i dz[c, i, :]``; dz (C, B, n), db_out (C, n) (may be a view)."""
    _check3("bias_grad", dz)
    _check_bias("bias_grad", db_out, dz.shape[0], dz.shape[2])
    if dz.shape[1] == 0:
        db_out[...] = 0
        return
    _kernels(parallel).bias_grad(dz, db_out, 0)


def softmax_xent_fwd_bwd(
    logits: np.ndarray, y: np.ndarray, dlogits_out: np.ndarray, *, parallel: bool = False
) -> np.ndarray:
    """Softmax log-likelihood and its gradient in one pass over the rows.

    Parameters
    ----------
    logits : ndarray, shape (C, B, K)
    y : ndarray of int, shape (C, B)
        Labels in ``[0, K)``; out-of-range labels raise :class:`ConfigError`.
    dlogits_out : ndarray, shape (C, B, K)
        Written with ``onehot(y) - softmax(logits)``, the gradient of the log-likelihood.

    Returns
    -------
    ndarray, shape (C,), float64
        ``Σ_i log softmax(logits[c, i])[y[c, i]]``, accumulated in float64.
    """
    _check3("softmax_xent_fwd_bwd", logits)
    _check3("softmax_xent_fwd_bwd", dlogits_out, logits.shape)
    if not isinstance(y, np.ndarray) or y.shape != logits.shape[:2] or y.dtype.kind not in "iu":
        raise ConfigError(
            f"softmax_xent_fwd_bwd: y has shape {getattr(y, 'shape', None)}, expected integer "
            f"labels of shape {logits.shape[:2]}"
        )
    row_ll = np.empty(logits.shape[0] * logits.shape[1], np.float64)
    return _kernels(parallel).softmax_xent(logits, y, dlogits_out, row_ll)


def softmax_inplace(z: np.ndarray, *, parallel: bool = False) -> None:
    """Row-wise stable softmax of z (C, N, K) in place."""
    _check3("softmax_inplace", z)
    _kernels(parallel).softmax(z)


def warmup(dtype: Any = np.float32, parallel: bool = False) -> None:
    """Compile (or load from the on-disk cache) the kernels for ``dtype`` on tiny arrays.

    Covers what :class:`CpuMLP` passes: contiguous workspaces and (C, P) parameter arrays,
    for one and for several chains, with int64 labels.  ``parallel=True`` also warms the
    ``prange`` variants; it is off by default because starting Numba's thread pool next to
    OpenBLAS's threads slows the GEMMs down on a small machine.
    """
    dtype = np.dtype(dtype)
    for n_chains in (1, 2):
        flat = np.zeros((n_chains, 7), dtype)
        z = np.zeros((n_chains, 3, 2), dtype)
        dz = np.zeros_like(z)
        y = np.zeros((n_chains, 3), np.int64)
        row_ll = np.empty(n_chains * 3)
        for k in (SERIAL, PARALLEL) if parallel else (SERIAL,):
            k.bias_relu(z, flat, 3)
            k.bias(z, flat, 3)
            k.relu_backward(dz, z)
            k.bias_grad(dz, flat, 3)
            k.relu_backward_bias_grad(dz, z, flat, 3)
            k.softmax_xent(z, y, dz, row_ll)
            k.softmax(z)


# ---------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------
def _blasable(a: np.ndarray) -> bool:
    """True when the inner 2-D matrices of ``a`` have a unit stride (BLAS can take them)."""
    s1, s2 = a.strides[-2:]
    item = a.itemsize
    return (s2 == item and s1 >= item * a.shape[-1]) or (s1 == item and s2 >= item * a.shape[-2])


class CpuMLP:
    """Float32 (by default) ReLU MLP / softmax classifier on the CPU, batched over chains.

    All workspaces for ``n_chains`` chains and minibatches of ``batch_size`` are allocated
    here, so :meth:`loglik_and_grad` allocates nothing but its (C,) result.  Results match
    the float64 oracle :mod:`snep.model.mlp_numpy` to float32 precision and are bitwise
    reproducible from call to call.

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    n_chains : int
        Number of chains ``C`` (leading axis of every argument).
    batch_size : int
        Minibatch size ``B`` per chain.
    dtype : numpy dtype, default float32
        Arithmetic dtype (float32 or float64).  Parameters and the gradient buffer must have
        it; inputs of another dtype are converted into a workspace.
    parallel : bool, default False
        Use the ``prange`` epilogue kernels instead of the serial ones.

    Notes
    -----
    The epilogues are serial by default.  Measured on the 2-core AVX-512 reference machine
    (784-500-300-10, C = 1, batch 100, float32): the serial epilogues take ~35 µs in all
    and the whole pass is 1.00-1.04x its 8 bare GEMMs on one thread (≈2.7 ms) and
    1.02-1.07x on two (≈1.5 ms).  The parallel epilogues were slower at every size tried
    (up to 8 chains × batch 1000): Numba's workers and OpenBLAS's threads, which
    busy-wait after each GEMM, fight for the same cores.  With two threads a call took
    15-40x longer under Numba's OpenMP layer, 1.4x under its workqueue layer, 1.3-1.7x
    with ``OPENBLAS_THREAD_TIMEOUT=4``.  Parallelism therefore comes from BLAS
    (``OPENBLAS_NUM_THREADS``) and, across chains, from batching; with one process per
    core set ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1`` (docs/method.md §3).
    """

    def __init__(
        self,
        spec: ParamSpec,
        n_chains: int,
        batch_size: int,
        dtype: Any = np.float32,
        parallel: bool = False,
    ) -> None:
        if not isinstance(spec, ParamSpec):
            raise ConfigError(f"CpuMLP: spec={spec!r}, expected a ParamSpec")
        for name, v in (("n_chains", n_chains), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"CpuMLP: {name}={v!r}, expected a positive int")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"CpuMLP: dtype={dt}, expected float32 or float64")
        self.spec = spec
        self.n_chains = int(n_chains)
        self.batch_size = int(batch_size)
        self.dtype = dt
        self.parallel = bool(parallel)
        self._k = _kernels(self.parallel)
        c, b = self.n_chains, self.batch_size
        layers = spec.layers
        # hidden activations h_1..h_{L-1} and their deltas, logits and d loglik / d logits
        self._acts = [np.zeros((c, b, lay.n_out), dt) for lay in layers[:-1]]
        self._acts_t = [a.transpose(0, 2, 1) for a in self._acts]
        self._deltas = [np.zeros((c, b, lay.n_out), dt) for lay in layers[:-1]]
        self._logits = np.zeros((c, b, spec.n_outputs), dt)
        self._dlogits = np.zeros((c, b, spec.n_outputs), dt)
        self._row_ll = np.zeros(c * b, np.float64)
        self._x_work: np.ndarray | None = None  # allocated only if x needs converting
        self._b_off = [lay.b_offset for lay in layers]
        # views of the last params / grad buffers seen (the hot loop passes the same ones)
        self._pv_key: np.ndarray | None = None
        self._pv: list[tuple[np.ndarray, np.ndarray]] = []
        self._gv_key: np.ndarray | None = None
        self._gv: list[np.ndarray] = []

    # -- argument checks ------------------------------------------------------------------
    def _check_flat(self, a: Any, name: str, where: str) -> None:
        expect = (self.n_chains, self.spec.size)
        if not isinstance(a, np.ndarray) or a.shape != expect or a.dtype != self.dtype:
            raise ConfigError(
                f"CpuMLP.{where}: {name} has shape {getattr(a, 'shape', None)} and dtype "
                f"{getattr(a, 'dtype', type(a).__name__)}, expected shape {expect} and dtype "
                f"{self.dtype}; allocate it as np.empty({expect}, np.{self.dtype})"
            )
        if a.strides[1] != a.itemsize:
            raise ConfigError(
                f"CpuMLP.{where}: {name} has strides {a.strides}, expected a unit stride along "
                f"the parameter axis ({a.itemsize} bytes); pass np.ascontiguousarray({name})"
            )

    def _param_views(self, params: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(W, W^T) views per layer, cached for the last params array seen."""
        if params is not self._pv_key:
            self._pv = [(w, w.transpose(0, 2, 1)) for w, _ in self.spec.views(params)]
            self._pv_key = params
        return self._pv

    def _grad_views(self, grad: np.ndarray) -> list[np.ndarray]:
        if grad is not self._gv_key:
            self._gv = [w for w, _ in self.spec.views(grad)]
            self._gv_key = grad
        return self._gv

    # -- hot path -------------------------------------------------------------------------
    def _checked_inputs(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> np.ndarray:
        """Validate :meth:`loglik_and_grad`'s arguments (a clear error naming the value and
        what was expected); returns ``x``, copied into a workspace when it is not in
        ``self.dtype`` or not BLAS-compatible."""
        where = "loglik_and_grad"
        self._check_flat(params, "params", where)
        self._check_flat(grad_out, "grad_out", where)
        if not grad_out.flags.writeable:
            raise ConfigError(f"CpuMLP.{where}: grad_out is read-only; pass a writable buffer")
        c, b, d = self.n_chains, self.batch_size, self.spec.n_inputs
        if not isinstance(x, np.ndarray) or x.shape != (c, b, d):
            raise ConfigError(
                f"CpuMLP.{where}: x has shape {getattr(x, 'shape', None)}, expected {(c, b, d)} "
                "(n_chains, batch_size, input width) as given to CpuMLP(...)"
            )
        if not isinstance(y, np.ndarray) or y.shape != (c, b) or y.dtype.kind not in "iu":
            raise ConfigError(
                f"CpuMLP.{where}: y has shape {getattr(y, 'shape', None)} and dtype "
                f"{getattr(y, 'dtype', type(y).__name__)}, expected integer labels of shape "
                f"{(c, b)}"
            )
        if np.may_share_memory(grad_out, params) or np.may_share_memory(grad_out, x):
            raise ConfigError(
                f"CpuMLP.{where}: grad_out overlaps params or x; pass a separate buffer"
            )
        if x.dtype != self.dtype or not _blasable(x):
            if self._x_work is None:
                self._x_work = np.empty((c, b, d), self.dtype)
            np.copyto(self._x_work, x, casting="unsafe")
            x = self._x_work
        return x

    def loglik_and_grad(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> np.ndarray:
        """Minibatch log-likelihood of each chain; its gradient is written into ``grad_out``.

        Parameters
        ----------
        params : ndarray, shape (C, P), dtype ``self.dtype``
            Flat parameters of each chain (unit stride along P).
        x : ndarray, shape (C, B, D)
            Each chain's minibatch (converted into a workspace if not ``self.dtype`` or not
            BLAS-compatible).
        y : ndarray of int, shape (C, B)
            Labels in ``[0, K)``.
        grad_out : ndarray, shape (C, P), dtype ``self.dtype``
            Overwritten (every entry) with ``d loglik[c] / d params[c]``, the gradient of
            the log-likelihood (an ascent direction); must not overlap ``params`` or ``x``.

        Returns
        -------
        ndarray, shape (C,), float64
            ``Σ_b log p(y[c, b] | x[c, b], params[c])``.
        """
        where = "loglik_and_grad"
        x = self._checked_inputs(params, x, y, grad_out)
        k = self._k
        pv = self._param_views(params)
        gw = self._grad_views(grad_out)
        b_off = self._b_off
        last = len(pv) - 1

        # forward: h_{i+1} = relu(h_i @ W_i + b_i); logits = h_L @ W_L + b_L
        h = x
        for i in range(last):
            a = self._acts[i]
            np.matmul(h, pv[i][0], out=a)
            k.bias_relu(a, params, b_off[i])
            h = a
        np.matmul(h, pv[last][0], out=self._logits)
        k.bias(self._logits, params, b_off[last])
        try:
            loglik = k.softmax_xent(self._logits, y, self._dlogits, self._row_ll)
        except ConfigError:
            raise ConfigError(
                f"CpuMLP.{where}: labels span [{y.min()}, {y.max()}], expected class indices "
                f"in [0, {self.spec.n_outputs})"
            ) from None

        # backward: dW_i = h_i^T dz_i (straight into grad_out), db_i = Σ_rows dz_i,
        # dz_{i-1} = (dz_i @ W_i^T) * (h_i > 0)
        dz = self._dlogits
        k.bias_grad(dz, grad_out, b_off[last])
        for i in range(last, -1, -1):
            h_t = x.transpose(0, 2, 1) if i == 0 else self._acts_t[i - 1]
            np.matmul(h_t, dz, out=gw[i])
            if i > 0:
                dh = self._deltas[i - 1]
                np.matmul(dz, pv[i][1], out=dh)
                k.relu_backward_bias_grad(dh, self._acts[i - 1], grad_out, b_off[i - 1])
                dz = dh
        return loglik

    # -- prediction -----------------------------------------------------------------------
    def logits(
        self, params: np.ndarray, x: np.ndarray, out: np.ndarray | None = None, chunk: int = 4096
    ) -> np.ndarray:
        """Output-layer pre-activations of every chain for inputs shared by all chains.

        Parameters
        ----------
        params : ndarray, shape (C, P), dtype ``self.dtype``
        x : ndarray, shape (N, D)
            Converted chunk by chunk to ``self.dtype``.
        out : ndarray, shape (C, N, K), dtype ``self.dtype``, optional
        chunk : int
            Rows of ``x`` per pass (bounds the workspaces to ``C * chunk * max width``).

        Returns
        -------
        ndarray, shape (C, N, K)
        """
        return self._predict(params, x, out, chunk, softmax=False, where="logits")

    def predict_proba(
        self, params: np.ndarray, x: np.ndarray, out: np.ndarray | None = None, chunk: int = 4096
    ) -> np.ndarray:
        """Predictive class probabilities of every chain, shape (C, N, K); see :meth:`logits`."""
        return self._predict(params, x, out, chunk, softmax=True, where="predict_proba")

    def _predict(
        self,
        params: np.ndarray,
        x: np.ndarray,
        out: np.ndarray | None,
        chunk: int,
        softmax: bool,
        where: str,
    ) -> np.ndarray:
        self._check_flat(params, "params", where)
        spec, c, k = self.spec, self.n_chains, self._k
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != spec.n_inputs:
            raise ConfigError(
                f"CpuMLP.{where}: x has shape {getattr(x, 'shape', None)}, expected "
                f"(N, {spec.n_inputs}) (inputs shared by all chains)"
            )
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk <= 0:
            raise ConfigError(f"CpuMLP.{where}: chunk={chunk!r}, expected a positive int")
        n = x.shape[0]
        expect = (c, n, spec.n_outputs)
        if out is None:
            out = np.empty(expect, self.dtype)
        elif not isinstance(out, np.ndarray) or out.shape != expect or out.dtype != self.dtype:
            raise ConfigError(
                f"CpuMLP.{where}: out has shape {getattr(out, 'shape', None)} and dtype "
                f"{getattr(out, 'dtype', None)}, expected shape {expect} and dtype {self.dtype}"
            )
        if n == 0:
            return out
        m = min(int(chunk), n)
        ws = [w for w, _ in spec.views(params)]
        b_off = self._b_off
        widths = [lay.n_out for lay in spec.layers[:-1]]
        acts = [np.empty((c, m, w), self.dtype) for w in widths]
        x_work = np.empty((m, spec.n_inputs), self.dtype)
        for s in range(0, n, m):
            e = min(s + m, n)
            if e - s != m:  # last, shorter chunk: contiguous workspaces of its size
                acts = [np.empty((c, e - s, w), self.dtype) for w in widths]
            xs = x[s:e]
            if xs.dtype != self.dtype or not _blasable(xs):
                np.copyto(x_work[: e - s], xs, casting="unsafe")
                xs = x_work[: e - s]
            h = xs
            for i, a in enumerate(acts):
                np.matmul(h, ws[i], out=a)
                k.bias_relu(a, params, b_off[i])
                h = a
            # the kernels run on C-contiguous arrays; out[:, s:e] is one only when C == 1
            dst = out[:, s:e]
            if not dst.flags.c_contiguous:
                dst = np.empty((c, e - s, spec.n_outputs), self.dtype)
            np.matmul(h, ws[-1], out=dst)
            k.bias(dst, params, b_off[-1])
            if softmax:
                k.softmax(dst)
            if dst.base is not out:
                out[:, s:e] = dst
        return out

    def warmup(self) -> None:
        """Compile the kernels for this model's dtype and run one pass on zeros.

        Also starts the BLAS thread pool, so that the first timed call is representative.
        """
        warmup(self.dtype, parallel=self.parallel)
        params = np.zeros((self.n_chains, self.spec.size), self.dtype)
        grad = np.empty_like(params)
        x = np.zeros((self.n_chains, self.batch_size, self.spec.n_inputs), self.dtype)
        y = np.zeros((self.n_chains, self.batch_size), np.int64)
        self.loglik_and_grad(params, x, y, grad)
        self._pv_key = self._gv_key = None
        self._pv, self._gv = [], []
