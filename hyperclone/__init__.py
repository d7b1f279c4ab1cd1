"""HyperClone: grow a small pretrained causal LM into a wider one with the same logits.

The public API, in the order data flows: sources -> clone -> verify -> train.
Each name is imported on first use (PEP 562), so ``import hyperclone`` and the
``hyperclone`` command stay fast until something needs torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__

# public name -> the module that defines it
_WHERE = {
    "EquivalenceReport": ".core.verify",
    "Growth": ".core.growth",
    "HyperCloneError": ".core.errors",
    "RaceResult": ".training.results",
    "VARIANTS": ".core.growth",
    "clone": ".core.clone",
    "evaluate_tasks": ".views.harness",
    "list_sources": ".io.sources",
    "load_corpus": ".training.data",
    "load_run": ".training.runs",
    "load_source": ".io.sources",
    "make_plan": ".core.clone",
    "race": ".training.loop",
    "reproduce": ".training.paper_report",
    "load_report": ".training.paper_report",
    "stream_clone": ".io.stream",
    "supported_families": ".specs",
    "symmetry": ".core.symmetry",
    "verify": ".core.verify",
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
