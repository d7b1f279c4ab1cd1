"""Library messages go through ``logging`` (the ``hyperclone`` logger); the CLI shows them as one line each
("note: ..."), -q keeps errors only and -v adds details; nothing below the front ends prints."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from hyperclone.cli.main import build_parser
from hyperclone.cli.options import configure_logging

PACKAGE = Path(__file__).resolve().parent.parent / "hyperclone"
PRINTS_ALLOWED = {"cli", "dashboard"}  # front ends display; exercises.py talks to a student in a notebook
NOTEBOOK_TALK = {"teach/exercises.py"}


@pytest.fixture
def restore_logger():
    logger = logging.getLogger("hyperclone")
    saved = logger.level, list(logger.handlers), logger.propagate
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.mark.parametrize("flags, expected", [([], "note: removed 1 temporary directory\n"), (["-q"], ""),
                                             (["-v"], "note: removed 1 temporary directory\ndebug: a detail\n")])
def test_a_library_warning_is_one_note_line_unless_quiet(flags, expected, capsys, restore_logger):
    configure_logging(build_parser().parse_args([*flags, "families"]))
    logging.getLogger("hyperclone.io.atomic").warning("removed %d temporary directory", 1)
    logging.getLogger("hyperclone.io.atomic").debug("a detail")
    assert capsys.readouterr().err == expected


def test_configuring_twice_adds_one_handler(restore_logger):
    args = build_parser().parse_args(["families"])
    configure_logging(args)
    configure_logging(args)
    assert sum(getattr(h, "hyperclone_cli", False) for h in logging.getLogger("hyperclone").handlers) == 1


def _prints(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_library_logs_instead_of_printing(path):
    rel = path.relative_to(PACKAGE)
    if rel.parts[0] in PRINTS_ALLOWED or str(rel) in NOTEBOOK_TALK:
        return
    assert not _prints(path), f"{rel} prints (lines {_prints(path)}): use logging.getLogger(__name__)"


@pytest.mark.parametrize("verbose", [False, True])
def test_loading_a_local_checkpoint_shows_no_progress_bar_unless_verbose(verbose, capsys, restore_logger):
    from transformers import AutoModelForCausalLM

    from hyperclone.core.pretrained import from_pretrained
    from hyperclone.io.sources import resolve_source

    configure_logging(build_parser().parse_args([*(["-v"] if verbose else []), "families"]))
    from_pretrained(AutoModelForCausalLM, resolve_source("tiny-gpt2-stdlib")[1])
    assert ("Loading weights" in capsys.readouterr().err) == verbose
