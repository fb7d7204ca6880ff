"""Transports that move SNEP's messages: in-process (``snep.algorithm.runner``) and MPI."""

from __future__ import annotations

from snep.transport.launch import broadcast_config, mpi_world_size, run_mpi

__all__ = ["broadcast_config", "mpi_world_size", "run_mpi"]
