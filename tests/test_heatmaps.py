"""Heatmap figures: shapes, block grid on real row/column indices, titles that fit, and the
row-of-blocks sum that reproduces W (per part for a fused tensor)."""

from __future__ import annotations

import re

import plotly.colors as pcolors
import torch
from families import CASES, LLAMA_KW, tiny_model

from hyperclone import clone
from hyperclone.views.heatmaps import (TITLE_CHARS, TITLE_FONT, block_row_error, clone_heatmaps, heatmap_caption,
                                       matrix_names, subsample)
from hyperclone.core.verify import rounding_tolerance


def row_sum_tolerance(wide, name: str, b: int) -> float:
    """A row of b stored (rounded) blocks summed: worst case over b terms of at most max |block| each."""
    biggest = float(wide.get_parameter(name).detach().abs().max())
    return rounding_tolerance(torch.float32, b, magnitude=b * biggest, worst_case=True)


def title_lines(fig) -> list[str]:
    return [line for a in fig.layout.annotations for line in re.sub(r"<[^>]+>", "\n", a.text).split("\n") if line]


def test_llama_heatmap_panels_and_grid():
    source = tiny_model("llama", LLAMA_KW)
    wide = clone(source, 2, 3, variant="noisy_symmetric")
    name = "model.layers.0.mlp.down_proj.weight"
    fig = clone_heatmaps(source, wide, name, 2, 3, max_side=256)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert [len(h.z) for h in heat] == [32, 64, 32]
    assert [len(h.z[0]) for h in heat] == [48, 144, 48]
    lines = [s for s in fig.layout.shapes]
    assert len(lines) == 1 + 2  # one row boundary (a=2), two column boundaries (b=3)
    err = block_row_error(source, wide, name, 2, 3)
    assert err < row_sum_tolerance(wide, name, 3)
    assert f"max |diff| vs W: {err:.1e}" in fig.layout.annotations[2].text
    assert "2×3 blocks" in fig.layout.annotations[1].text


def test_gpt2_fused_and_transposed_heatmap_sums_each_part():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 2, variant="noisy_symmetric")
    name = "transformer.h.0.attn.c_attn.weight"
    assert name in matrix_names(wide)
    fig = clone_heatmaps(source, wide, name, 2, max_side=256)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert (len(heat[1].z), len(heat[1].z[0])) == (192, 64)  # shown as [out, in]
    assert (len(heat[2].z), len(heat[2].z[0])) == (96, 32)  # q, k and v: each part's row of blocks, summed
    assert len(fig.layout.shapes) == 5 + 1  # q,k,v each in 2 copies -> 5 row edges; 1 column edge
    assert "3 parts of 2×2 blocks" in fig.layout.annotations[1].text
    assert block_row_error(source, wide, name, 2) < row_sum_tolerance(wide, name, 2)
    # a wrong row sum is seen: break one block of q's first row, and the error is the change itself
    with torch.no_grad():
        wide.get_parameter(name)[0, 0] += 0.25  # Conv1D [in, out]: input 0 (copy 0) -> output 0 (copy 0 of q)
    assert abs(block_row_error(source, wide, name, 2) - 0.25) < row_sum_tolerance(wide, name, 2)


