"""The ``hyperclone`` command (a front end: argument parsing and display only).
"""

from .main import main

__all__ = ["main"]
