"""The model layer: flat parameter layout, the float64 oracle and the fast CPU MLP.

* :class:`ParamSpec` / :class:`LayerSpec` / :func:`init_params` — the flat parameter
  vector and its per-layer views (docs/method.md §1.1);
* :mod:`snep.model.mlp_numpy` — the float64 reference implementation (the oracle);
* :class:`CpuMLP` — float32 BLAS GEMMs with fused Numba epilogues
  (:mod:`snep.model.epilogues` holds the scalar maths shared with the CUDA backend).

The model is the ReLU MLP / softmax classifier of Hasenclever et al., "Distributed Bayesian
Learning with Stochastic Natural Gradient Expectation Propagation and the Posterior
Server", JMLR 18 (2017).
"""

from __future__ import annotations

from snep.model import mlp_numpy
from snep.model.mlp_cpu import CpuMLP
from snep.model.spec import LayerSpec, ParamSpec, init_params

__all__ = ["CpuMLP", "LayerSpec", "ParamSpec", "init_params", "mlp_numpy"]
