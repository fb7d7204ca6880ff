"""``python -m snep``: the ``snep`` command line (:mod:`snep.cli`)."""

from __future__ import annotations

import sys

from snep.cli import main

if __name__ == "__main__":
    sys.exit(main())
