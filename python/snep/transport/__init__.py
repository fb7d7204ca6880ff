"""Transports that move SNEP's messages: in-process (``snep.transport.inprocess``) and MPI
(``snep.transport.mpi``, launched by ``snep.transport.launch.run_mpi``)."""

from __future__ import annotations

from snep.transport.env import mpi_world_size

__all__ = ["mpi_world_size"]
