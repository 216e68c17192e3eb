"""Errors that are the user's to fix.

Everything here subclasses :class:`MedfoolError`, which the CLI turns into one line and exit
code 2. They also subclass ``ValueError`` so library callers can catch them the usual way.
Programming errors (bugs) are *not* MedfoolErrors and keep their traceback.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "DownloadError", "MedfoolError"]


class MedfoolError(ValueError):
    """Base class for problems caused by user input (files, options, configs)."""


class DataError(MedfoolError):
    """A dataset file or folder is missing, unreadable or malformed."""


class DownloadError(MedfoolError):
    """A dataset could not be fetched or failed its checksum."""


class CheckpointError(MedfoolError):
    """A model file is unreadable, unsafe, or does not fit its declared architecture."""


class ConfigError(MedfoolError):
    """An option or config value is out of range or unknown."""
