"""What the MPI launcher tells a process, read without importing MPI or numpy."""

from __future__ import annotations

import os

__all__ = ["mpi_world_size"]

# MPICH/Hydra and Slurm's PMI, Open MPI, MVAPICH
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def mpi_world_size() -> int:
    """Number of ranks this process was launched with (1 when not under mpiexec)."""
    for var in _SIZE_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return 1
