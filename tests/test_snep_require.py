"""``SNEP_REQUIRE`` (the repository's conftest.py): a test marked ``requires(name)`` is
skipped where ``name`` is missing, and fails instead where ``SNEP_REQUIRE`` names it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """
import pytest

@pytest.mark.requires("omniglot", found=False)
def test_lacks_omniglot():
    pass

@pytest.mark.requires("nvrtc", found=True)
def test_has_nvrtc():
    pass

def test_needs_nothing():
    pass
"""


@pytest.mark.parametrize(
    "require,rc,outcome",
    [
        (None, 0, "2 passed, 1 skipped"),
        ("mnist, mpi,nvrtc", 0, "2 passed, 1 skipped"),  # names what is there: no change
        ("mnist,omniglot", 1, "2 passed, 1 error"),
        ("omniglott", 4, "SNEP_REQUIRE='omniglott' names ['omniglott']"),  # a typo
    ],
)
def test_a_missing_requirement_skips_unless_snep_require_names_it(tmp_path, require, rc, outcome):
    (tmp_path / "test_tiny.py").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "SNEP_REQUIRE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if require is not None:
        env["SNEP_REQUIRE"] = require
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
         "-rEs", "test_tiny.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == rc, out
    assert outcome in out, out
    if rc == 1:
        assert "SNEP_REQUIRE names 'omniglot', but omniglot28.npz not found" in out
    if rc == 0:
        assert "SKIPPED [1]" in out and "omniglot28.npz not found" in out
