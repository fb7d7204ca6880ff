"""Flat parameter layout of a ReLU MLP (or multinomial logistic regression).

All parameters of a classifier live in one flat vector of length ``P`` (docs/method.md §1.1): the
kernels, the diagonal-Gaussian family, the samplers and the MPI messages all work on that
one buffer, and the layers are *views* into it.  :class:`ParamSpec` maps the flat vector to
the layer shapes.

Layout, layer by layer in order ``l = 0 .. L-1``::

    [ W_0 (n_in_0 × n_out_0, row-major) | b_0 (n_out_0) | W_1 | b_1 | ... ]

so the forward pass of layer ``l`` is ``h_{l+1} = act(h_l @ W_l + b_l)`` with ``W_l`` of
shape ``(n_in, n_out)``.  The model is the one of Hasenclever et al., "Distributed Bayesian
Learning with Stochastic Natural Gradient Expectation Propagation and the Posterior
Server", JMLR 18 (2017), §6: ReLU hidden layers and a softmax output (no hidden layer is
multinomial logistic regression).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snep.errors import ConfigError

__all__ = ["LayerSpec", "ParamSpec", "init_params"]


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer's place in the flat parameter vector.

    Parameters
    ----------
    name : str
        Layer name (``"fc0"``, ``"fc1"``, ...).
    n_in, n_out : int
        Input and output width; the weight matrix has shape ``(n_in, n_out)``.
    w_offset : int
        Index of ``W[0, 0]`` in the flat vector; ``W`` is stored row-major.
    b_offset : int
        Index of ``b[0]`` in the flat vector (``w_offset + n_in * n_out``).
    """

    name: str
    n_in: int
    n_out: int
    w_offset: int
    b_offset: int

    @property
    def w_size(self) -> int:
        """Number of weights, ``n_in * n_out``."""
        return self.n_in * self.n_out

    @property
    def w_slice(self) -> slice:
        """Slice of the flat vector holding the weights."""
        return slice(self.w_offset, self.w_offset + self.w_size)

    @property
    def b_slice(self) -> slice:
        """Slice of the flat vector holding the bias."""
        return slice(self.b_offset, self.b_offset + self.n_out)

    @property
    def end(self) -> int:
        """One past the layer's last parameter."""
        return self.b_offset + self.n_out


def _check_sizes(layer_sizes: Any) -> tuple[int, ...]:
    hint = "pass the layer widths from input to output, e.g. (784, 500, 300, 10) or (D, K)"
    if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, (Sequence, np.ndarray)):
        raise ConfigError(
            f"ParamSpec.layer_sizes={layer_sizes!r}: expected a sequence of positive ints; {hint}"
        )
    sizes = list(layer_sizes)
    if len(sizes) < 2:
        raise ConfigError(
            f"ParamSpec.layer_sizes={tuple(sizes)!r} has {len(sizes)} entries: expected at least "
            f"2 (input width and number of classes); {hint}"
        )
    out = []
    for i, s in enumerate(sizes):
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s <= 0:
            raise ConfigError(
                f"ParamSpec.layer_sizes[{i}]={s!r} in {tuple(sizes)!r}: expected a positive int; "
                f"{hint}"
            )
        out.append(int(s))
    return tuple(out)


