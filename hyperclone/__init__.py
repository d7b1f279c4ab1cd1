"""HyperClone: grow a small pretrained causal LM into a wider one with the same logits.

The public API, in the order data flows: sources -> clone -> verify -> train.
Each name is imported on first use (PEP 562), so ``import hyperclone`` and the
``hyperclone`` command stay fast until something needs torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .version import __version__

# public name -> the module that defines it
_WHERE = {
    "EquivalenceReport": ".verify",
    "Growth": ".growth",
    "HyperCloneError": ".errors",
    "RaceResult": ".results",
    "VARIANTS": ".growth",
    "clone": ".clone",
    "evaluate_tasks": ".harness",
    "list_sources": ".sources",
    "load_corpus": ".data",
    "load_run": ".runs",
    "load_source": ".sources",
    "make_plan": ".clone",
    "race": ".train",
    "stream_clone": ".stream",
    "supported_families": ".specs",
    "symmetry": ".symmetry",
    "verify": ".verify",
}
__all__ = [*_WHERE, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'hyperclone' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``hyperclone.clone``, ``.verify`` and ``.symmetry`` the functions of those names.

    Importing a submodule sets it as an attribute of its package; eager imports
    used to rebind these names to the functions right after, so this does the same.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WHERE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
