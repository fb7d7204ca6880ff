"""Counter-based Gaussian noise: the float64 numpy reference.

The compiled kernels (``kernels/snep_rng.cuh``) draw the Langevin noise inside
the fused pass from a stateless counter-based generator, Philox4x32-10
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), so
that the same ``(seed, stream, step, chain, index)`` gives the same number on
every backend and in every thread layout.  This module reproduces the 32-bit
words exactly and the Box–Muller transform in float64 (the kernels use float32
polynomials, accurate to a few 1e-7).

Mapping (words ``w`` of counter ``(block, chain, step, stream)``, key = seed):
``u = ((w0 >> 8) + 0.5) 2^-24``, ``t = ((w1 >> 8) + 0.5) 2^-23 - 1``,
``z0 = sqrt(-2 ln u) cos(pi t)``, ``z1 = sqrt(-2 ln u) sin(pi t)``; likewise
``(w2, w3) -> (z2, z3)``; the four normals belong to parameters
``4 block .. 4 block + 3``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NOISE_STREAM_SAMPLER", "philox4x32", "philox4x32_10", "reference_normals"]

#: stream id of the sampler's Langevin noise (other streams are free for other uses)
NOISE_STREAM_SAMPLER = 0

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_MASK = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters: np.ndarray, seed: int) -> np.ndarray:
    """Philox4x32-10 on an array of counters: the kernels' generator
    (:func:`philox4x32` with 10 rounds)."""
    return philox4x32(counters, seed, 10)


def philox4x32(counters: np.ndarray, seed: int, rounds: int) -> np.ndarray:
    """Philox4x32 with ``rounds`` rounds on an array of counters (the kernels use 10;
    ``bench/noise_cost.py`` times 7, Salmon et al.'s smallest Crush-resistant count).

    Parameters
    ----------
    counters : ndarray of shape (n, 4)
        Unsigned 32-bit counter words ``(block, chain, step, stream)``.
    seed : int
        64-bit key; low word is key 0, high word key 1.
    rounds : int
        Rounds of the Philox bijection.

    Returns
    -------
    ndarray of shape (n, 4), uint32
        The generator's output words.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ValueError(
            f"philox4x32: rounds={rounds!r} must be a positive integer (the kernels use 10)"
        )
    c = np.asarray(counters, dtype=np.uint64) & _MASK
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0 = seed & 0xFFFFFFFF
    k1 = (seed >> 32) & 0xFFFFFFFF
    for _ in range(int(rounds)):
        p0 = _M0 * c0
        p1 = _M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def _box_muller(wu: np.ndarray, wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = ((wu >> 8).astype(np.float64) + 0.5) * 2.0**-24
    t = ((wt >> 8).astype(np.float64) + 0.5) * 2.0**-23 - 1.0
    r = np.sqrt(-2.0 * np.log(u))
    return r * np.cos(np.pi * t), r * np.sin(np.pi * t)


def reference_normals(
    n_chains: int, n_params: int, seed: int, stream: int, step: int, chain0: int = 0
) -> np.ndarray:
    """Standard normals of the fused pass, in float64.

    Returns
    -------
    ndarray of shape (n_chains, n_params)
        Entry ``[c, j]`` is the noise of parameter ``j`` of chain ``chain0 + c``
        at ``step`` on ``stream``.
    """
    n_blocks = (n_params + 3) // 4
    out = np.empty((n_chains, 4 * n_blocks))
    block = np.arange(n_blocks, dtype=np.uint64)
    for c in range(n_chains):
        ctr = np.stack(
            [
                block,
                np.full(n_blocks, chain0 + c, np.uint64),
                np.full(n_blocks, step, np.uint64),
                np.full(n_blocks, stream, np.uint64),
            ],
            axis=1,
        )
        w = philox4x32_10(ctr, seed)
        z0, z1 = _box_muller(w[:, 0], w[:, 1])
        z2, z3 = _box_muller(w[:, 2], w[:, 3])
        out[c] = np.stack([z0, z1, z2, z3], axis=1).reshape(-1)
    return out[:, :n_params]
