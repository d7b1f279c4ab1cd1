"""HyperClone: grow a small pretrained causal LM into a wider one with the same logits."""

from .clone import clone, make_plan
from .grow import VARIANTS
from .specs import supported_families
from .verify import EquivalenceReport, verify

__version__ = "0.1.0"
__all__ = ["clone", "make_plan", "verify", "EquivalenceReport", "supported_families", "VARIANTS", "__version__"]
