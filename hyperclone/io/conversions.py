"""transformers' checkpoint conversions (v5), one tensor at a time: merged on load, split on save.

transformers v5 keeps some weights in a fused layout that checkpoints do not
store. Mixture-of-experts models are the case HyperClone meets: a model holds
``mlp.experts.gate_up_proj`` [experts, 2 x ffn, hidden] while hub checkpoints,
and what ``save_pretrained`` writes, hold one ``experts.<e>.w1/w3`` (or
``gate_proj``/``up_proj``) matrix per expert. ``from_pretrained`` merges them
with the model's ``WeightConverter``s and ``save_pretrained`` splits them back.
Streaming does the same through transformers' own converters: ``MergedTensor``
assembles one model tensor from its stored parts when it is read, and
``saved_form`` gives what ``save_pretrained`` writes for one wide tensor.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from hyperclone.core.errors import SourceError, first_line

Reader = Callable[[Path, str, tuple[int, ...]], torch.Tensor]  # (file, key, stored shape) -> tensor


@dataclass
class MergedTensor:
    """A model tensor that ``from_pretrained`` assembles from several stored tensors (e.g. one per expert)."""

    name: str
    converter: Any  # the transformers WeightConverter that matched its parts (a template: copied per use)
    parts: list[tuple[str, Path, str, tuple[int, ...]]] = field(default_factory=list)  # (pattern, file, key, shape)

    def add(self, pattern: str, path: Path, key: str, shape: tuple[int, ...]) -> None:
        self.parts.append((pattern, path, key, shape))

    @property
    def first(self) -> tuple[Path, str]:
        """(file, key) of the first stored part, in checkpoint order."""
        return self._ordered()[0][1:3]

    def shape(self) -> tuple[int, ...]:
        """The assembled shape, worked out on the meta device (nothing is read)."""
        return tuple(self.assemble(lambda path, key, shape: torch.empty(shape, device="meta")).shape)

    def assemble(self, read: Reader) -> torch.Tensor:
        """The model tensor: the parts read with ``read`` and merged as ``from_pretrained`` merges them."""
        counts = {p: sum(part[0] == p for part in self.parts) for p in self.converter.source_patterns}
        if len(set(counts.values())) > 1:
            found = ", ".join(f"{n} x {p!r}" for p, n in counts.items())
            raise SourceError(f"the stored tensors of {self.name!r} do not pair up ({found}); "
                              "the checkpoint lacks some (a missing or damaged shard?)")
        converter = copy.deepcopy(self.converter)  # transformers gives each target its own converter, too
        for pattern, path, key, shape in self._ordered():
            converter.add_tensor(self.name, key, pattern, functools.partial(read, path, key, shape))
        try:
            out = converter.convert(self.name)
        except Exception as e:  # transformers raises whatever its ops raise
            raise SourceError(f"{self.name!r} could not be assembled from its {len(self.parts)} stored tensors "
                              f"({self.parts[0][2]!r}, ...) as transformers merges them: {first_line(e)}") from None
        if list(out) != [self.name]:
            raise SourceError(f"merging the stored tensors of {self.name!r} gave {sorted(out)[:3]}; "
                              "this checkpoint conversion is not supported for streaming (use --in-memory)")
        return out[self.name]

    def _ordered(self) -> list[tuple[str, Path, str, tuple[int, ...]]]:
        from transformers.core_model_loading import dot_natural_key

        return sorted(self.parts, key=lambda p: dot_natural_key(p[2]))  # experts.2 before experts.10, as on load


def converter_of(model: torch.nn.Module) -> Callable[[str], Any]:
    """Source pattern (as ``rename_source_key`` reports it) -> the model's ``WeightConverter`` holding it."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    converters = [m for m in get_model_conversion_mapping(model) if isinstance(m, WeightConverter)]
    return {p: c for c in converters for p in c.source_patterns}.__getitem__


def saved_form(model: torch.nn.Module, names: list[str]) -> Callable[[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(name, tensor) -> what ``save_pretrained`` writes for the model's tensor ``name``.

    Most tensors are written as they are, under their saved key (transformers restores legacy keys, e.g.
    GPT-NeoX ``embed_out``); a fused tensor is split into the stored tensors it came from (v5 MoE: one
    per expert), each a copy of its own (safetensors refuses tensors that share memory).
    """
    from transformers.core_model_loading import revert_weight_conversion

    shapes = {k: v.shape for k, v in model.state_dict().items()}
    placeholders = {n: torch.empty(shapes[n], device="meta") for n in names}
    saved = revert_weight_conversion(model, dict(placeholders))
    by_id = {id(t): k for k, t in saved.items()}
    keys = {n: by_id[id(t)] for n, t in placeholders.items() if id(t) in by_id}

    def form(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        if name in keys:
            return {keys[name]: tensor}
        return {k: v.clone() for k, v in revert_weight_conversion(model, {name: tensor}).items()}

    return form
