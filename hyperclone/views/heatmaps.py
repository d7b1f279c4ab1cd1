"""Tiled weight heatmaps: a source matrix beside its clone, with the block grid drawn.

Shared by the dashboard and the notebooks. Matrices are shown as [out, in]
(GPT-2 Conv1D and embedding tables are transposed for display); of a large one,
every k-th row and column is drawn (real entries, never averages, so equal weights
have equal colours on every panel, whatever each panel's size), and every axis counts
the matrix's real rows and columns, so the block grid and the ticks mean the same
thing at any size. One colour scale for all panels, compressed (asinh) so that the
W/n blocks of a large factor still show.
A stack of MoE experts [experts, out, in] is shown one expert at a time.
"""

from __future__ import annotations

import math

import plotly.colors as pcolors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from hyperclone.core.clone import ClonePlan
from hyperclone.core.grow import split_blocks
from hyperclone.specs import spec_for

# Subplot titles at 14 px (readable on a projector): a character is about 7.5 px wide, so a line of 28 characters
# takes ~210 px, one panel of a figure ~760 px wide or wider (the dashboard stretches it to the page); checked
# by tests/test_heatmaps.py.
TITLE_FONT = 14
TITLE_CHARS = 28
# The colour scale: colour at value v is RdBu at asinh(COMPRESS·v/scale)/asinh(COMPRESS), the same for every panel;
# a block of W/12 then shows about a fifth of W's colour instead of a twelfth (near-white on a projector).
COMPRESS = 50.0
COLOR_STOPS = 41


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


def subsample(m: torch.Tensor, max_side: int) -> tuple[torch.Tensor, int]:
    """Rows and columns 0, k, 2k, … of ``m``, with k the smallest step that keeps both sides within ``max_side``;
    returns (entries, k). Real entries, never averages; panels drawn at different steps share the entries at
    multiples of both steps."""
    k = max(1, math.ceil(max(m.shape) / max_side))
    return m[::k, ::k], k


def compressed_colorscale() -> list[list]:
    """RdBu stretched so that small values get visible colours: stop at position p (value (2p-1)·scale) has RdBu's
    colour at (1 + asinh(COMPRESS·(2p-1))/asinh(COMPRESS)) / 2; monotone, so equal values stay equal colours."""
    positions = [i / (COLOR_STOPS - 1) for i in range(COLOR_STOPS)]
    at = [(1 + math.asinh(COMPRESS * (2 * p - 1)) / math.asinh(COMPRESS)) / 2 for p in positions]
    return [[p, c] for p, c in zip(positions, pcolors.sample_colorscale("RdBu", at))]


def ordinal(k: int) -> str:
    return f"{k}" + ("th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th"))


def row_block_sums(plan: ClonePlan, name: str, stored: torch.Tensor) -> torch.Tensor:
    """The sum of the first row of blocks of each part, stacked as [out, in]: what one output copy
    computes from [x, ..., x], so it equals the source W (a fused tensor's parts are summed one by one).

    ``stored`` is the wide tensor as the model stores it; ``plan`` a plan over the wide config.
    """
    rule = plan.spec.rule_for(name)
    sums = [split_blocks(rule.as_out_in(piece).detach().float().cpu(), a, b)[0].sum(0)
            for _, piece, a, b in plan.parts_of(name, rule, stored)]
    return torch.cat(sums, dim=0)


def block_row_error(source, wide, name: str, factor: int, ffn_factor: int | None = None, expert: int = 0) -> float:
    """max |sum of a row of blocks - W| for weight ``name`` of a clone (float rounding for an exact clone);
    ``expert`` picks one matrix of a stack of MoE experts."""
    plan, w_src, wide_t = _matrices(source, wide, name, factor, ffn_factor, expert)
    sums = row_block_sums(plan, name, wide_t)
    return float((sums - w_src).abs().max()) if sums.shape == w_src.shape else float("nan")


def _matrices(source, wide, name: str, factor: int, ffn_factor: int | None, expert: int):
    """(a plan over the clone, the source matrix as [out, in], the clone's tensor as stored) for ``name``."""
    plan = ClonePlan.over_wide(wide.config, factor, ffn_factor)
    wide_state = wide.state_dict()
    if name not in wide_state:
        raise KeyError(f"{name!r} is not a weight of the cloned model")
    return plan, as_out_in(plan, name, pick_expert(source.state_dict()[name], expert)), \
        pick_expert(wide_state[name], expert)


def grid_description(plan: ClonePlan, name: str) -> str:
    """The clone's block grid in words: "2×3 blocks", or "3 parts of 2×2 blocks" for a fused tensor."""
    factors = plan.factors_of(plan.spec.rule_for(name))
    grids = list(dict.fromkeys(f"{a}×{b}" for a, b in factors))
    if len(factors) == 1:
        return f"{grids[0]} blocks"
    if len(grids) == 1:
        return f"{len(factors)} parts of {grids[0]} blocks"
    return f"{len(factors)} parts: " + ", ".join(f"{a}×{b}" for a, b in factors)


def panel_title(title: str, detail: str, shape: tuple[int, int], k: int) -> str:
    """Short lines: what the panel is, then its real shape and which rows and columns are drawn."""
    size = f"{shape[0]}×{shape[1]}" + (f", every {ordinal(k)} row/col" if k > 1 else "")
    return f"{title}<br>{size}" + (f"<br>{detail}" if detail else "")


