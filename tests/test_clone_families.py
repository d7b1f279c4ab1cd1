"""Cloned logits equal source logits, for every family, factor and variant (the paper's claim, tested)."""

from __future__ import annotations

import pytest
import torch
from families import (CASE_IDS, CASES, MOE_CASES, case_fixture, expected_wide_kwargs, fast_first, make_config,
                      tiny_model)
from transformers import AutoModelForCausalLM

from hyperclone import VARIANTS, clone, supported_families, verify
from hyperclone.core.verify import TOLERANCE


case = case_fixture(CASES, CASE_IDS)


def test_every_family_has_a_case():
    assert {c[1] for c in CASES + MOE_CASES} == set(supported_families())  # MoE: tests/test_moe.py
    assert len(supported_families()) == 18


@pytest.mark.parametrize("factor,ffn_factor", fast_first([(2, 2), (2, 3), (3, 3), (3, 2)]))  # the rest: slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_cloned_logits_equal_source_logits(case, factor, ffn_factor, variant):
    model_type, kwargs, sizes, source = case
    wide = clone(source, factor, ffn_factor, variant=variant, seed=1)
    assert type(wide) is type(source)
    report = verify(source, wide)
    assert report.passed, report.summary()
    assert report.max_rel_diff <= TOLERANCE[torch.float32] == 1e-5  # 84 eps: derived in hyperclone/verify.py
    assert report.top1_agreement == 1.0
    assert report.layers_passed and len(report.layers) == kwargs.get("num_hidden_layers", kwargs.get("n_layer")) + 1
    assert report.factor == factor


@pytest.mark.parametrize("factor,ffn_factor", [(2, 2), (3, 2)])
def test_parameter_count_matches_a_wide_model_built_by_hand(case, factor, ffn_factor):
    """The clone has exactly the parameters transformers gives the wide config written by hand."""
    model_type, kwargs, sizes, source = case
    wide = clone(source, factor, ffn_factor)
    wide_kw = expected_wide_kwargs(kwargs, sizes, factor, ffn_factor)
    tied = source.config.tie_word_embeddings
    wide_kw["tie_word_embeddings"] = False
    with torch.device("meta"):
        reference = AutoModelForCausalLM.from_config(make_config(model_type, wide_kw))
    assert wide.num_parameters() == reference.num_parameters()
    assert wide.config.tie_word_embeddings is False
    if tied:
        assert wide.lm_head.weight.data_ptr() != wide.get_input_embeddings().weight.data_ptr()


def test_config_keeps_everything_but_the_sizes(case):
    model_type, kwargs, sizes, source = case
    wide = clone(source, 2, 3)
    src, dst = source.config.to_dict(), wide.config.to_dict()
    changed = {k for k in src if src[k] != dst.get(k)}
    assert changed <= set(sizes) | {"tie_word_embeddings"}
    assert getattr(wide.config, "head_dim", None) == getattr(source.config, "head_dim", None)


def test_llama_parameter_count_closed_form():
    """Llama with GQA: the analytical count of the paper's growth rule."""
    kw = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
              intermediate_size=48, vocab_size=97)
    source = tiny_model("llama", kw)
    n, m = 3, 2
    wide = clone(source, n, m)
    h, hd, kv, f, v, layers = 32 * n, 8, 2 * n, 48 * m, 97, 3
    per_layer = h * (h + 2 * kv * hd) + h * h + 3 * h * f + 2 * h
    assert wide.num_parameters() == 2 * v * h + layers * per_layer + h


def test_gpt2_parameter_count_closed_form():
    kw = dict(n_embd=32, n_head=4, n_layer=2, vocab_size=97, n_positions=64, bos_token_id=0, eos_token_id=0)
    source = tiny_model("gpt2", kw)
    wide = clone(source, 2)  # n_inner unset: 4 * n_embd, grown by ffn_factor = 2
    e, f, v, p = 64, 4 * 64, 97, 64
    per_layer = 4 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * f + f) + (f * e + e)
    assert wide.num_parameters() == 2 * v * e + p * e + 2 * per_layer + 2 * e  # untied head: + v*e


def test_clone_keeps_dtype_and_device_and_skips_random_init(monkeypatch):
    kw = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
              intermediate_size=48, vocab_size=97)
    source = tiny_model("llama", kw, dtype=torch.bfloat16)
    calls = []
    import transformers.modeling_utils as mu

    original = mu.PreTrainedModel._init_weights

    def spy(self, module, *a, **k):  # record whether init ever touched real (non-meta) memory
        calls.extend(p.is_meta for p in module.parameters(recurse=False))
        return original(self, module, *a, **k)

    monkeypatch.setattr(mu.PreTrainedModel, "_init_weights", spy)
    wide = clone(source, 2, variant="noisy_symmetric")
    assert next(wide.parameters()).dtype == torch.bfloat16
    assert next(wide.parameters()).device == next(source.parameters()).device
    assert not any(p.is_meta for p in wide.parameters())
    assert all(calls), "the wide model was random-initialised in real memory before cloning"
    report = verify(source, wide)
    assert report.passed, report.summary()
    assert report.tolerance == pytest.approx(5e-2)


def test_gemma_embedding_is_divided_by_sqrt_n():
    kw = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1,
              intermediate_size=48, vocab_size=97, head_dim=8)
    source = tiny_model("gemma", kw)
    wide = clone(source, 4)
    src_e, dst_e = source.model.embed_tokens.weight, wide.model.embed_tokens.weight
    assert torch.equal(dst_e[:, :32], src_e / 2.0)  # dividing by a power of two is exact
    assert torch.equal(wide.lm_head.weight[:, :32], source.lm_head.weight / 4.0)


def test_tie_keep_stays_tied_and_is_approximately_equal():
    kw = dict(n_embd=32, n_head=4, n_layer=2, vocab_size=97, n_positions=64, bos_token_id=0, eos_token_id=0)
    source = tiny_model("gpt2", kw)
    wide = clone(source, 2, tie="keep")
    assert wide.config.tie_word_embeddings is True
    assert wide.lm_head.weight.data_ptr() == wide.transformer.wte.weight.data_ptr()
    report = verify(source, wide)
    assert report.approximate and report.passed, report.summary()
    assert any("epsilon" in n for n in report.notes)
    assert report.top1_agreement == 1.0
