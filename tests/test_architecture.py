"""The package's shape, as docs/ARCHITECTURE.md states it: layers are folders and imports only point down
(front ends > views, teach > training > io > core, specs), no module is part of an import circle, functions
stay short, and no private name is reached across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hyperclone"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60
# each folder's layer: a module may import its own layer and the layers below it, never one above
LAYERS = {"core": 0, "specs": 0, "assets": 0, "version": 0, "io": 1, "training": 2, "views": 3, "teach": 3,
          "cli": 4, "dashboard": 4, "__main__": 4}
FRONT_ENDS = {"cli", "dashboard"}  # neither imports the other
PUBLIC_API = "hyperclone"  # __init__.py: names re-exported from the layers below the front ends


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (annotations only: never executed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for child in node.body for n in ast.walk(child) if isinstance(n, ast.ImportFrom | ast.Import)}
    return lines


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(module imported from, name, line) for every import of the package, at the top or inside a function."""
    tree, found = _tree(path), []
    here = _name(path, root).split(".") if path.name == "__init__.py" else _name(path, root).split(".")[:-1]
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if node.lineno in skipped if isinstance(node, ast.ImportFrom | ast.Import) else True:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "hyperclone"]
        elif node.level:
            module = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
            found += [(module, a.name, node.lineno) for a in node.names]
        elif node.module and node.module.split(".")[0] == "hyperclone":
            found += [(node.module, a.name, node.lineno) for a in node.names]
    return found


def _modules_named(module: str, name: str) -> list[str]:
    """The package modules an import reaches: ``from hyperclone.core import clone`` reaches ``hyperclone.core.clone``."""
    candidate = f"{module}.{name}" if name else module
    known = {_name(p) for p in MODULES}
    return [candidate] if candidate in known else [module]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PUBLIC_API


def test_every_module_lives_in_a_layer_folder():
    loose = [_name(p) for p in MODULES if _layer(_name(p)) not in LAYERS and _name(p) != PUBLIC_API]
    assert not loose, f"modules outside the layer folders ({', '.join(LAYERS)}): {loose}"


def _upward(path: Path, root: Path = PACKAGE) -> list[str]:
    """The imports of ``path`` that reach a layer above its own (or the other front end)."""
    mine = _layer(_name(path, root))
    if mine == PUBLIC_API:
        return []  # the public API re-exports (lazily) from the layers; checked below
    return [f"line {line}: {target}" for module, name, line in _imports(path, root)
            for target in _modules_named(module, name)
            if _layer(target) in LAYERS and (LAYERS[_layer(target)] > LAYERS[mine]
                                             or {mine, _layer(target)} == FRONT_ENDS)]


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_point_down(path):
    upward = _upward(path)
    assert not upward, f"{_name(path)} (layer {_layer(_name(path))!r}) imports from a layer above its own: {upward}"


def test_the_public_api_reexports_no_front_end():
    import hyperclone

    where = {name: module for name, module in hyperclone._WHERE.items()}  # noqa: SLF001 - the table under test
    fronts = {name: module for name, module in where.items() if module.split(".")[1] in FRONT_ENDS}
    assert not fronts, f"the public API re-exports front-end names: {fronts}"


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in MODULES:
        me = _name(path)
        graph[me] = {t for m, n, _ in _imports(path) for t in _modules_named(m, n) if t != me and t != "hyperclone"}
    return graph


def _circle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return [*trail, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def test_no_import_circles():
    graph = _graph()
    circles = {" -> ".join(c) for m in graph if (c := _circle_from(m, graph))}
    assert not circles, f"import circles (lazy imports count too): {sorted(circles)}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_stay_short(path):
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_private_name_is_imported_from_another_module(path):
    private = [f"{module}.{name}" for module, name, _ in _imports(path)
               if name.startswith("_") and name != "__version__"]
    assert not private, f"{_name(path)} reaches into another module's private names: {private}"


def test_the_folder_rule_catches_an_upward_import(tmp_path):
    """The rule can fail: a core module that imports the training layer, even inside a function, is reported;
    the same import under ``if TYPE_CHECKING:`` (never executed) is not."""
    fake = tmp_path / "hyperclone" / "core" / "grow.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hyperclone.training import loop\n")
    assert _upward(fake, tmp_path / "hyperclone") == []
    fake.write_text(fake.read_text() + "\n\ndef late():\n    from hyperclone.training.loop import race\n")
    assert _upward(fake, tmp_path / "hyperclone") == ["line 7: hyperclone.training.loop"]


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle_from("a", graph) == ["a", "b", "c", "a"] and _circle_from("d", graph) is None
