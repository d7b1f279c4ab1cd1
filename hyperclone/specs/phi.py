"""Phi (1, 1.5, 2: LayerNorm, parallel residual, biased head) and Phi-3 (fused qkv_proj, gate_up_proj)."""

from __future__ import annotations

from hyperclone.specs.base import FamilySpec, embedding, head, linear, norm, vector
from hyperclone.specs.llama import CONFIG, DEFAULTS

L = "model.layers.*."


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _kv_heads(c) -> int:
    return getattr(c, "num_key_value_heads", None) or c.num_attention_heads


SPECS = [
    FamilySpec(
        "phi",
        "microsoft/phi-1_5",
        {
            "model.embed_tokens.weight": embedding(writes_residual=True),
            L + "self_attn.q_proj.weight": linear("heads", "residual"),
            L + "self_attn.k_proj.weight": linear("kv", "residual"),
            L + "self_attn.v_proj.weight": linear("kv", "residual"),
            L + "self_attn.dense.weight": linear("residual", "heads", writes_residual=True),
            L + "self_attn.q_proj.bias": vector("heads"),
            L + "self_attn.k_proj.bias": vector("kv"),
            L + "self_attn.v_proj.bias": vector("kv"),
            L + "self_attn.dense.bias": vector("residual", writes_residual=True),
            L + "self_attn.q_layernorm.weight": norm("one"),
            L + "self_attn.q_layernorm.bias": norm("one"),
            L + "self_attn.k_layernorm.weight": norm("one"),
            L + "self_attn.k_layernorm.bias": norm("one"),
            L + "mlp.fc1.weight": linear("ffn", "residual"),
            L + "mlp.fc1.bias": vector("ffn"),
            L + "mlp.fc2.weight": linear("residual", "ffn", writes_residual=True),
            L + "mlp.fc2.bias": vector("residual", writes_residual=True),
            L + "input_layernorm.weight": norm("residual"),
            L + "input_layernorm.bias": norm("residual"),
            "model.final_layernorm.weight": norm("residual"),
            "model.final_layernorm.bias": norm("residual"),
            "lm_head.weight": head(),
            "lm_head.bias": vector("one"),
        },
        CONFIG,
        "model.embed_tokens.weight",
        config_defaults=DEFAULTS,
        notes="the head's bias does not grow (only its input does)",
    ),
    FamilySpec(
        "phi3",
        "microsoft/Phi-3-mini-4k-instruct",
        {
            "model.embed_tokens.weight": embedding(writes_residual=True),
            L + "self_attn.qkv_proj.weight": linear(("heads", "kv", "kv"), "residual"),
            L + "self_attn.o_proj.weight": linear("residual", "heads", writes_residual=True),
            L + "mlp.gate_up_proj.weight": linear(("ffn", "ffn"), "residual"),
            L + "mlp.down_proj.weight": linear("residual", "ffn", writes_residual=True),
            L + "input_layernorm.weight": norm("residual"),
            L + "post_attention_layernorm.weight": norm("residual"),
            "model.norm.weight": norm("residual"),
            "lm_head.weight": head(),
        },
        CONFIG,
        "model.embed_tokens.weight",
        space_sizes={
            "heads": lambda c: c.num_attention_heads * _head_dim(c),
            "kv": lambda c: _kv_heads(c) * _head_dim(c),
            "ffn": lambda c: c.intermediate_size,
        },
        config_defaults=DEFAULTS,
        notes="fused qkv_proj and gate_up_proj split into parts, each grown, fused again",
    ),
]
