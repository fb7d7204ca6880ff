"""snep: distributed Bayesian learning of neural networks.

Stochastic natural-gradient expectation propagation (SNEP) with a posterior
server, after Hasenclever, Webb, Lienart, Vollmer, Lakshminarayanan, Blundell
and Teh, "Distributed Bayesian Learning with Stochastic Natural Gradient
Expectation Propagation and the Posterior Server", JMLR 18 (2017).

The public names below load on first use: importing snep is cheap and never
imports CuPy, MPI or Numba.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "fit": "snep.run.fit",
    "Model": "snep.model.protocol",
    "FitResult": "snep.run.setup",
    "Config": "snep.config",
    "load_config": "snep.config",
    "Posterior": "snep.posterior",
    "load_dataset": "snep.data.loaders",
    "ParamSpec": "snep.model.spec",
    "get_backend": "snep.backends",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'snep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
