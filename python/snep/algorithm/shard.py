"""A worker's shard of the data and its chains' minibatch gradients.

Every worker of Hasenclever et al. 2017 (§3: SNEP with the posterior server; and the
baselines of docs/method.md §1.7) does the same thing with its data: each chain
draws a minibatch of the shard (without replacement within an epoch,
:class:`~snep.data.minibatch.MinibatchStream`) and the model returns the
minibatch log-likelihood and its gradient at each chain's position.  This module
does that once; :class:`~snep.algorithm.worker.SnepWorker`, the point-estimate
workers of :mod:`snep.algorithm.baselines` and the one-worker Adam baseline
(:mod:`snep.algorithm.adam`) each hold a :class:`LocalShard`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snep.backends import Backend, MLPKernels
from snep.backends.base import array_module, to_device
from snep.data.minibatch import MinibatchStream, gather_batch

__all__ = ["LocalShard", "chain_stream_seed"]

#: the keys of a minibatch stream's state, in the order a checkpoint stores them
STREAM_KEYS = ("n_examples", "batch_size", "seed", "epoch", "position")


def chain_stream_seed(seed: int, chain: int) -> int:
    """The minibatch-stream seed of chain ``chain`` of a worker with noise seed ``seed``
    (chain 0 keeps the single-chain worker's stream, so one chain reproduces it)."""
    if chain == 0:
        return seed % (2**63)
    words = np.random.SeedSequence([seed % (2**63), chain, 0x4348]).generate_state(2, np.uint32)
    return (int(words[0]) | (int(words[1]) << 32)) % (2**63)


class LocalShard:
    """A shard, one minibatch stream per chain, the batch buffers and the gradient.

    Parameters
    ----------
    x, y : ndarray
        The shard: inputs (N_i, ...) and targets (N_i,); integer class labels are kept
        as int32 (the MLP's kernels), other targets and the inputs in the backend's
        dtype.
    n_chains : int
        Chains drawing minibatches (the leading axis of the batch and the gradient).
    batch_size : int
        Requested minibatch size; a shard smaller than it gives batches of the shard.
    seed : int
        The worker's seed; chain ``c`` draws from ``chain_stream_seed(seed, c)``.
    model : MLPKernels
        ``loglik_and_grad(x (C, P), batch_x, batch_y, grad_out)`` for ``C`` chains.
    backend : Backend
        Where the chains compute; a device backend also gets a copy of the shard and
        device batch buffers (the minibatch is gathered there, :meth:`gather_device`).
    n_params : int
        Parameters per chain (the gradient's width).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        n_chains: int,
        batch_size: int,
        seed: int,
        model: MLPKernels,
        backend: Backend,
        n_params: int,
    ) -> None:
        dtype = backend.dtype
        self.model = model
        self.x_data = np.ascontiguousarray(x, dtype=dtype)
        y_dtype = np.int32 if np.asarray(y).dtype.kind in "biu" else dtype
        self.y_data = np.ascontiguousarray(y, dtype=y_dtype)
        self.n_local = n_local = len(self.y_data)
        self.batch_size = B = min(batch_size, n_local)
        self.n_chains = C = n_chains
        self.streams = [MinibatchStream(n_local, B, chain_stream_seed(seed, c)) for c in range(C)]
        xp = array_module(backend)
        self.on_device = xp is not np
        self.batch_x = xp.zeros((C, B, *self.x_data.shape[1:]), dtype)
        self.batch_y = xp.zeros((C, B), y_dtype)
        self.grad = xp.zeros((C, n_params), dtype)
        if self.on_device:  # the shard is copied once; a minibatch is gathered there
            self._x_dev = to_device(backend, self.x_data, dtype)
            self._y_dev = to_device(backend, self.y_data, y_dtype)

    def gather(self) -> None:
        """Each chain's next minibatch into ``batch_x`` / ``batch_y`` (host arrays)."""
        for c, stream in enumerate(self.streams):
            idx = stream.next_indices()
            gather_batch(self.x_data, self.y_data, idx, self.batch_x[c], self.batch_y[c])

    def next_indices(self, out: np.ndarray) -> None:
        """Each chain's next minibatch indices into ``out`` (C * B,), chain after chain
        (a device backend's host record; :meth:`gather_device` takes them there)."""
        B = self.batch_size
        for c, stream in enumerate(self.streams):
            out[c * B : (c + 1) * B] = stream.next_indices()

    def gather_device(self, xp: Any, idx: Any) -> None:
        """The minibatch of indices ``idx`` (C * B, on the device) into the device
        batch buffers."""
        C, B = self.n_chains, self.batch_size
        flat_x = self.batch_x.reshape(C * B, self.batch_x.shape[2])
        xp.take(self._x_dev, idx, axis=0, out=flat_x)
        xp.take(self._y_dev, idx, axis=0, out=self.batch_y.reshape(C * B))

    def loglik_and_grad(self, x: Any) -> Any:
        """The minibatch log-likelihood per chain at positions ``x`` (C, P), its gradient
        into :attr:`grad`, for the batch in the buffers."""
        return self.model.loglik_and_grad(x, self.batch_x, self.batch_y, self.grad)

    def stream_state(self) -> np.ndarray:
        """Every chain's stream state as an int64 array (C, 5) (npz-ready)."""
        return np.array(
            [[st[k] for k in STREAM_KEYS] for st in (s.state_dict() for s in self.streams)],
            np.int64,
        )

    def load_stream_state(self, rows: np.ndarray, who: str) -> None:
        """Restore :meth:`stream_state`'s array; ``who`` names the owner in errors."""
        rows = np.asarray(rows).reshape(-1, len(STREAM_KEYS))
        if len(rows) != self.n_chains:
            raise ValueError(
                f"{who}: the checkpoint has {len(rows)} chain stream(s), this worker has "
                f"{self.n_chains} chains: it belongs to another config"
            )
        for stream, row in zip(self.streams, rows, strict=True):
            stream.load_state_dict(dict(zip(STREAM_KEYS, map(int, row), strict=True)))
