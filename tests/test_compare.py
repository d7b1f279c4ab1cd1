"""Side-by-side helpers and equivalence figures used by the dashboard."""

from __future__ import annotations

import torch
from families import CASES, LLAMA_KW, tiny_model

from hyperclone import clone, verify
from hyperclone.views.compare import config_diff, describe, ffn_size, greedy, logits_pair
from hyperclone.views.plots import PASS_FAIL, LOG_FLOOR, layer_diff_bars, logit_scatter


def test_describe_reads_sizes_of_both_families():
    llama = tiny_model("llama", LLAMA_KW)
    info = describe(llama.config, llama.num_parameters())
    assert info["family"] == "llama" and info["FFN"] == llama.config.intermediate_size
    assert info["kv heads"] == llama.config.num_key_value_heads
    gpt2 = tiny_model("gpt2", CASES[0][2])
    assert ffn_size(gpt2.config) == (gpt2.config.n_inner or 4 * gpt2.config.n_embd)
    assert describe(gpt2.config)["hidden"] == gpt2.config.n_embd


def test_config_diff_lists_exactly_the_grown_keys():
    source = tiny_model("llama", LLAMA_KW)
    wide = clone(source, 2, 3)
    keys = {r["key"] for r in config_diff(source.config, wide.config)}
    assert {"hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size"} <= keys
    assert "num_hidden_layers" not in keys and "vocab_size" not in keys


def test_clone_logits_fall_on_the_diagonal_and_greedy_text_matches():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 2, variant="noisy_symmetric")
    ids = torch.arange(10)[None] % source.config.vocab_size
    s, c = logits_pair(source, wide, ids)
    assert s.shape == c.shape == (10, source.config.vocab_size)
    fig = logit_scatter(s, c, max_points=100)
    assert len(fig.data[0].x) == 100 and "100 of" in fig.layout.title.text

    class Tok:
        eos_token_id = 0

        def decode(self, ids, skip_special_tokens=False):
            return " ".join(map(str, ids.tolist()))

    assert greedy(source, Tok(), ids, 5) == greedy(wide, Tok(), ids, 5)


def test_layer_bars_floor_exact_zeros_and_colour_by_verdict():
    source = tiny_model("llama", LLAMA_KW)
    report = verify(source, clone(source, 2))
    fig = layer_diff_bars(report)
    assert len(fig.data[0].x) == len(report.layers)
    assert min(fig.data[0].y) >= LOG_FLOOR
    assert set(fig.data[0].marker.color) == {PASS_FAIL[True]} != {PASS_FAIL[False]}
