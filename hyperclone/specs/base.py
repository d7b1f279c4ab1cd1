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
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from hyperclone.core.errors import HyperCloneError

# Space -> which user factor multiplies it. "n" = hidden factor, "m" = FFN factor.
SPACE_FACTORS: dict[str, str | int] = {
    "residual": "n",  # the hidden size / running residual stream
    "embed_proj": "n",  # OPT's word_embed_proj_dim stream (equal to residual in most OPTs)
    "heads": "n",  # query heads x head_dim (whole heads are replicated)
    "kv": "n",  # key/value heads x head_dim (GQA/MQA: KV heads grow too)
    "ffn": "m",  # MLP intermediate units
    "one": 1,  # never grows: vocabulary, positions, per-head norms over head_dim
}
LAYER = "*"  # in a weight-name pattern, the layer index

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Rule:
    """How one tensor grows.

    ``out`` is the space of the axis that is repeated (a tuple of spaces for a
    fused axis made of parts, each grown on its own); ``inp`` is the space of
    the axis that is summed over by a matmul (None for vectors). ``transposed``
    marks storage as [in, out] (GPT-2 Conv1D, embedding tables).
    ``writes_residual`` marks a tensor whose output is added to the residual
    stream (scaled by 1/n when ``tie="keep"``). ``noiseless`` marks a tensor
    the noisy variants leave clean (an MoE router: its top-k must not change).
    A 3-D tensor is a stack of per-expert matrices [experts, out, in] (MoE):
    the expert axis never grows, each expert grows like a matrix.
    """

    out: str | tuple[str, ...]
    inp: str | None = None
    transposed: bool = False
    writes_residual: bool = False
    noiseless: bool = False

    @property
    def parts(self) -> tuple[str, ...]:
        return self.out if isinstance(self.out, tuple) else (self.out,)

    def out_axis(self, ndim: int) -> int:
        """The axis of a stored tensor with ``ndim`` dimensions that indexes the output."""
        if ndim == 3:  # [experts, out, in]
            return 2 if self.transposed else 1
        return 1 if self.transposed and ndim == 2 else 0

    def as_out_in(self, t: torch.Tensor) -> torch.Tensor:
        """The stored tensor viewed as [out, in] (a vector as it is)."""
        return t.T if self.out_axis(t.dim()) == 1 else t


def linear(out: str | tuple[str, ...], inp: str, writes_residual: bool = False) -> Rule:
    """nn.Linear weight, stored [out, in]."""
    return Rule(out, inp, writes_residual=writes_residual)


def conv1d(out: str | tuple[str, ...], inp: str, writes_residual: bool = False) -> Rule:
    """GPT-2 Conv1D weight, stored [in, out]."""
    return Rule(out, inp, transposed=True, writes_residual=writes_residual)


def vector(space: str | tuple[str, ...], writes_residual: bool = False) -> Rule:
    """A bias along ``space``: repeated."""
    return Rule(space, writes_residual=writes_residual)


def norm(space: str, writes_residual: bool = False) -> Rule:
    """A LayerNorm/RMSNorm weight or bias over ``space``: repeated (mean/variance of [x,x] equal x's)."""
    return Rule(space, writes_residual=writes_residual)


def embedding(space: str = "residual", writes_residual: bool = False) -> Rule:
    """A lookup table [rows, space]: columns repeated, never divided."""
    return Rule(space, "one", transposed=True, writes_residual=writes_residual)


def head(inp: str = "residual") -> Rule:
    """The LM head [vocab, hidden]: only the input grows, so [W/n, ..., W/n]."""
    return Rule("one", inp)


def router(inp: str = "residual") -> Rule:
    """An MoE router (or a gate) [experts, hidden]: grown like the head, [W/n, ..., W/n], and never noisy.

    Row-cancelling noise cancels only up to rounding, and the rounding of noise as large as the weights
    could swap two experts at a near-tie and change the top-k selection, so noisy variants leave it clean.
    """
    return Rule("one", inp, noiseless=True)


