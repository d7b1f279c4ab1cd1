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


class OutputExistsError(HyperCloneError):
    """The output directory holds an earlier HyperClone output, and replacing it was not allowed.

    ``str(e)`` names the CLI flag and the API argument; a caller with another
    control (the dashboard's Overwrite box) asks for its own wording with ``with_control``.
    """

    def __init__(self, out: object):
        self.out = out
        super().__init__(self.with_control("pass --overwrite (overwrite=True)"))

    def with_control(self, how: str) -> str:
        """The message, with ``how`` saying how to allow replacing it (e.g. "tick Overwrite")."""
        return (f"output directory {self.out} holds an earlier HyperClone output; choose a new directory, "
                f"or {how} to replace it")


SHOWN_CHARS = 60  # how much of a user's text an error message quotes


def shown(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` as an error message shows it: on one line, cut to ``limit`` characters ("…", then its length).

    Every message that echoes user text (an argument, a spec, a file's content, a link's value) goes through
    this or ``quoted``, so a long paste never fills the terminal or the page."""
    text = " ".join(str(text).splitlines())
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def quoted(text: object, limit: int = SHOWN_CHARS) -> str:
    """``text`` quoted for an error message, as ``repr`` quotes it, cut to ``limit`` characters ("…" after)."""
    return shown(repr(text), limit)


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of ``error``'s message, cut to ``limit`` characters (its type's name when it has none).

    For wrapping a third-party exception (the hub client, transformers) in one line of our own.
    """
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
