"""OPT: learned positions, optional project_in/out when word_embed_proj_dim != hidden, pre- or post-LN."""

from __future__ import annotations

from hyperclone.specs.base import FamilySpec, embedding, head, linear, norm, vector

D = "model.decoder."
L = D + "layers.*."

SPECS = [
    FamilySpec(
        "opt",
        "facebook/opt-125m",
        {
            D + "embed_tokens.weight": embedding("embed_proj"),
            D + "embed_positions.weight": embedding("residual"),
            D + "project_in.weight": linear("residual", "embed_proj"),
            D + "project_out.weight": linear("embed_proj", "residual"),
            D + "final_layer_norm.weight": norm("residual"),
            D + "final_layer_norm.bias": norm("residual"),
            L + "self_attn.q_proj.weight": linear("heads", "residual"),
            L + "self_attn.k_proj.weight": linear("heads", "residual"),
            L + "self_attn.v_proj.weight": linear("heads", "residual"),
            L + "self_attn.out_proj.weight": linear("residual", "heads", writes_residual=True),
            L + "self_attn.q_proj.bias": vector("heads"),
            L + "self_attn.k_proj.bias": vector("heads"),
            L + "self_attn.v_proj.bias": vector("heads"),
            L + "self_attn.out_proj.bias": vector("residual", writes_residual=True),
            L + "self_attn_layer_norm.weight": norm("residual"),
            L + "self_attn_layer_norm.bias": norm("residual"),
            L + "fc1.weight": linear("ffn", "residual"),
            L + "fc1.bias": vector("ffn"),
            L + "fc2.weight": linear("residual", "ffn", writes_residual=True),
            L + "fc2.bias": vector("residual", writes_residual=True),
            L + "final_layer_norm.weight": norm("residual"),
            L + "final_layer_norm.bias": norm("residual"),
            "lm_head.weight": head("embed_proj"),
        },
        {"hidden_size": "residual", "num_attention_heads": "heads", "ffn_dim": "ffn", "word_embed_proj_dim": "embed_proj"},
        D + "embed_tokens.weight",
        supports_tie_keep=False,
        notes="post-LN (do_layer_norm_before=False) needs nothing special: LN([x,x]) = [LN x, LN x]",
    )
]
