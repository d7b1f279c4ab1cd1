"""Family specs answer every family question once: layers, factors, the tied head, residual writers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from families import CASE_IDS, CASES, LLAMA_KW, MOE_CASES, tiny_model
from transformers import AutoModelForCausalLM

import hyperclone.specs as specs_package
from hyperclone.core.clone import grow_state, make_plan
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import Growth
from hyperclone.specs import REGISTRY, spec_for
from hyperclone.specs.base import FamilySpec, embedding, head, linear

# The residual writers as the specs listed them by name before they became a flag on each rule
# (None: tie="keep" unsupported). Recorded from the code before the change.
_LLAMA_WRITERS = ("model.embed_tokens.weight", "model.layers.*.self_attn.o_proj.weight",
                  "model.layers.*.self_attn.o_proj.bias", "model.layers.*.mlp.down_proj.weight",
                  "model.layers.*.mlp.down_proj.bias")
OLD_RESIDUAL_WRITERS = {
    "gpt2": ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.*.attn.c_proj.weight",
             "transformer.h.*.attn.c_proj.bias", "transformer.h.*.mlp.c_proj.weight",
             "transformer.h.*.mlp.c_proj.bias"),
    "gpt_neox": ("gpt_neox.embed_in.weight", "gpt_neox.layers.*.attention.dense.weight",
                 "gpt_neox.layers.*.attention.dense.bias", "gpt_neox.layers.*.mlp.dense_4h_to_h.weight",
                 "gpt_neox.layers.*.mlp.dense_4h_to_h.bias"),
    "llama": _LLAMA_WRITERS, "mistral": _LLAMA_WRITERS, "qwen2": _LLAMA_WRITERS, "qwen3": _LLAMA_WRITERS,
    "olmo": _LLAMA_WRITERS, "phi3": _LLAMA_WRITERS,
    "olmo2": ("model.embed_tokens.weight", "model.layers.*.post_attention_layernorm.weight",
              "model.layers.*.post_feedforward_layernorm.weight"),
    "phi": ("model.embed_tokens.weight", "model.layers.*.self_attn.dense.weight",
            "model.layers.*.self_attn.dense.bias", "model.layers.*.mlp.fc2.weight", "model.layers.*.mlp.fc2.bias"),
    "gemma": None, "gemma2": None, "gemma3_text": None, "opt": None,
}


def layer_stack(model) -> tuple[str, torch.nn.ModuleList]:
    """The model's stack of decoder layers, found from its modules (not from any name pattern)."""
    (found,) = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)]
    return found


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_spec_finds_the_layer_of_every_layer_weight(case):
    _, model_type, kwargs, _ = case
    model = tiny_model(model_type, kwargs)
    spec = spec_for(model.config)
    stack_name, stack = layer_stack(model)
    in_layers = set()
    for index, block in enumerate(stack):
        for local in block.state_dict():
            name = f"{stack_name}.{index}.{local}"
            in_layers.add(name)
            assert (spec.layer_of(name), spec.local_name(name)) == (index, local)
            assert spec.with_layer(name, 7) == f"{stack_name}.7.{local}"
    outside = set(model.state_dict()) - in_layers
    assert outside and all(spec.layer_of(n) is None and spec.with_layer(n, 7) == n for n in outside)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_factors_of_a_rule_give_the_grown_shape_of_every_weight(case):
    """Hidden x2, FFN x3: a swapped out/in factor or output axis gives a wrong shape."""
    _, model_type, kwargs, _ = case
    source = tiny_model(model_type, kwargs)
    plan = make_plan(source.config, Growth(2, 3))
    with torch.device("meta"):
        wide_shapes = {n: t.shape for n, t in AutoModelForCausalLM.from_config(plan.wide_config()).state_dict().items()}
    for name, t in source.state_dict().items():
        rule = plan.spec.rule_for(name)
        factors = plan.factors_of(rule)
        out_axis = rule.out_axis(t.dim())
        sizes = plan.part_sizes(name, rule, t.shape[out_axis]) if len(factors) > 1 else [t.shape[out_axis]]
        expected = list(t.shape)
        expected[out_axis] = sum(size * a for size, (a, _) in zip(sizes, factors))
        if t.dim() == 2:
            expected[1 - out_axis] *= factors[0][1]
        assert tuple(plan.grow(name, t).shape) == tuple(expected) == tuple(wide_shapes[name]), name


