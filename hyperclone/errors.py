"""Exceptions raised by hyperclone.

One base class so callers (the CLI, the dashboard) can catch every expected
failure with a single ``except HyperCloneError`` and print its one-line message;
anything else escaping is a bug. Messages say what was wrong and what to do.
"""

from __future__ import annotations


class HyperCloneError(ValueError):
    """Base class: an expected, user-facing failure with a one-line message."""


class SourceError(HyperCloneError):
    """A source model could not be found, loaded, or is not supported."""


class DataError(HyperCloneError):
    """A corpus could not be found, read, or is too small to train on."""


class MissingPathError(HyperCloneError, FileNotFoundError):
    """A path the user named does not exist (also a ``FileNotFoundError``)."""


class MissingSourceError(SourceError, MissingPathError):
    """A local source model directory does not exist."""


class MissingDataError(DataError, MissingPathError):
    """A local corpus file or directory does not exist."""
