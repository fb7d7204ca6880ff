"""Importing snep is cheap; the public names load lazily."""

from __future__ import annotations

import subprocess
import sys


def test_import_snep_is_light_and_lazy():
    code = (
        "import sys, snep; "
        "assert 'cupy' not in sys.modules and 'numba' not in sys.modules; "
        "snep.fit; snep.Config; assert 'cupy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
