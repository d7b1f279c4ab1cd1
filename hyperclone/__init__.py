"""HyperClone: grow a small pretrained causal LM into a wider one with the same logits.

The public API, in the order data flows: sources -> clone -> verify -> train.
"""

from .clone import clone, make_plan
from .data import load_corpus
from .errors import HyperCloneError
from .grow import VARIANTS
from .results import RaceResult
from .runs import load_run
from .sources import list_sources, load_source
from .specs import supported_families
from .stream import stream_clone
from .symmetry import symmetry
from .train import race
from .verify import EquivalenceReport, verify
from .version import __version__
__all__ = [
    "EquivalenceReport",
    "HyperCloneError",
    "RaceResult",
    "VARIANTS",
    "clone",
    "list_sources",
    "load_corpus",
    "load_run",
    "load_source",
    "make_plan",
    "race",
    "stream_clone",
    "supported_families",
    "symmetry",
    "verify",
    "__version__",
]