@dataclass(frozen=True)
class FamilySpec:
    """Everything HyperCloning needs to know about one architecture family, as data.

    To add a family, write ``specs/<family>.py`` holding ``SPECS = [FamilySpec(...)]`` that names every
    weight, and add a tiny config of it to ``tests/families.py``.

    - ``tensors``: weight-name patterns (``*`` = a layer index) -> Rule. A
      state-dict key that matches no pattern is an error, never a silent copy.
      Every layer weight starts with the same ``<layer_prefix>*.``.
    - ``config``: config keys multiplied by the factor of the given space.
    - ``config_defaults``: how to fill a size key that the config leaves None.
    - ``space_sizes``: the source size of a space, needed to split fused axes.
    - ``embed``/``lm_head``: the weight names tied embeddings share.
    - ``embed_scale``: the model multiplies embeddings by sqrt(hidden) (Gemma),
      so the cloned table is divided by sqrt(n).
    - ``supports_tie_keep``: whether ``tie="keep"`` may be used (scaling the
      rules marked ``writes_residual`` by 1/n); False where norms or an
      embedding scale make it inexact.
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
    supports_tie_keep: bool = True
    notes: str = ""
    layer_prefix: str = field(init=False, default="")  # what the patterns hold before ``*``, e.g. "model.layers."

    def __post_init__(self) -> None:
        prefix = _layer_prefix(self.model_type, self.tensors)
        object.__setattr__(self, "layer_prefix", prefix or "")
        regex = None if prefix is None else re.compile(rf"{re.escape(prefix)}(\d+)\.(.+)")
        object.__setattr__(self, "_layer_regex", regex)
        for name in (self.embed, self.lm_head):
            self.rule_for(name)  # a spec names the tensors a tie shares
        if self.supports_tie_keep and not any(r.writes_residual for r in self.tensors.values()):
            raise ValueError(f"the {self.model_type} spec supports tie='keep' but marks no rule writes_residual")

    def layer_of(self, name: str) -> int | None:
        """The layer a weight name belongs to; None outside the layers (embeddings, final norm, head)."""
        found = self._split_layer(name)
        return found[0] if found else None

    def with_layer(self, name: str, layer: int) -> str:
        """The same weight in another layer (a name outside the layers is returned as it is)."""
        found = self._split_layer(name)
        return f"{self.layer_prefix}{layer}.{found[1]}" if found else name

    def local_name(self, name: str) -> str:
        """The weight's name within its layer (a name outside the layers is returned as it is)."""
        found = self._split_layer(name)
        return found[1] if found else name

    def rule_for(self, name: str) -> Rule:
        """The rule for a weight name; an error naming the weight when the spec lacks it."""
        found = self._split_layer(name)
        rule = self.tensors.get(f"{self.layer_prefix}{LAYER}.{found[1]}" if found else name)
        if rule is None:
            raise HyperCloneError(
                f"weight {name!r} is not described by the {self.model_type} spec; "
                "refusing to copy it silently (add it to hyperclone/specs)"
            )
        return rule

    def writes_residual(self, name: str) -> bool:
        """Whether the weight's output is added to the residual stream."""
        return self.rule_for(name).writes_residual

    def sources_of(self, names: Iterable[str], tied: bool, keep_tie: bool = False) -> list[tuple[str, str]]:
        """(weight name, the name of the tensor it is read from), in the order of ``names``.

        A tied model's head *is* its embedding, so it is read from the embedding: where ``names`` list
        the head, or after them when they lack it (safetensors stores a shared tensor once). With
        ``keep_tie`` the result shares the embedding, and the head is left out.
        """
        names = list(names)
        if not tied:
            return [(n, n) for n in names]
        pairs = [(n, self.embed if n == self.lm_head else n) for n in names]
        if self.lm_head not in names:
            pairs.append((self.lm_head, self.embed))
        return [p for p in pairs if p[0] != self.lm_head] if keep_tie else pairs

    def _split_layer(self, name: str) -> tuple[int, str] | None:
        found = self._layer_regex.fullmatch(name) if self._layer_regex else None
        return (int(found.group(1)), found.group(2)) if found else None


def _layer_prefix(model_type: str, tensors: Mapping[str, Rule]) -> str | None:
    """What every layer weight's pattern holds before the ``*`` (one prefix per family); None without layers."""
    layered = [p for p in tensors if LAYER in p]
    prefixes = {p.split(LAYER)[0] for p in layered}
    if len(prefixes) > 1 or any(p.count(LAYER) != 1 or f"{LAYER}." not in p for p in layered):
        raise ValueError(f"the {model_type} spec's layer patterns must all read '<prefix>*.<name>': {layered}")
    return prefixes.pop() if prefixes else None
