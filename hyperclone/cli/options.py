"""What more than one command of the CLI offers: load dtypes, and how loud the library is (-v/-q)."""

import argparse
import logging
import sys

DTYPES = ("float32", "bfloat16", "float16", "float64")  # load dtypes (names, so parsing needs no torch)

# What the library logs (``logging``, under the ``hyperclone`` logger) reaches the terminal as one line each, with
# the word a user reads first: "note: ..." for a warning. -q keeps only errors, -v adds the library's details.
LEVEL_WORDS = {"DEBUG": "debug", "INFO": "info", "WARNING": "note", "ERROR": "error", "CRITICAL": "error"}


class StderrHandler(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when each message is logged (not when it was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{LEVEL_WORDS.get(record.levelname, record.levelname.lower())}: {record.getMessage()}"


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", help="also print the library's details (debug)")
    group.add_argument("-q", "--quiet", action="store_true", help="print errors only (no notes)")


def configure_logging(args: argparse.Namespace) -> None:
    """The ``hyperclone`` logger's level and one-line stderr handler for this command."""
    logger = logging.getLogger("hyperclone")
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.ERROR if getattr(args, "quiet", False) \
        else logging.INFO
    logger.setLevel(level)
    if not any(getattr(h, "hyperclone_cli", False) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(OneLineFormatter())
        handler.hyperclone_cli = True
        logger.addHandler(handler)
    logger.propagate = False
