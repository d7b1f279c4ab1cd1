"""Tiled weight heatmaps: a source matrix beside its clone, with the block grid drawn.

Shared by the dashboard and the notebooks. Matrices are shown as [out, in]
(GPT-2 Conv1D and embedding tables are transposed for display) and large ones
are average-pooled for display, with the pooling factor stated in the title.
A stack of MoE experts [experts, out, in] is shown one expert at a time.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .clone import ClonePlan
from .grow import split_blocks
from .specs import spec_for


def matrix_names(model) -> list[str]:
    """Names of the model's matrices and expert stacks, in state-dict order (what a heatmap can show)."""
    return [name for name, t in model.state_dict().items() if t.dim() in (2, 3)]


def expert_count(model, name: str) -> int:
    """How many experts the weight ``name`` stacks (MoE [experts, out, in]); 0 for a plain matrix."""
    t = model.state_dict()[name]
    return int(t.shape[0]) if t.dim() == 3 else 0


def pick_expert(t: torch.Tensor, expert: int) -> torch.Tensor:
    """Expert ``expert``'s matrix of a 3-D expert stack; a matrix as it is."""
    if t.dim() != 3:
        return t
    if not 0 <= expert < t.shape[0]:
        raise KeyError(f"expert {expert} does not exist: this weight stacks {t.shape[0]} experts (0-{t.shape[0] - 1})")
    return t[expert]


def matrices_by_layer(model) -> dict[str, dict[str, str]]:
    """The model's 2-D weights grouped for a picker: "layer N" or "embeddings & head" -> {name in the layer: name}."""
    spec = spec_for(model.config)
    groups: dict[str, dict[str, str]] = {}
    for name in matrix_names(model):
        layer = spec.layer_of(name)
        groups.setdefault("embeddings & head" if layer is None else f"layer {layer}", {})[spec.local_name(name)] = name
    return groups


def as_out_in(plan: ClonePlan, name: str, t: torch.Tensor) -> torch.Tensor:
    """The tensor as [out, in] (undoing [in, out] storage)."""
    return plan.spec.rule_for(name).as_out_in(t).detach().float().cpu()


def block_edges(plan: ClonePlan, name: str, wide_shape: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Row and column indices (in the wide [out, in] matrix) where blocks start."""
    rule = plan.spec.rule_for(name)
    rows, cols = wide_shape
    factors = plan.factors_of(rule)
    row_edges, start = [], 0
    for size, (a, _) in zip(plan.part_sizes(name, rule, rows), factors):
        row_edges += [start + i * size // a for i in range(a)]
        start += size
    b = factors[0][1]
    return row_edges[1:], [i * cols // b for i in range(1, b)]


def downsample(m: torch.Tensor, max_side: int) -> tuple[torch.Tensor, int]:
    """Average-pool a matrix so neither side exceeds ``max_side``; returns (matrix, pooling factor)."""
    k = max(1, math.ceil(max(m.shape) / max_side))
    if k == 1:
        return m, 1
    pooled = torch.nn.functional.avg_pool2d(m[None, None], k, ceil_mode=True)[0, 0]
    return pooled, k


def row_block_sums(plan: ClonePlan, name: str, wide: torch.Tensor) -> torch.Tensor | None:
    """Sum of the first row of blocks: what one output copy computes from [x, ..., x] (equals W)."""
    factors = plan.factors_of(plan.spec.rule_for(name))
    if len(factors) > 1:
        return None
    (a, b), = factors
    return split_blocks(wide, a, b)[0].sum(0)


def clone_heatmaps(source, wide, name: str, factor: int, ffn_factor: int | None = None, max_side: int = 96,
                   expert: int = 0) -> go.Figure:
    """Source matrix | cloned matrix with its block grid | sum of one row of blocks, one colour scale.

    For a stack of MoE experts, ``expert`` picks the one shown (each grows like a matrix of its own).
    """
    plan = ClonePlan.over_wide(wide.config, factor, ffn_factor)
    src_state, wide_state = source.state_dict(), wide.state_dict()
    if name not in wide_state:
        raise KeyError(f"{name!r} is not a weight of the cloned model")
    w_src = as_out_in(plan, name, pick_expert(src_state[name], expert))
    w_wide = as_out_in(plan, name, pick_expert(wide_state[name], expert))
    sums = row_block_sums(plan, name, w_wide)
    panels = [("source W", w_src), ("clone (block grid)", w_wide)]
    if sums is not None:
        err = float((sums - w_src).abs().max()) if sums.shape == w_src.shape else float("nan")
        panels.append((f"sum of a block row (max |diff| vs W: {err:.1e})", sums))
    shown = [(title, *downsample(m, max_side)) for title, m in panels]
    scale = max(float(m.abs().max()) for _, m, _ in shown) or 1.0
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[
        f"{t} {tuple(m.shape)}" + (f", shown pooled {k}x" if k > 1 else "") for (t, m), (_, _, k) in zip(panels, shown)
    ])
    for i, (_, m, _) in enumerate(shown, start=1):
        fig.add_trace(go.Heatmap(z=m.numpy(), zmin=-scale, zmax=scale, colorscale="RdBu", showscale=i == len(shown),
                                 coloraxis=None), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    rows, cols = block_edges(plan, name, tuple(w_wide.shape))
    k = shown[1][2]
    for r in rows:
        fig.add_hline(y=r / k - 0.5, line=dict(color="black", width=1), row=1, col=2)
    for c in cols:
        fig.add_vline(x=c / k - 0.5, line=dict(color="black", width=1), row=1, col=2)
    made = getattr(wide, "hyperclone_plan", None)
    fig.update_layout(title=f"{name}: x{factor} clone" + (f" ({made.variant})" if made else ""),
                      height=380, margin=dict(l=20, r=20, t=70, b=20))
    if wide_state[name].dim() == 3:
        fig.update_layout(title=f"{fig.layout.title.text}, expert {expert} of {wide_state[name].shape[0]}")
    return fig
