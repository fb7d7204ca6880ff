"""Tests that need something a machine may lack: skipped without it, failed where
``SNEP_REQUIRE`` names it.

A test (or a module, through ``pytestmark``) declares what it needs with
``@pytest.mark.requires(name)``; without it the test is skipped with the reason below,
unless the comma-separated environment variable ``SNEP_REQUIRE`` names it (``.ci/run``
sets ``SNEP_REQUIRE=mnist,omniglot,mpi``): then it fails, so that a CI machine that
should have the data or MPI cannot pass by skipping.  Names:

``mnist``, ``omniglot``
    ``mnist.npz`` / ``omniglot28.npz`` where :func:`snep.data.loaders.find_shared_data`
    finds them (``$SNEP_DATA_DIR``, ``shared/data`` or ``../shared/data``).
``mpi``
    mpi4py importable and ``mpiexec`` on ``PATH`` (both from ``pip install ".[test]"``
    or ``".[mpi]"``: mpi4py and mpich).
``nvrtc``
    CuPy's runtime compiler NVRTC (a CUDA toolkit, or the nvidia-cuda-nvrtc wheel);
    whether a test has it is the test's to say: ``requires("nvrtc", found=...)``.

``found=`` gives the answer for any name (the module's own probe); unknown names in
``SNEP_REQUIRE`` or in a mark are a usage error, so that a typo requires nothing.
Lives at the repository root so that ``tests/`` and ``bench/`` share it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil

import pytest

ENV = "SNEP_REQUIRE"


def _data(filename: str) -> bool:
    from snep.data.loaders import find_shared_data

    return find_shared_data(filename) is not None


def _mpi() -> bool:
    return importlib.util.find_spec("mpi4py") is not None and shutil.which("mpiexec") is not None


#: name -> (probe or None when the mark must say found=, reason when it is missing)
RESOURCES = {
    "mnist": (
        lambda: _data("mnist.npz"),
        "mnist.npz not found (set SNEP_DATA_DIR or place it in ../shared/data/)",
    ),
    "omniglot": (
        lambda: _data("omniglot28.npz"),
        "omniglot28.npz not found (set SNEP_DATA_DIR or place it in ../shared/data/)",
    ),
    "mpi": (_mpi, 'mpi4py or mpiexec not found (pip install ".[mpi]": mpi4py and mpich)'),
    "nvrtc": (None, "NVRTC not found (pip install nvidia-cuda-nvrtc, a test dependency)"),
}


def required() -> set[str]:
    """The names in ``SNEP_REQUIRE``; a usage error for a name not in :data:`RESOURCES`."""
    names = {s.strip() for s in os.environ.get(ENV, "").split(",")} - {""}
    unknown = names - set(RESOURCES)
    if unknown:
        raise pytest.UsageError(
            f"{ENV}={os.environ[ENV]!r} names {sorted(unknown)}; known: {sorted(RESOURCES)}"
        )
    return names


@functools.cache
def _probe(name: str) -> bool:
    return bool(RESOURCES[name][0]())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(name, found=None): needs mnist, omniglot, mpi or nvrtc; skipped without "
        f"it, failed where {ENV} names it",
    )
    required()  # a typo in SNEP_REQUIRE stops the run before any test


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        (name,) = mark.args
        if name not in RESOURCES:
            raise pytest.UsageError(
                f"{item.nodeid}: requires({name!r}), known: {sorted(RESOURCES)}"
            )
        found = mark.kwargs.get("found")
        if found is None:
            if RESOURCES[name][0] is None:
                raise pytest.UsageError(f"{item.nodeid}: requires({name!r}) needs found=")
            found = _probe(name)
        if found:
            continue
        reason = RESOURCES[name][1]
        if name in required():
            pytest.fail(f"{ENV} names {name!r}, but {reason}", pytrace=False)
        pytest.skip(reason)