@dataclass(frozen=True)
class ParamSpec:
    """Map between the flat parameter vector and the layers of an MLP.

    Parameters
    ----------
    layer_sizes : tuple of int
        Widths from input to output, at least two: ``(D, K)`` is multinomial logistic
        regression, ``(784, 500, 300, 10)`` the paper's MNIST network (``P = 545810``).

    Raises
    ------
    ConfigError
        If there are fewer than two sizes or a size is not a positive int.

    Examples
    --------
    >>> spec = ParamSpec((784, 500, 300, 10))
    >>> spec.size
    545810
    >>> [(lay.n_in, lay.n_out) for lay in spec.layers]
    [(784, 500), (500, 300), (300, 10)]
    """

    layer_sizes: tuple[int, ...]
    _layers: tuple[LayerSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = _check_sizes(self.layer_sizes)
        object.__setattr__(self, "layer_sizes", sizes)
        layers = []
        off = 0
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(LayerSpec(f"fc{i}", n_in, n_out, off, off + n_in * n_out))
            off += n_in * n_out + n_out
        object.__setattr__(self, "_layers", tuple(layers))

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """The layers, input to output."""
        return self._layers

    @property
    def size(self) -> int:
        """Total number of parameters ``P``."""
        return self._layers[-1].end

    @property
    def n_inputs(self) -> int:
        """Input width ``D``."""
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        """Number of classes ``K``."""
        return self.layer_sizes[-1]

    @property
    def n_layers(self) -> int:
        """Number of dense layers (``len(layer_sizes) - 1``)."""
        return len(self._layers)

    def views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split a flat parameter array into per-layer ``(W, b)`` views (no copies).

        Parameters
        ----------
        flat : ndarray, shape (..., P)
            Flat parameters; any leading axes (e.g. chains) are kept.

        Returns
        -------
        list of (W, b)
            ``W`` has shape ``(..., n_in, n_out)`` and ``b`` shape ``(..., n_out)``; both are
            views of ``flat``, so writing into them writes into ``flat``.

        Raises
        ------
        ConfigError
            If the last axis of ``flat`` is not ``P`` long.
        """
        if not isinstance(flat, np.ndarray) or flat.ndim < 1 or flat.shape[-1] != self.size:
            shape = getattr(flat, "shape", None)
            raise ConfigError(
                f"ParamSpec.views: flat has shape {shape}, expected (..., {self.size}) for "
                f"layer_sizes={self.layer_sizes}; pass an ndarray whose last axis holds all "
                f"P={self.size} parameters"
            )
        lead = flat.shape[:-1]
        out = []
        for lay in self._layers:
            # Splitting the last axis never needs a copy, so reshape returns a view.
            w = flat[..., lay.w_slice].reshape(*lead, lay.n_in, lay.n_out)
            b = flat[..., lay.b_slice]
            out.append((w, b))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/npz-friendly description: ``{"layer_sizes": [..]}``."""
        return {"layer_sizes": list(self.layer_sizes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamSpec:
        """Inverse of :meth:`to_dict` (``layer_sizes`` may be a list, tuple or int array)."""
        if not isinstance(d, Mapping) or "layer_sizes" not in d:
            raise ConfigError(
                f"ParamSpec.from_dict: got {d!r}, expected a mapping with key 'layer_sizes' "
                "(as written by ParamSpec.to_dict())"
            )
        sizes = d["layer_sizes"]
        if isinstance(sizes, np.ndarray):
            sizes = sizes.tolist()
        return cls(tuple(sizes) if isinstance(sizes, (list, tuple)) else sizes)


def init_params(spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    """Standard initialisation of the flat parameters.

    Hidden (ReLU) layers get He-normal weights, ``N(0, 2 / n_in)``; the softmax output
    layer gets Glorot-normal weights, ``N(0, 2 / (n_in + n_out))``; all biases are zero.
    This is the shared ``x_0`` of the initial sites (docs/method.md §1.4).

    Parameters
    ----------
    spec : ParamSpec
        Network layout.
    rng : numpy.random.Generator
        Source of randomness (explicit; no global state).

    Returns
    -------
    ndarray, shape (P,), float64
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"init_params: rng={rng!r}, expected a numpy.random.Generator; "
            "pass np.random.default_rng(seed)"
        )
    flat = np.zeros(spec.size, dtype=np.float64)
    last = spec.n_layers - 1
    for i, (lay, (w, _)) in enumerate(zip(spec.layers, spec.views(flat), strict=True)):
        if i < last:
            std = np.sqrt(2.0 / lay.n_in)
        else:
            std = np.sqrt(2.0 / (lay.n_in + lay.n_out))
        w[...] = rng.standard_normal((lay.n_in, lay.n_out)) * std
    return flat
