"""Registry of architecture specs, one small declarative module per family."""

from __future__ import annotations

from ..errors import HyperCloneError
from . import gpt2, gpt_neox, llama, opt, phi
from .base import SPACE_FACTORS, FamilySpec, Rule

REGISTRY: dict[str, FamilySpec] = {s.model_type: s for m in (gpt2, opt, gpt_neox, llama, phi) for s in m.SPECS}


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
