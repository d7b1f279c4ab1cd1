"""Registry of architecture specs: every module of this package but ``base`` holds a family's ``SPECS``."""

from __future__ import annotations

import importlib
import pkgutil

from hyperclone.core.errors import HyperCloneError
from hyperclone.specs.base import SPACE_FACTORS, FamilySpec, Rule


def _registry() -> dict[str, FamilySpec]:
    registry: dict[str, FamilySpec] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
        for spec in importlib.import_module(f"{__name__}.{module}").SPECS:
            if spec.model_type in registry:
                raise ValueError(f"two specs for {spec.model_type!r}; the second is in specs/{module}.py")
            registry[spec.model_type] = spec
    return registry


REGISTRY: dict[str, FamilySpec] = _registry()


def supported_families() -> list[str]:
    """The ``model_type`` values HyperClone can grow."""
    return sorted(REGISTRY)


def spec_for(config_or_type: object) -> FamilySpec:
    """The spec for a config (or a model_type string); a ValueError listing the supported ones otherwise."""
    model_type = config_or_type if isinstance(config_or_type, str) else getattr(config_or_type, "model_type", None)
    if model_type not in REGISTRY:
        raise HyperCloneError(
            f"unsupported model family {model_type!r}: HyperClone supports {', '.join(supported_families())}"
        )
    return REGISTRY[model_type]


__all__ = ["FamilySpec", "Rule", "SPACE_FACTORS", "REGISTRY", "spec_for", "supported_families"]
