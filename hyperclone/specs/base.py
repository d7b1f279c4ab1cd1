"""The vocabulary of architecture specs: weight spaces, tensor rules, family specs.

A *space* names what an axis of a tensor indexes (the residual stream, the
attention heads, the FFN units, the vocabulary...). Each space has a growth
factor, and the rule for a tensor follows from the factors of its output and
input axes (see ``grow.py``). A family spec is then plain data: which weight
names exist and which spaces their axes live in, which config keys to scale,
and the few special cases (tied head, embedding scale) stated as fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..errors import HyperCloneError

# Space -> which user factor multiplies it. "n" = hidden factor, "m" = FFN factor.
SPACE_FACTORS: dict[str, str | int] = {
    "residual": "n",  # the hidden size / running residual stream
    "embed_proj": "n",  # OPT's word_embed_proj_dim stream (equal to residual in most OPTs)
    "heads": "n",  # query heads x head_dim (whole heads are replicated)
    "kv": "n",  # key/value heads x head_dim (GQA/MQA: KV heads grow too)
    "ffn": "m",  # MLP intermediate units
    "one": 1,  # never grows: vocabulary, positions, per-head norms over head_dim
}


@dataclass(frozen=True)
class Rule:
    """How one tensor grows.

    ``out`` is the space of the axis that is repeated (a tuple of spaces for a
    fused axis made of parts, each grown on its own); ``inp`` is the space of
    the axis that is summed over by a matmul (None for vectors). ``transposed``
    marks storage as [in, out] (GPT-2 Conv1D, embedding tables). ``kind`` says
    what the tensor is, for the special cases: "norm", "embedding", "head".
    """

    out: str | tuple[str, ...]
    inp: str | None = None
    transposed: bool = False
    kind: str = "linear"

    @property
    def parts(self) -> tuple[str, ...]:
        return self.out if isinstance(self.out, tuple) else (self.out,)


def linear(out: str | tuple[str, ...], inp: str) -> Rule:
    """nn.Linear weight, stored [out, in]."""
    return Rule(out, inp)


def conv1d(out: str | tuple[str, ...], inp: str) -> Rule:
    """GPT-2 Conv1D weight, stored [in, out]."""
    return Rule(out, inp, transposed=True)


def vector(space: str | tuple[str, ...]) -> Rule:
    """A bias along ``space``: repeated."""
    return Rule(space)


def norm(space: str) -> Rule:
    """A LayerNorm/RMSNorm weight or bias over ``space``: repeated (mean/variance of [x,x] equal x's)."""
    return Rule(space, kind="norm")


def embedding(space: str = "residual") -> Rule:
    """A lookup table [rows, space]: columns repeated, never divided."""
    return Rule(space, "one", transposed=True, kind="embedding")


def head(inp: str = "residual") -> Rule:
    """The LM head [vocab, hidden]: only the input grows, so [W/n, ..., W/n]."""
    return Rule("one", inp, kind="head")


@dataclass(frozen=True)
class FamilySpec:
    """Everything HyperCloning needs to know about one architecture family, as data.

    - ``tensors``: weight-name patterns (``*`` = a layer index) -> Rule. A
      state-dict key that matches no pattern is an error, never a silent copy.
    - ``config``: config keys multiplied by the factor of the given space.
    - ``config_defaults``: how to fill a size key that the config leaves None.
    - ``space_sizes``: the source size of a space, needed to split fused axes.
    - ``embed``/``lm_head``: the weight names tied embeddings share.
    - ``embed_scale``: the model multiplies embeddings by sqrt(hidden) (Gemma),
      so the cloned table is divided by sqrt(n).
    - ``residual_writers``: patterns of tensors whose outputs are added to the
      residual stream; needed only for ``tie="keep"`` (None = unsupported).
    """

    model_type: str
    example: str
    tensors: Mapping[str, Rule]
    config: Mapping[str, str]
    embed: str
    lm_head: str = "lm_head.weight"
    space_sizes: Mapping[str, Callable[[object], int]] = field(default_factory=dict)
    config_defaults: Mapping[str, Callable[[object], int]] = field(default_factory=dict)
    embed_scale: bool = False
    residual_writers: tuple[str, ...] | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        patterns = [(re.compile(_pattern_regex(p)), rule) for p, rule in self.tensors.items()]
        object.__setattr__(self, "_compiled", patterns)
        writers = [re.compile(_pattern_regex(p)) for p in (self.residual_writers or ())]
        object.__setattr__(self, "_writers", writers)

    def rule_for(self, name: str) -> Rule:
        """The rule for a weight name; an error naming the weight when the spec lacks it."""
        for regex, rule in self._compiled:  # type: ignore[attr-defined]
            if regex.fullmatch(name):
                return rule
        raise HyperCloneError(
            f"weight {name!r} is not described by the {self.model_type} spec; "
            "refusing to copy it silently (add it to hyperclone/specs)"
        )

    def writes_residual(self, name: str) -> bool:
        return any(r.fullmatch(name) for r in self._writers)  # type: ignore[attr-defined]

    @property
    def supports_tie_keep(self) -> bool:
        return self.residual_writers is not None


def _pattern_regex(pattern: str) -> str:
    return re.escape(pattern).replace(r"\*", r"\d+")
