"""GPT-NeoX / Pythia: fused query_key_value laid out per head as [head, (q,k,v), head_dim].

Repeating the whole fused output n times gives [n*heads, (q,k,v), head_dim]
with the heads copy-major, which is exactly head replication: no split needed.
"""

from __future__ import annotations

from hyperclone.specs.base import FamilySpec, embedding, head, linear, norm, vector

L = "gpt_neox.layers.*."

SPECS = [
    FamilySpec(
        "gpt_neox",
        "EleutherAI/pythia-70m",
        {
            "gpt_neox.embed_in.weight": embedding(writes_residual=True),
            L + "input_layernorm.weight": norm("residual"),
            L + "input_layernorm.bias": norm("residual"),
            L + "post_attention_layernorm.weight": norm("residual"),
            L + "post_attention_layernorm.bias": norm("residual"),
            L + "attention.query_key_value.weight": linear("heads", "residual"),
            L + "attention.query_key_value.bias": vector("heads"),
            L + "attention.dense.weight": linear("residual", "heads", writes_residual=True),
            L + "attention.dense.bias": vector("residual", writes_residual=True),
            L + "mlp.dense_h_to_4h.weight": linear("ffn", "residual"),
            L + "mlp.dense_h_to_4h.bias": vector("ffn"),
            L + "mlp.dense_4h_to_h.weight": linear("residual", "ffn", writes_residual=True),
            L + "mlp.dense_4h_to_h.bias": vector("residual", writes_residual=True),
            "gpt_neox.final_layer_norm.weight": norm("residual"),
            "gpt_neox.final_layer_norm.bias": norm("residual"),
            "lm_head.weight": head(),
        },
        {"hidden_size": "residual", "num_attention_heads": "heads", "intermediate_size": "ffn"},
        "gpt_neox.embed_in.weight",
        notes="parallel residual and partial rotary need nothing special (head_dim is unchanged)",
    )
]
