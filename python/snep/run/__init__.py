"""Setting a run up and running it in this process: :class:`~snep.run.setup.RunSetup`
(what both transports build a run from) and :func:`~snep.run.fit.fit`."""

from __future__ import annotations

__all__: list[str] = []
