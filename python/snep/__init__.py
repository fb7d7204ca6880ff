"""snep: distributed Bayesian learning of neural networks.

Stochastic natural-gradient expectation propagation (SNEP) with a posterior
server, after Hasenclever, Webb, Lienart, Vollmer, Lakshminarayanan, Blundell
and Teh, "Distributed Bayesian Learning with Stochastic Natural Gradient
Expectation Propagation and the Posterior Server", JMLR 18 (2017).

Importing snep never imports CuPy (or MPI); those load only when asked for.
"""

from __future__ import annotations

__version__ = "0.1.0"
