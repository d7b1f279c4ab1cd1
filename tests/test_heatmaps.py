"""Heatmap figures: shapes, block grid, and the row-of-blocks sum that reproduces W."""

from __future__ import annotations

import torch
from families import CASES, LLAMA_KW, tiny_model

from hyperclone import clone
from hyperclone.heatmaps import clone_heatmaps, downsample, matrix_names
from hyperclone.verify import rounding_tolerance


def test_llama_heatmap_panels_and_grid():
    source = tiny_model("llama", LLAMA_KW)
    wide = clone(source, 2, 3, variant="noisy_symmetric")
    fig = clone_heatmaps(source, wide, "model.layers.0.mlp.down_proj.weight", 2, 3, max_side=256)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert [len(h.z) for h in heat] == [32, 64, 32]
    assert [len(h.z[0]) for h in heat] == [48, 144, 48]
    lines = [s for s in fig.layout.shapes]
    assert len(lines) == 1 + 2  # one row boundary (a=2), two column boundaries (b=3)
    assert "max |diff| vs W: " in fig.layout.annotations[2].text
    diff = float(fig.layout.annotations[2].text.split("W: ")[1].split(")")[0])
    # A row of b = 3 stored (rounded) blocks summed: worst case over 3 terms of at most max |block| each.
    biggest = float(wide.get_parameter("model.layers.0.mlp.down_proj.weight").detach().abs().max())
    assert diff < rounding_tolerance(torch.float32, 3, magnitude=3 * biggest, worst_case=True)


def test_gpt2_fused_and_transposed_heatmap():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 2)
    assert "transformer.h.0.attn.c_attn.weight" in matrix_names(wide)
    fig = clone_heatmaps(source, wide, "transformer.h.0.attn.c_attn.weight", 2, max_side=256)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2  # fused: no single row-of-blocks sum
    assert (len(heat[1].z), len(heat[1].z[0])) == (192, 64)  # shown as [out, in]
    assert len(fig.layout.shapes) == 5 + 1  # q,k,v each in 2 copies -> 5 row edges; 1 column edge


def test_large_matrices_are_pooled_and_say_so():
    m, k = downsample(torch.ones(300, 50), 96)
    assert k == 4 and m.shape == (75, 13)
    source = tiny_model("llama", LLAMA_KW)
    wide = clone(source, 4)
    fig = clone_heatmaps(source, wide, "model.layers.0.mlp.up_proj.weight", 4, max_side=64)
    assert "pooled 3x" in fig.layout.annotations[1].text