def test_a_tied_head_is_read_from_the_embedding_and_left_out_when_the_tie_is_kept():
    source = tiny_model("llama", dict(LLAMA_KW, tie_word_embeddings=True))
    names = list(source.state_dict())
    embed, lm_head = "model.embed_tokens.weight", "lm_head.weight"
    stored = [n for n in names if n != lm_head]  # safetensors keeps a shared tensor once
    untie, keep = make_plan(source.config, Growth(2)), make_plan(source.config, Growth(2, tie="keep"))
    assert untie.sources_of(stored) == [(n, n) for n in stored] + [(lm_head, embed)]
    assert untie.sources_of(names) == [(n, embed if n == lm_head else n) for n in names]
    assert keep.sources_of(names) == keep.sources_of(stored) == [(n, n) for n in stored]
    assert untie.names(stored) == names and keep.names(names) == stored
    grown = dict(grow_state(untie, ((n, source.state_dict()[n]) for n in stored)))
    assert list(grown) == names and torch.equal(grown[lm_head], untie.grow(lm_head, source.state_dict()[embed]))


def test_an_untied_source_reads_every_weight_from_itself():
    source = tiny_model("llama", LLAMA_KW)
    names = list(source.state_dict())
    assert make_plan(source.config, Growth(2)).sources_of(names) == [(n, n) for n in names]


def test_a_tied_head_without_its_embedding_is_refused_naming_both():
    source = tiny_model("llama", dict(LLAMA_KW, tie_word_embeddings=True))
    state = {n: t for n, t in source.state_dict().items() if n not in ("lm_head.weight", "model.embed_tokens.weight")}
    with pytest.raises(HyperCloneError, match="'lm_head.weight' needs 'model.embed_tokens.weight'"):
        dict(grow_state(make_plan(source.config, Growth(2)), state.items()))


@pytest.mark.parametrize("model_type", sorted(OLD_RESIDUAL_WRITERS))
def test_the_residual_writer_flags_match_the_old_lists(model_type):
    spec, old = REGISTRY[model_type], OLD_RESIDUAL_WRITERS[model_type]
    assert spec.supports_tie_keep is (old is not None)
    if old is not None:
        for pattern in spec.tensors:
            assert spec.tensors[pattern].writes_residual is (pattern in old), pattern
            assert spec.writes_residual(pattern.replace("*", "3")) is (pattern in old), pattern


def test_every_old_list_names_a_registered_family():
    assert set(OLD_RESIDUAL_WRITERS) == set(REGISTRY) - {c[1] for c in MOE_CASES}  # MoE came after the change


@pytest.mark.parametrize("model_type", [t for t, old in OLD_RESIDUAL_WRITERS.items() if old is None])
def test_tie_keep_is_refused_where_the_old_lists_said_unsupported(model_type):
    case = next(c for c in CASES if c[1] == model_type)
    config = tiny_model(model_type, dict(case[2], tie_word_embeddings=True)).config
    with pytest.raises(HyperCloneError, match=f"tie='keep' is not supported for {model_type}"):
        make_plan(config, Growth(2, tie="keep"))


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.rotary.weight", "model.extra.weight",
                                  "model.layers.x.self_attn.q_proj.weight", "transformer.h.0.attn.c_attn.weight",
                                  "model.layers.0.self_attn.q_proj"])
def test_a_weight_the_spec_does_not_describe_is_refused_by_name(name):
    with pytest.raises(HyperCloneError, match=re.escape(f"weight {name!r} is not described by the llama spec")):
        REGISTRY["llama"].rule_for(name)


def test_the_registry_holds_the_specs_of_every_module_in_the_package():
    modules = {p.stem for p in Path(specs_package.__file__).parent.glob("*.py")} - {"__init__", "base"}
    listed = {s.model_type for m in modules for s in __import__(f"hyperclone.specs.{m}", fromlist=["SPECS"]).SPECS}
    assert len(modules) >= 5 and listed == set(REGISTRY)


def test_a_spec_with_two_layer_prefixes_is_refused_when_defined():
    tensors = {"e.weight": embedding(writes_residual=True), "lm_head.weight": head(),
               "a.*.w": linear("residual", "residual"), "b.*.w": linear("residual", "residual")}
    with pytest.raises(ValueError, match="layer patterns"):
        FamilySpec("toy", "-", tensors, {}, "e.weight")


def test_a_spec_that_allows_tie_keep_must_flag_its_residual_writers():
    tensors = {"e.weight": embedding(), "lm_head.weight": head(), "h.*.w": linear("residual", "residual")}
    with pytest.raises(ValueError, match="writes_residual"):
        FamilySpec("toy", "-", tensors, {}, "e.weight")
    assert FamilySpec("toy", "-", tensors, {}, "e.weight", supports_tie_keep=False).layer_prefix == "h."
