"""Minibatch index streams and allocation-free batch gathering.

Each SNEP worker (Hasenclever et al., "Distributed Bayesian Learning with
Stochastic Natural Gradient Expectation Propagation and the Posterior Server",
JMLR 18 (2017), section 3) estimates the gradient of its local log-likelihood on
a minibatch ``B`` of its shard, scaled by ``N_i / |B|``. The stream here samples
without replacement within an epoch: every index of the shard occurs exactly
once per epoch, the order is reshuffled every epoch, and a batch that reaches the
end of an epoch continues into the next one, so every batch has exactly
``batch_size`` indices.

Epoch ``e``'s permutation comes from ``numpy.random.default_rng([seed, e])``, so
the whole stream is a function of ``(seed, epoch, position)``: its state is three
plain integers, which makes checkpointing trivial.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from snep.errors import DataError

__all__ = ["MinibatchStream", "gather_batch"]


def _int_arg(value: object, what: str, lo: int, hi: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in ``[lo, hi]``, else DataError."""
    expected = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what} is {value!r}; expected {expected}.")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        raise DataError(f"{what} is {v}; expected {expected}.")
    return v


class MinibatchStream:
    """Endless stream of minibatch indices, without replacement within each epoch.

    Parameters
    ----------
    n_examples : int
        Number of examples ``n >= 1`` (e.g. the size of a worker's shard); indices
        are in ``0..n-1``.
    batch_size : int
        Indices per batch, in ``[1, n]``.
    seed : int
        Non-negative seed; epoch ``e`` is ordered by
        ``numpy.random.default_rng([seed, e]).permutation(n)``.

    Raises
    ------
    snep.errors.DataError
        If an argument is out of range.

    Examples
    --------
    >>> s = MinibatchStream(10, 4, seed=0)
    >>> batch = s.next_indices()          # 4 indices of epoch 0
    >>> state = s.state_dict()
    >>> s2 = MinibatchStream(10, 4, seed=0)
    >>> s2.load_state_dict(state)         # s2 now continues exactly like s
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int) -> None:
        self._n = _int_arg(n_examples, "MinibatchStream: n_examples", 1)
        self._batch_size = _int_arg(batch_size, "MinibatchStream: batch_size", 1, self._n)
        self._seed = _int_arg(seed, "MinibatchStream: seed", 0)
        self._epoch = 0
        self._position = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of the examples in ``epoch``."""
        return np.random.default_rng([self._seed, epoch]).permutation(self._n).astype(np.intp)

    @property
    def n_examples(self) -> int:
        """Number of examples ``n``."""
        return self._n

    @property
    def batch_size(self) -> int:
        """Number of indices per batch."""
        return self._batch_size

    @property
    def seed(self) -> int:
        """Seed of the stream."""
        return self._seed

    @property
    def epoch(self) -> int:
        """Index of the epoch the next batch starts in."""
        return self._epoch

    @property
    def position(self) -> int:
        """Offset within the current epoch's permutation of the next index."""
        return self._position

    @property
    def epochs_seen(self) -> float:
        """Examples drawn so far divided by ``n`` (the "epochs per worker" axis)."""
        return self._epoch + self._position / self._n

    def next_indices(self, out: np.ndarray | None = None) -> np.ndarray:
        """Return the indices of the next minibatch.

        Parameters
        ----------
        out : numpy.ndarray, optional
            Preallocated intp array of shape ``(batch_size,)`` to write into.

        Returns
        -------
        numpy.ndarray
            ``batch_size`` distinct indices (intp) if the batch lies within one epoch;
            a batch that crosses an epoch boundary takes the rest of the old epoch and
            the start of the new one.
        """
        b = self._batch_size
        if out is None:
            out = np.empty(b, dtype=np.intp)
        elif out.shape != (b,) or out.dtype != np.intp:
            raise DataError(
                f"MinibatchStream.next_indices: out has shape {out.shape} and dtype "
                f"{out.dtype}; expected shape ({b},) and dtype {np.dtype(np.intp)}."
            )
        filled = 0
        while filled < b:
            take = min(b - filled, self._n - self._position)
            out[filled : filled + take] = self._perm[self._position : self._position + take]
            filled += take
            self._position += take
            if self._position == self._n:
                self._epoch += 1
                self._position = 0
                self._perm = self._permutation(self._epoch)
        return out

    def state_dict(self) -> dict[str, int]:
        """Checkpointable state: plain Python ints.

        Returns
        -------
        dict
            Keys ``n_examples``, ``batch_size``, ``seed``, ``epoch``, ``position``.
        """
        return {
            "n_examples": self._n,
            "batch_size": self._batch_size,
            "seed": self._seed,
            "epoch": self._epoch,
            "position": self._position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`.

        The stream then continues exactly as the one that produced ``state``. The
        seed is taken from ``state``; ``n_examples`` and ``batch_size`` must match.

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict` (values may be numpy integers or
            0-d arrays, e.g. after a round trip through ``np.savez``).

        Raises
        ------
        snep.errors.DataError
            If keys are missing, the sizes differ from this stream's, or the epoch or
            position are out of range.
        """
        keys = ("n_examples", "batch_size", "seed", "epoch", "position")
        missing = [k for k in keys if k not in state]
        if missing:
            raise DataError(
                f"MinibatchStream.load_state_dict: missing keys {missing}; expected keys "
                f"{list(keys)}, found {sorted(state)}."
            )
        vals = {}
        for k in keys:
            v = state[k]
            if isinstance(v, np.ndarray) and v.ndim == 0:
                v = v.item()
            vals[k] = _int_arg(v, f"MinibatchStream.load_state_dict: {k}", 0)
        for k, mine in (("n_examples", self._n), ("batch_size", self._batch_size)):
            if vals[k] != mine:
                raise DataError(
                    f"MinibatchStream.load_state_dict: state has {k}={vals[k]} but this "
                    f"stream has {k}={mine}; expected them to match. Create the stream "
                    "with the same sizes as the one that was saved."
                )
        if vals["position"] >= self._n:
            raise DataError(
                f"MinibatchStream.load_state_dict: position {vals['position']} is out of "
                f"range; expected an integer in [0, {self._n - 1}]."
            )
        self._seed = vals["seed"]
        self._epoch = vals["epoch"]
        self._position = vals["position"]
        self._perm = self._permutation(self._epoch)

    def __repr__(self) -> str:
        return (
            f"MinibatchStream(n_examples={self._n}, batch_size={self._batch_size}, "
            f"seed={self._seed}, epoch={self._epoch}, position={self._position})"
        )


def gather_batch(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray, out_x: np.ndarray, out_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copy the rows ``idx`` of ``x`` and ``y`` into preallocated arrays.

    Uses ``np.take(..., out=..., mode="clip")`` after an explicit bounds check, so no
    temporary is allocated (``mode="raise"`` with ``out`` makes numpy buffer the result).

    Parameters
    ----------
    x : numpy.ndarray
        Features, shape ``(N, ...)``.
    y : numpy.ndarray
        Labels, shape ``(N,)``.
    idx : numpy.ndarray
        Integer row indices in ``[0, N)``, shape ``(B,)``.
    out_x : numpy.ndarray
        Destination, shape ``(B, ...)``, same dtype as ``x``, C-contiguous.
    out_y : numpy.ndarray
        Destination, shape ``(B,)``, same dtype as ``y``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(out_x, out_y)``.

    Raises
    ------
    snep.errors.DataError
        If shapes or dtypes do not match or an index is out of range.
    """
    n = x.shape[0]
    if y.shape != (n,):
        raise DataError(f"gather_batch: y has shape {y.shape}; expected ({n},) to match x.")
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise DataError(
            f"gather_batch: idx has shape {idx.shape} and dtype {idx.dtype}; expected a 1-D "
            "integer index array."
        )
    b = idx.shape[0]
    if out_x.shape != (b, *x.shape[1:]) or out_x.dtype != x.dtype:
        raise DataError(
            f"gather_batch: out_x has shape {out_x.shape} and dtype {out_x.dtype}; expected "
            f"shape {(b, *x.shape[1:])} and dtype {x.dtype}."
        )
    if not out_x.flags.c_contiguous:
        raise DataError("gather_batch: out_x is not C-contiguous; expected a C-contiguous array.")
    if out_y.shape != (b,) or out_y.dtype != y.dtype:
        raise DataError(
            f"gather_batch: out_y has shape {out_y.shape} and dtype {out_y.dtype}; expected "
            f"shape ({b},) and dtype {y.dtype}."
        )
    if b:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise DataError(f"gather_batch: index {bad} is out of range; expected [0, {n}).")
    np.take(x, idx, axis=0, out=out_x, mode="clip")
    np.take(y, idx, axis=0, out=out_y, mode="clip")
    return out_x, out_y
