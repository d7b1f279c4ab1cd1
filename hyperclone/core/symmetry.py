"""How alike are the copies inside a cloned model's weights? (1.0 = identical)

An exact symmetric clone gives every copy the same gradient, so without
something that breaks symmetry (noise, dropout, non-deterministic kernels)
the copies stay identical and the wide model trains like the small one. This
measure makes that visible during training.

For each grown tensor whose *output* axis grows by a > 1, the a output copies
(rows of blocks, each rolled so the diagonal variant's blocks line up) are
compared with the first copy by cosine similarity. Tensors where only the
input grows (the LM head, an MoE router) hold no output copies and are not
counted. A stack of MoE experts [experts, out, in] is measured expert by expert
and reported as the mean over its experts.
"""

from __future__ import annotations

import torch

from hyperclone.core.clone import ClonePlan
from hyperclone.core.grow import split_blocks


def _cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0.0 or nv == 0.0:
        return 1.0 if nu == nv else 0.0
    return float(torch.dot(u, v) / (nu * nv))


def _copies_similarity(t: torch.Tensor, a: int, b: int) -> float:
    if t.dim() == 1:
        chunks = t.reshape(a, -1)
        return sum(_cosine(chunks[i], chunks[0]) for i in range(1, a)) / (a - 1)
    blocks = split_blocks(t, a, b)  # (a, b, out, in)
    copies = [torch.roll(blocks[i], shifts=-i, dims=0).reshape(-1) for i in range(a)]
    return sum(_cosine(copies[i], copies[0]) for i in range(1, a)) / (a - 1)


def symmetry_by_tensor(model, factor: int, ffn_factor: int | None = None) -> dict[str, float]:
    """Cosine similarity between output copies, per grown tensor (fused parts ``name#i``; MoE experts averaged)."""
    plan = ClonePlan.over_wide(model.config, factor, ffn_factor)
    found: dict[str, list[float]] = {}
    with torch.no_grad():
        for name, t in model.state_dict().items():
            rule = plan.spec.rule_for(name)
            for matrix in (t.float() if t.dim() == 3 else [t.float()]):  # a 3-D tensor: one matrix per expert
                for part, piece, a, b in plan.parts_of(name, rule, matrix):
                    if a > 1:
                        found.setdefault(part, []).append(_copies_similarity(rule.as_out_in(piece), a, b))
    return {part: sum(values) / len(values) for part, values in found.items()}


def symmetry(model, factor: int, ffn_factor: int | None = None) -> float:
    """Mean over grown tensors of the copies' cosine similarity: 1.0 means the copies are identical."""
    values = symmetry_by_tensor(model, factor, ffn_factor)
    return sum(values.values()) / len(values) if values else 1.0