def add_heatmap(fig: go.Figure, col: int, m: torch.Tensor, k: int, shape: tuple[int, int], scale: float) -> None:
    """One panel: cell i is the real entry i·k (see ``subsample``), so the axes count real rows and columns and
    the hover names the entry shown."""
    fig.add_trace(go.Heatmap(z=m.numpy(), x0=0, dx=k, y0=0, dy=k, zmin=-scale, zmax=scale,
                             colorscale=compressed_colorscale(), showscale=False, coloraxis=None,
                             hovertemplate="row %{y}, column %{x}: %{z:.3g}<extra></extra>"),
                  row=1, col=col)
    fig.update_xaxes(range=[-0.5, shape[1] - 0.5], title_text="column (input)", row=1, col=col)
    fig.update_yaxes(range=[shape[0] - 0.5, -0.5], row=1, col=col)


def clone_heatmaps(source, wide, name: str, factor: int, ffn_factor: int | None = None, max_side: int = 96,
                   expert: int = 0) -> go.Figure:
    """Source matrix | cloned matrix with its block grid | sum of one row of blocks (per fused part), one scale.

    For a stack of MoE experts, ``expert`` picks the one shown (each grows like a matrix of its own).
    """
    plan, w_src, wide_t = _matrices(source, wide, name, factor, ffn_factor, expert)
    w_wide = as_out_in(plan, name, wide_t)
    err = block_row_error(source, wide, name, factor, ffn_factor, expert)
    fused = len(plan.factors_of(plan.spec.rule_for(name))) > 1
    panels = [("source W", "", w_src), (f"clone: {grid_description(plan, name)}", "", w_wide),
              ("sum of a block row" + (", per part" if fused else ""), f"max |diff| vs W: {err:.1e}",
               row_block_sums(plan, name, wide_t))]
    shown = [subsample(m, max_side) for _, _, m in panels]
    scale = max(float(m.abs().max()) for m, _ in shown) or 1.0
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=[
        panel_title(t, d, tuple(m.shape), k) for (t, d, m), (_, k) in zip(panels, shown)])
    for col, ((_, _, m), (pooled, k)) in enumerate(zip(panels, shown), start=1):
        add_heatmap(fig, col, pooled, k, tuple(m.shape), scale)
    ticks = [v * scale for v in (-1, -0.5, 0, 0.5, 1)]  # the bar is linear in value; its colours are stretched
    fig.data[-1].update(showscale=True, colorbar=dict(thickness=12, tickvals=ticks,
                                                      ticktext=[f"{v:.2g}" for v in ticks]))
    fig.update_yaxes(title_text="row (output)", row=1, col=1)
    rows, cols = block_edges(plan, name, tuple(w_wide.shape))
    for r in rows:
        fig.add_hline(y=r - 0.5, line=dict(color="black", width=1), row=1, col=2)
    for c in cols:
        fig.add_vline(x=c - 0.5, line=dict(color="black", width=1), row=1, col=2)
    fig.update_annotations(font_size=TITLE_FONT)
    made = getattr(wide, "hyperclone_plan", None)
    fig.update_layout(title=f"{name}: x{factor} clone" + (f" ({made.variant})" if made else ""),
                      height=430, margin=dict(l=20, r=20, t=110, b=20))
    experts = expert_count(wide, name)
    if experts:
        fig.update_layout(title=f"{fig.layout.title.text}, expert {expert} of {experts}")
    return fig


def heatmap_caption(wide, name: str, factor: int, ffn_factor: int | None = None, max_side: int = 96) -> str:
    """What :func:`clone_heatmaps` shows for ``name``, in words (the dashboard's caption under the figure)."""
    plan = ClonePlan.over_wide(wide.config, factor, ffn_factor)
    factors = plan.factors_of(plan.spec.rule_for(name))
    k = subsample(torch.empty(as_out_in(plan, name, pick_expert(wide.state_dict()[name], 0)).shape), max_side)[1]
    text = ("One colour scale for the three panels (stretched so small weights show; equal weights, equal colours); "
            "each shows the matrix as [out, in], and its axes count real rows (outputs) and columns (inputs)"
            + (f"; the clone shows every {ordinal(k)} row and column (real entries, not averages)"
               if k > 1 else "") + ". ")
    (a, b) = factors[0]
    if len(factors) == 1:
        return text + (f"Middle: the clone's {a}×{b} grid of blocks; row of blocks i computes output copy i from "
                       f"the {b} input copies. Right: one row of blocks summed, which is what an output copy "
                       "computes from [x, …, x]: it equals W (the largest difference is in the panel's title).")
    if len(factors) == 3 and len(set(factors)) == 1:
        parts = (f"q, k and v. Each is grown on its own into a {a}×{b} grid, so the clone's rows hold {a} copies "
                 f"of q, then {a} of k, then {a} of v")
    else:
        parts = ("e.g. gate and up. Each is grown on its own, so the clone's rows hold the copies of one part, "
                 "then the next")
    return text + (f"This weight fuses {len(factors)} projections along its rows: {parts}; the horizontal lines "
                   "mark where each copy starts. Right: each part's first row of blocks summed, stacked again as "
                   "in the source: it equals W.")
