"""Exception types of snep.

Every error raised by snep names what failed, the offending value, what was
expected and how to fix it, so that a researcher can act on it without reading
the source.
"""

from __future__ import annotations

__all__ = ["BackendUnavailableError", "ConfigError", "DataError", "SnepError"]


class SnepError(Exception):
    """Base class of every error raised by snep."""


class ConfigError(SnepError, ValueError):
    """A configuration value is invalid (names the key, the value and what is allowed)."""


class DataError(SnepError, ValueError):
    """A data file or array is missing, malformed or inconsistent (names the file)."""


class BackendUnavailableError(SnepError, RuntimeError):
    """A requested compute backend cannot be used here (names those that can)."""
