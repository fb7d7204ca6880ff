"""Your own Bayesian model in snep: the contract a model object fulfils.

SNEP needs of a model only the log-likelihood of a minibatch and its gradient in the
flat parameters (Hasenclever et al., JMLR 18 (2017): the method applies to any model
whose likelihood factorises over data; docs/method.md §1.1).  Pass an object with the
members below as ``snep.fit(config, data, model=...)``; every worker calls it on its
own shard, in this process or on its MPI rank.

Required
--------
``n_params : int``
    ``P``, the length of the flat parameter vector (the layout is yours; the prior is
    N(0, ``snep.prior_var``) on every coordinate).
``loglik_and_grad(params, x, y, grad_out) -> ndarray (C,)``
    ``params`` (C, P): one row per chain; ``x`` (C, B, ...) and ``y`` (C, B): each
    chain's minibatch.  Returns, per chain, ``sum_b log p(y_b | x_b, params_c)`` and
    writes its gradient in ``params_c`` into ``grad_out[c]`` (C, P).  Arrays are in the
    backend's dtype (float32 for ``cpu``, float64 for ``numpy``); ``y`` keeps integer
    labels as int32 and anything else in that float dtype.

Optional
--------
``predict_proba(params, x) -> ndarray (S, N, K)``
    Class probabilities per parameter row (``params`` (S, P), ``x`` (N, ...)): enables
    the test metrics (error, NLL, ECE) of a classifier, the model average and
    :meth:`snep.posterior.Posterior.predict_proba`.
``init_params(rng) -> ndarray (P,)``
    The workers' shared start (default: zeros).

A model object is shared by the chains of a worker and, in process, by the workers
(they run one after another), so it must not keep state between calls other than
scratch buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from snep.errors import ConfigError

__all__ = ["FlatSpec", "Model", "check_model"]


@runtime_checkable
class Model(Protocol):
    """A likelihood over flat parameters, batched over chains (module docstring)."""

    n_params: int

    def loglik_and_grad(
        self, params: np.ndarray, x: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> np.ndarray:
        """Per-chain minibatch log-likelihood (C,), its gradient into ``grad_out``."""
        ...


@dataclass(frozen=True)
class FlatSpec:
    """The parameter layout of a user's model: ``size`` flat parameters, no layers."""

    size: int
    layer_sizes: tuple[int, ...] = ()


def check_model(model: Any) -> int:
    """``model.n_params`` after checking the model fulfils :class:`Model`.

    Raises
    ------
    ConfigError
        Naming the missing or invalid member and what is expected.
    """
    name = type(model).__name__
    if not callable(getattr(model, "loglik_and_grad", None)):
        raise ConfigError(
            f"model {name} has no method loglik_and_grad(params, x, y, grad_out); a snep "
            "model returns each chain's minibatch log-likelihood and writes its gradient "
            "(see snep.model.protocol)"
        )
    n = getattr(model, "n_params", None)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(
            f"model {name} has n_params = {n!r}; expected the number of flat parameters, "
            "an int >= 1"
        )
    for member in ("predict_proba", "init_params"):
        if hasattr(model, member) and not callable(getattr(model, member)):
            raise ConfigError(f"model {name}: {member} is not callable")
    return int(n)