def test_subsampled_panels_count_real_rows_and_columns():
    m, k = subsample(torch.arange(300 * 50.0).reshape(300, 50), 96)
    assert k == 4 and m.shape == (75, 13)
    assert m[1, 2] == (4 * 1) * 50 + (4 * 2)  # real entries, rows and columns i·k: never averages
    source = tiny_model("llama", LLAMA_KW)
    wide = clone(source, 4)
    fig = clone_heatmaps(source, wide, "model.layers.0.mlp.up_proj.weight", 4, max_side=64)
    rows, cols = wide.get_parameter("model.layers.0.mlp.up_proj.weight").shape  # [out, in] = [192, 128]
    k = -(-max(rows, cols) // 64)
    assert f"{rows}×{cols}, every {k}rd row/col" in fig.layout.annotations[1].text
    clone_panel = fig.data[1]
    assert (clone_panel.x0, clone_panel.dx, clone_panel.y0, clone_panel.dy) == (0, k, 0, k)
    assert tuple(fig.layout.xaxis2.range) == (-0.5, cols - 0.5)
    assert tuple(fig.layout.yaxis2.range) == (rows - 0.5, -0.5)  # row 0 at the top
    # block edges sit between real rows and columns, whatever the step
    edges = sorted((s.type, s.x0 if s.x0 == s.x1 else s.y0) for s in fig.layout.shapes)
    assert [e for t, e in edges if t == "line"] == sorted([i * cols / 4 - 0.5 for i in (1, 2, 3)]
                                                          + [i * rows / 4 - 0.5 for i in (1, 2, 3)])


def shown_entry(trace, row: int, col: int) -> float:
    """The value a heatmap panel shows at real (row, column): the cell whose entry that is."""
    return trace.z[(row - trace.y0) // trace.dy][(col - trace.x0) // trace.dx]


def colour_at(trace, value: float) -> tuple[float, float, float]:
    """The RGB colour a heatmap gives ``value``: its colorscale interpolated linearly, as plotly draws it."""
    p = min(max((value - trace.zmin) / (trace.zmax - trace.zmin), 0.0), 1.0)
    stops = trace.colorscale
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if a <= p <= b:
            return pcolors.find_intermediate_color(pcolors.unlabel_rgb(ca), pcolors.unlabel_rgb(cb),
                                                   (p - a) / (b - a) if b > a else 0.0)
    raise AssertionError(f"{value} is outside the colour scale")


def distance(c1, c2) -> float:
    return max(abs(x - y) for x, y in zip(c1, c2))


def test_equal_weights_show_in_equal_colours_on_source_and_clone_panels():
    """diagonal puts W in its diagonal blocks, symmetric W/2 in every block: whatever the step each panel is drawn
    at, the clone panel shows diagonal's W with the source's values and colours, and symmetric's W/2 with others."""
    source = tiny_model("gpt2", CASES[0][2])
    name = "transformer.h.0.mlp.c_fc.weight"
    rows, cols = source.get_parameter(name).shape[::-1]  # Conv1D: [in, out] stored, [out, in] shown
    panels = {}
    for variant in ("diagonal", "symmetric"):
        wide = clone(source, 2, variant=variant)
        fig = clone_heatmaps(source, wide, name, 2, max_side=48)  # source and clone drawn at different steps
        src, cl = fig.data[0], fig.data[1]
        assert src.dx != cl.dx  # so a cell of each panel covers a different number of real entries
        panels[variant] = (src, cl)
    src, diag = panels["diagonal"]
    _, sym = panels["symmetric"]
    # real entries the source panel draws, found in the clone's first diagonal block (same row, same column)
    cells = [(r, c) for r in range(src.y0, rows, src.dy) for c in range(src.x0, cols, src.dx)
             if (r - diag.y0) % diag.dy == 0 and (c - diag.x0) % diag.dx == 0]
    assert cells
    w = [shown_entry(src, r, c) for r, c in cells]
    assert [shown_entry(diag, r, c) for r, c in cells] == w
    assert [shown_entry(sym, r, c) for r, c in cells] == [v / 2 for v in w]
    big = [(r, c) for (r, c), v in zip(cells, w) if abs(v) > 0.1 * src.zmax]
    assert big and all(colour_at(diag, shown_entry(diag, r, c)) == colour_at(src, shown_entry(src, r, c))
                       for r, c in big)
    assert all(distance(colour_at(sym, shown_entry(sym, r, c)), colour_at(src, shown_entry(src, r, c))) >= 8
               for r, c in big)  # W/2 is another colour than W: at least 8 of 255 levels apart on some channel


def test_a_x12_clone_panel_is_not_uniform_grey():
    """At a large factor each block of a symmetric clone holds W/12: drawn as real entries on a compressed scale,
    a good part of the clone panel is visibly off the middle (zero) colour."""
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 12, variant="symmetric")
    fig = clone_heatmaps(source, wide, "transformer.h.0.mlp.c_fc.weight", 12, max_side=96)
    panel = fig.data[1]
    middle = colour_at(panel, 0.0)
    off = [distance(colour_at(panel, v), middle) >= 40 for row in panel.z for v in row]
    assert sum(off) > len(off) / 4, f"{sum(off)} of {len(off)} cells visibly coloured"


def test_titles_fit_their_panels():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 3)
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.wte.weight", "lm_head.weight"):
        fig = clone_heatmaps(source, wide, name, 3, max_side=48)
        assert len(fig.layout.annotations) == 3
        assert all(len(line) <= TITLE_CHARS for line in title_lines(fig)), title_lines(fig)
        assert all(a.font.size >= 14 == TITLE_FONT for a in fig.layout.annotations)  # readable on a projector


def test_caption_describes_the_panels_of_this_tensor():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 2)
    fused = heatmap_caption(wide, "transformer.h.0.attn.c_attn.weight", 2, max_side=256)
    assert "fuses 3 projections" in fused and "2 copies of q, then 2 of k, then 2 of v" in fused
    assert "every" not in fused  # 192 x 64 fits in 256 cells: every entry drawn
    plain = heatmap_caption(wide, "transformer.h.0.mlp.c_fc.weight", 2, max_side=64)
    k = -(-max(wide.get_parameter("transformer.h.0.mlp.c_fc.weight").shape) // 64)  # ceil(160 / 64)
    assert "fuses" not in plain and "2×2 grid of blocks" in plain and f"every {k}rd row and column" in plain
