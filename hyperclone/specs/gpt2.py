"""GPT-2: Conv1D weights stored [in, out], fused c_attn = [q; k; v], learned positions."""

from __future__ import annotations

from hyperclone.specs.base import FamilySpec, conv1d, embedding, head, norm, vector

H = "transformer.h.*."

SPECS = [
    FamilySpec(
        "gpt2",
        "openai-community/gpt2",
        {
            "transformer.wte.weight": embedding(writes_residual=True),
            "transformer.wpe.weight": embedding(writes_residual=True),
            H + "ln_1.weight": norm("residual"),
            H + "ln_1.bias": norm("residual"),
            H + "attn.c_attn.weight": conv1d(("heads", "heads", "heads"), "residual"),
            H + "attn.c_attn.bias": vector(("heads", "heads", "heads")),
            H + "attn.c_proj.weight": conv1d("residual", "heads", writes_residual=True),
            H + "attn.c_proj.bias": vector("residual", writes_residual=True),
            H + "ln_2.weight": norm("residual"),
            H + "ln_2.bias": norm("residual"),
            H + "mlp.c_fc.weight": conv1d("ffn", "residual"),
            H + "mlp.c_fc.bias": vector("ffn"),
            H + "mlp.c_proj.weight": conv1d("residual", "ffn", writes_residual=True),
            H + "mlp.c_proj.bias": vector("residual", writes_residual=True),
            "transformer.ln_f.weight": norm("residual"),
            "transformer.ln_f.bias": norm("residual"),
            "lm_head.weight": head(),
        },
        {"n_embd": "residual", "n_head": "heads", "n_inner": "ffn"},
        "transformer.wte.weight",
        space_sizes={"heads": lambda c: c.n_embd},
        config_defaults={"n_inner": lambda c: 4 * c.n_embd},
        notes="fused c_attn split into q, k, v, each grown, fused again",
    )
]
