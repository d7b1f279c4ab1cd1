"""The package's shape, as docs/ARCHITECTURE.md states it: short functions and modules,
no private names reached across modules, and no module importing the front ends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hyperclone"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "assets" not in p.relative_to(PACKAGE).parts[:-1])
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450
FRONT_ENDS = {"cli", "cli_eval", "cli_race", "cli_serve"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_and_functions_stay_short(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines (limit {MAX_MODULE_LINES}); split it"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module imported from, name) for every ``from . import`` / ``from .x import y`` in the module."""
    found = []
    package = ".".join(path.parent.relative_to(PACKAGE.parent).parts)
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
            found += [(module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_private_name_is_imported_from_another_module(path):
    private = [f"{module}.{name}" for module, name in _imports(path) if name.startswith("_") and name != "__version__"]
    assert not private, f"{_name(path)} reaches into another module's private names: {private}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.stem not in FRONT_ENDS], ids=_name)
def test_nothing_below_the_front_ends_imports_them(path):
    upward = [module for module, name in _imports(path)
              if module.split(".")[-1] in FRONT_ENDS or name in FRONT_ENDS]
    assert not upward, f"{_name(path)} imports a front end: {upward}"
