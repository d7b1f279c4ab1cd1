"""Mixture-of-experts decoders: Llama-shaped attention, a router and a stack of experts per layer.

transformers v5 stores each layer's experts as fused 3-D parameters
(``mlp.experts.gate_up_proj`` [experts, 2 x ffn, hidden], gate rows then up
rows, and ``mlp.experts.down_proj`` [experts, hidden, ffn]) and the router as
``mlp.gate.weight`` [experts, hidden]. The expert axis never grows: each
expert grows like the dense MLP (``ClonePlan`` grows a 3-D tensor expert by
expert, seeding noise per expert). The router reads the residual stream and
writes one logit per expert, so it grows like the LM head, [W/n, ..., W/n],
and is never noisy: the number of experts, top-k and the selection stay.
Checkpoints on the hub and those ``save_pretrained`` writes hold one tensor per
expert (``experts.0.w1.weight``...); ``checkpoint.read_layout`` merges them as
``from_pretrained`` does.
"""

from __future__ import annotations

from hyperclone.core.errors import SourceError
from hyperclone.specs.base import FamilySpec, linear, norm, router
from hyperclone.specs.llama import CONFIG, DECODER, DEFAULTS, PER_HEAD_QK_NORM

L = "model.layers.*."

EXPERTS = {
    L + "mlp.gate.weight": router(),
    L + "mlp.experts.gate_up_proj": linear(("ffn", "ffn"), "residual"),
    L + "mlp.experts.down_proj": linear("residual", "ffn", writes_residual=True),
}
# Qwen2-MoE adds a shared expert (a dense gated MLP) whose output is scaled by sigmoid(shared_expert_gate(x)).
SHARED_EXPERT = {
    L + "mlp.shared_expert.gate_proj.weight": linear("ffn", "residual"),
    L + "mlp.shared_expert.up_proj.weight": linear("ffn", "residual"),
    L + "mlp.shared_expert.down_proj.weight": linear("residual", "ffn", writes_residual=True),
    L + "mlp.shared_expert_gate.weight": router(),
}
# OLMoE normalises q and k over the whole projection (like OLMo2), before the heads are split.
WHOLE_QK_NORM = {L + "self_attn.q_norm.weight": norm("heads"), L + "self_attn.k_norm.weight": norm("kv")}
# Qwen-MoE expert width, and the shared expert's; dense layers (mlp_only_layers) use intermediate_size.
QWEN_CONFIG = {**CONFIG, "moe_intermediate_size": "ffn", "shared_expert_intermediate_size": "ffn"}


def _family(model_type: str, example: str, extra: dict, config: dict, notes: str) -> FamilySpec:
    return FamilySpec(
        model_type, example, {**DECODER, **EXPERTS, **extra}, config, "model.embed_tokens.weight",
        config_defaults=DEFAULTS, notes=notes,
    )


SPECS = [
    _family("mixtral", "mistralai/Mixtral-8x7B-v0.1", {}, CONFIG,
            "MoE: experts grow one by one (expert count and top-k stay); router [W/n ...], never noisy"),
    _family("qwen2_moe", "Qwen/Qwen1.5-MoE-A2.7B", SHARED_EXPERT, QWEN_CONFIG,
            "MoE, plus a shared expert (grown like an MLP) and its gate (like the router)"),
    _family("qwen3_moe", "Qwen/Qwen3-30B-A3B", PER_HEAD_QK_NORM, QWEN_CONFIG,
            "MoE; q/k norms act per head over head_dim: unchanged"),
    _family("olmoe", "allenai/OLMoE-1B-7B-0924", WHOLE_QK_NORM, CONFIG,
            "MoE; q/k norms span the whole projection: repeated"),
]


def check_expert_counts(config, what: str) -> None:
    """Refuse, in one line naming ``what``, a mixture-of-experts config whose top-k is not 1 to its number of
    experts (the router could not pick that many: the model fails at its first token); others pass."""
    top_k = getattr(config, "num_experts_per_tok", None)
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    if top_k is None or experts is None:
        return
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (top_k, experts)) or not 1 <= top_k <= experts:
        raise SourceError(f"{what} routes each token to num_experts_per_tok={top_k!r} experts of "
                          f"{experts!r}; it must be a whole number from 1 to the number of experts (fix the config)")
