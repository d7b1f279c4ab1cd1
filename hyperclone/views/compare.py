"""Side-by-side facts about a source model and its clone: sizes, config changes, logits, greedy text.

Small read-only helpers shared by the dashboard and the notebooks; nothing
here changes a model.
"""

from __future__ import annotations

from typing import Any

import torch

from hyperclone.specs import REGISTRY

# Config keys that say nothing about the architecture (left out of diffs).
_NOISE_KEYS = frozenset({"_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype"})


def _first(config: Any, *keys: str) -> Any:
    for key in keys:
        value = getattr(config, key, None)
        if value is not None:
            return value
    return None


def ffn_size(config: Any) -> int | None:
    """The FFN (intermediate) size, read through the family's spec when there is one."""
    spec = REGISTRY.get(getattr(config, "model_type", None))
    if spec is not None:
        for key, space in spec.config.items():
            if space != "ffn":
                continue
            value = getattr(config, key, None)
            if value is None and key in spec.config_defaults:
                value = spec.config_defaults[key](config)
            if value is not None:
                return int(value)
    value = _first(config, "intermediate_size", "ffn_dim", "n_inner")
    return int(value) if value is not None else None


def describe(config: Any, n_params: int | None = None) -> dict[str, Any]:
    """Family, parameters, hidden size, heads, KV heads, layers, FFN, vocabulary and context of a config."""
    heads = _first(config, "num_attention_heads", "n_head")
    return {
        "family": getattr(config, "model_type", "?"),
        "parameters": n_params,
        "hidden": _first(config, "hidden_size", "n_embd", "d_model"),
        "heads": heads,
        "kv heads": _first(config, "num_key_value_heads") or heads,
        "layers": _first(config, "num_hidden_layers", "n_layer"),
        "FFN": ffn_size(config),
        "vocab": _first(config, "vocab_size"),
        "context": _first(config, "max_position_embeddings", "n_positions"),
    }


def config_diff(source_config: Any, wide_config: Any) -> list[dict[str, Any]]:
    """Config keys whose values differ between source and clone: ``[{key, source, clone}]``."""
    a, b = source_config.to_dict(), wide_config.to_dict()
    rows = []
    for key in sorted(set(a) | set(b)):
        if key in _NOISE_KEYS or a.get(key) == b.get(key):
            continue
        rows.append({"key": key, "source": str(a.get(key)), "clone": str(b.get(key))})
    return rows


def context_length(config: Any, default: int = 1024) -> int:
    return int(_first(config, "max_position_embeddings", "n_positions") or default)


def encode(tokenizer: Any, text: str, config: Any, reserve: int = 0) -> torch.Tensor:
    """``text`` as a [1, T] id tensor, keeping the last tokens so that T + reserve fits the context."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    keep = max(1, context_length(config) - reserve)
    return ids[:, -keep:]


def token_counts(tokenizer: Any, text: str, config: Any, reserve: int = 0) -> tuple[int, int]:
    """(tokens ``encode`` keeps, tokens in ``text``): fewer kept than written when the text is longer than the
    model's context (its first tokens are left out)."""
    total = len(tokenizer(text)["input_ids"])
    return min(total, max(1, context_length(config) - reserve)), total


@torch.no_grad()
def logits_pair(source, wide, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits on the same ids, as float32 CPU tensors of shape [T, vocab]."""
    out = []
    for model in (source, wide):
        device = next(model.parameters()).device
        out.append(model(input_ids=input_ids.to(device), use_cache=False).logits[0].float().cpu())
    return out[0], out[1]


@torch.no_grad()
def greedy(model, tokenizer: Any, input_ids: torch.Tensor, max_new_tokens: int = 40) -> str:
    """The greedy continuation of ``input_ids`` (the new text only)."""
    device = next(model.parameters()).device
    eos = getattr(tokenizer, "eos_token_id", None)
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=torch.ones_like(input_ids, device=device),
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, top_k=None, top_p=None, temperature=None,
        pad_token_id=eos if eos is not None else 0,
    )
    return tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=False)
