"""Checking a clone written to disk against its source on disk, whole or by sampled layers.

A streamed clone may be too large to load next to its source. Then both are
rebuilt truncated to a few layers (first, middle, last) plus the embeddings,
final norm and head, reading only those tensors from the checkpoints, and
``verify.verify`` compares the two small models: every written tensor of those
layers is checked end to end through a forward pass. This lives apart from
``verify.py``, which compares two models already in memory, because it is
about checkpoints: their layouts, lazy reads and what fits in free memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from hyperclone.core import resources
from hyperclone.io.checkpoint import LazyTensors, SourceLayout, has_tokenizer, read_layout
from hyperclone.core.pretrained import meta_model, state_shapes
from hyperclone.core.clone import ClonePlan, config_for_layers, model_from_state
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.pretrained import from_pretrained
from hyperclone.io.sources import check_device, load_config
from hyperclone.specs import spec_for
from hyperclone.core.verify import verify



def sample_layers(n_layers: int) -> list[int]:
    """First, middle and last layer: where a wrong rule or a truncated shard would show first."""
    return sorted({0, n_layers // 2, n_layers - 1}) if n_layers > 0 else []


def verify_streamed(
    src: str | Path,
    out: str | Path,
    plan: ClonePlan,
    layout: SourceLayout | None = None,
    mode: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    text: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Compare a streamed clone's logits and hidden states with its source's.

    ``full`` loads both models; ``sample`` builds both models truncated to
    the first, middle and last layers (plus embeddings, final norm and head),
    reading only those tensors from disk, so every written tensor of those
    layers is checked end to end through a forward pass; ``auto`` picks full
    when both models fit in free memory. Returns (record, report).
    """
    src, out = Path(src), Path(out)
    layout = layout or read_layout(src, load_config(src, src / "config.json", trust_remote_code=False))
    device = check_device(device)
    dtype = dtype or layout.common_dtype()
    wide_config = load_config(out, trust_remote_code=False)  # written by us: never custom code
    n_layers = int(plan.source_config.num_hidden_layers)
    mode, why = _choose_mode(mode, layout, wide_config, dtype, device, n_layers)
    layers = list(range(n_layers)) if mode == "full" else sample_layers(n_layers)
    if mode != "full":
        if not plan.function_preserving:
            return {"method": "none", "note": f"{why}; a stacked model is not function-preserving by design, so its "
                    "logits are not expected to match and no sampled check was made"}, None
        why += (f"; checked a {len(layers)}-layer model made of layers {layers} of {n_layers} plus "
                "the embeddings, final norm and head")
    wide_layers, layer_map = _wide_layers(plan, layers)
    src_model = _load_layers(layout.config, LazyTensors(layout), layers, dtype)
    wide_model = _load_layers(wide_config, LazyTensors(read_layout(out, wide_config)), wide_layers, dtype)
    input_ids = None if text is None else _encode(src, text, trust_remote_code)
    report = verify(src_model.to(device).eval(), wide_model.to(device).eval(), input_ids=input_ids,
                    approximate=plan.keep_tied, layer_numbers=layers, layer_map=layer_map,
                    function_preserving=plan.function_preserving)
    del src_model, wide_model
    record = {"method": "full" if mode == "full" else "sampled layers", "layers": layers, "n_layers": n_layers,
              "device": str(device), "passed": bool(report.passed), "note": why}
    if plan.depth > 1:
        record["wide_layers"] = wide_layers
    if not plan.function_preserving:
        record["note"] += "; stacked layers are not function-preserving by design, so a difference is expected"
    return record, report


def _wide_layers(plan: ClonePlan, layers: list[int]) -> tuple[list[int], list[int] | None]:
    """The clone's layers to load for the source's ``layers``, and the layer map between the two truncated models.

    Depth-grown: each source layer with the new blocks that follow it (the map points at the last of them);
    stacked: every wide layer (only a full check is made, and it has no map).
    """
    if plan.depth == 1:
        return layers, None
    if not plan.function_preserving:
        return list(range(len(plan.layer_sources))), None
    groups = plan.growth.layer_groups(plan.n_layers)
    wide = [j for i in layers for j in groups[i]]
    ends = [sum(len(groups[i]) for i in layers[:k + 1]) - 1 for k in range(len(layers))]
    return wide, ends


def _choose_mode(mode: str, layout: SourceLayout, wide_config, dtype: torch.dtype, device: torch.device,
                 n_layers: int) -> tuple[str, str]:
    """("full" or "sample", why): ``auto`` becomes full when both models fit in free memory with 20% to spare."""
    elem = resources.dtype_bytes(dtype)
    src_bytes = sum(math.prod(s) for s in layout.shapes.values()) * elem
    out_bytes = sum(math.prod(s) for s in state_shapes(meta_model(wide_config)).values()) * elem
    need_full = int((src_bytes + out_bytes) * 1.2)
    free = resources.free_bytes(device)
    if mode == "auto":
        mode = "full" if need_full <= free else "sample"
    if mode == "full":
        return mode, f"both models loaded ({resources.human_bytes(src_bytes + out_bytes)})"
    return mode, (f"the full models need ~{resources.human_bytes(need_full)} and {resources.human_bytes(free)} "
                  f"is free on {device}")


def _encode(src: Path, text: str, trust_remote_code: bool) -> torch.Tensor:
    """The token ids of ``text`` under the source's tokenizer."""
    from transformers import AutoTokenizer

    if not has_tokenizer(src):
        raise HyperCloneError(f"--text needs a tokenizer, and {src} has none")
    tokenizer = from_pretrained(AutoTokenizer, src, trust_remote_code=trust_remote_code)
    input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if input_ids.numel() == 0:
        raise HyperCloneError("the verification text encodes to no tokens; give a non-empty text")
    return input_ids


def _load_layers(config, tensors: LazyTensors, layers: list[int], dtype: torch.dtype):
    """A model of ``config`` holding only ``layers`` (renumbered 0..k-1), read tensor by tensor."""
    cfg = config_for_layers(config, layers)
    names = state_shapes(meta_model(cfg))
    state = {}
    spec = spec_for(cfg)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for name in names:
        if tied and name == spec.lm_head:
            continue  # model_from_state ties it
        layer = spec.layer_of(name)
        src_name = name if layer is None else spec.with_layer(name, layers[layer])
        t = tensors[src_name]
        state[name] = t.to(dtype) if t.is_floating_point() else t
    return model_from_state(cfg, state)
