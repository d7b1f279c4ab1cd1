"""Llama-shaped decoders: separate q/k/v/o projections, gated MLP, pre-norm.

Llama, Mistral, Qwen2/3, OLMo/OLMo2 and Gemma 1/2/3 share these weight names
and differ only in a few norms and special cases, listed per family below.
"""

from __future__ import annotations

from hyperclone.specs.base import FamilySpec, embedding, head, linear, norm, vector

L = "model.layers.*."

DECODER = {
    "model.embed_tokens.weight": embedding(writes_residual=True),
    L + "self_attn.q_proj.weight": linear("heads", "residual"),
    L + "self_attn.k_proj.weight": linear("kv", "residual"),
    L + "self_attn.v_proj.weight": linear("kv", "residual"),
    L + "self_attn.o_proj.weight": linear("residual", "heads", writes_residual=True),
    L + "self_attn.q_proj.bias": vector("heads"),
    L + "self_attn.k_proj.bias": vector("kv"),
    L + "self_attn.v_proj.bias": vector("kv"),
    L + "self_attn.o_proj.bias": vector("residual", writes_residual=True),
    L + "mlp.gate_proj.weight": linear("ffn", "residual"),
    L + "mlp.up_proj.weight": linear("ffn", "residual"),
    L + "mlp.down_proj.weight": linear("residual", "ffn", writes_residual=True),
    L + "mlp.gate_proj.bias": vector("ffn"),
    L + "mlp.up_proj.bias": vector("ffn"),
    L + "mlp.down_proj.bias": vector("residual", writes_residual=True),
    L + "input_layernorm.weight": norm("residual"),
    L + "post_attention_layernorm.weight": norm("residual"),
    "model.norm.weight": norm("residual"),
    "lm_head.weight": head(),
}
CONFIG = {
    "hidden_size": "residual",
    "num_attention_heads": "heads",
    "num_key_value_heads": "kv",
    "intermediate_size": "ffn",
}
DEFAULTS = {"num_key_value_heads": lambda c: c.num_attention_heads}
PER_HEAD_QK_NORM = {L + "self_attn.q_norm.weight": norm("one"), L + "self_attn.k_norm.weight": norm("one")}
SANDWICH_NORMS = {
    L + "pre_feedforward_layernorm.weight": norm("residual"),
    L + "post_feedforward_layernorm.weight": norm("residual"),
}
# OLMo2 normalises each sublayer's output before adding it: the norms write the residual, not the projections.
OLMO2 = {
    L + "self_attn.q_norm.weight": norm("heads"),
    L + "self_attn.k_norm.weight": norm("kv"),
    L + "self_attn.o_proj.weight": linear("residual", "heads"),
    L + "self_attn.o_proj.bias": vector("residual"),
    L + "mlp.down_proj.weight": linear("residual", "ffn"),
    L + "mlp.down_proj.bias": vector("residual"),
    L + "post_attention_layernorm.weight": norm("residual", writes_residual=True),
    L + "post_feedforward_layernorm.weight": norm("residual", writes_residual=True),
}


def _family(model_type: str, example: str, extra: dict | None = None, **kw) -> FamilySpec:
    return FamilySpec(
        model_type, example, {**DECODER, **(extra or {})}, CONFIG, "model.embed_tokens.weight",
        config_defaults=DEFAULTS, **kw,
    )


SPECS = [
    _family("llama", "HuggingFaceTB/SmolLM2-135M", notes="GQA/MQA: KV heads grow with the query heads"),
    _family("mistral", "mistralai/Mistral-7B-v0.1"),
    _family("qwen2", "Qwen/Qwen2.5-0.5B", notes="q/k/v biases repeated like the heads"),
    _family("qwen3", "Qwen/Qwen3-0.6B", PER_HEAD_QK_NORM, notes="q/k norms act per head over head_dim: unchanged"),
    _family("olmo", "allenai/OLMo-1B-hf", notes="non-parametric LayerNorm: nothing to grow"),
    _family("olmo2", "allenai/OLMo-2-0425-1B", OLMO2, notes="q/k norms span the whole projection: repeated"),
    _family("gemma", "google/gemma-2b", embed_scale=True, supports_tie_keep=False,
            notes="embeddings are scaled by sqrt(hidden): the clone divides them by sqrt(n)"),
    _family("gemma2", "google/gemma-2-2b", SANDWICH_NORMS, embed_scale=True, supports_tie_keep=False,
            notes="softcapping and query scaling kept as they are"),
    _family("gemma3_text", "google/gemma-3-1b-pt", {**SANDWICH_NORMS, **PER_HEAD_QK_NORM}, embed_scale=True,
            supports_tie_keep=False),
]
