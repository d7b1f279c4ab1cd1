"""Mixture-of-experts families: cloned logits and routing equal the source's; experts grow, the router stays clean."""

from __future__ import annotations

import pytest
import torch
from families import (MOE_CASE_IDS, MOE_CASES, case_fixture, expected_wide_kwargs, fast_first, make_config, stored,
                      tiny_model)
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from hyperclone import VARIANTS, Growth, clone, verify
from hyperclone.cli.main import main
from hyperclone.core.errors import SourceError
from hyperclone.views.heatmaps import clone_heatmaps, expert_count, matrix_names
from hyperclone.io.stream import stream_clone
from hyperclone.core.symmetry import symmetry_by_tensor
from hyperclone.core.verify import TOLERANCE, default_input_ids, rounding_tolerance

BY_ID = {c[0]: c for c in MOE_CASES}
ROUTERS = ("mlp.gate.weight", "mlp.shared_expert_gate.weight")  # [experts or 1, hidden]: read the residual stream


case = case_fixture(MOE_CASES, MOE_CASE_IDS)


def routing(model, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The experts each router picks for each token, per MoE layer (sorted: the set decides the computation)."""
    picked: list[torch.Tensor] = []
    routers = [m for name, m in model.named_modules() if name.endswith("mlp.gate")]
    hooks = [r.register_forward_hook(lambda mod, args, out: picked.append(out[2].sort(-1).values)) for r in routers]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    assert picked and len(picked) == len(routers)
    return picked


@pytest.mark.parametrize("factor,ffn_factor", fast_first([(2, 2), (2, 3), (3, 2)]))  # the rest: slow
@pytest.mark.parametrize("variant", fast_first(list(VARIANTS)))
def test_cloned_moe_logits_and_routing_equal_the_source(case, factor, ffn_factor, variant):
    model_type, kwargs, _, source = case
    wide = clone(source, factor, ffn_factor, variant=variant, seed=1)
    report = verify(source, wide)
    assert report.passed, report.summary()
    assert report.max_rel_diff <= TOLERANCE[torch.float32] == 1e-5  # 84 eps: derived in hyperclone/verify.py
    assert report.top1_agreement == 1.0
    assert report.layers_passed and len(report.layers) == kwargs["num_hidden_layers"] + 1
    ids = default_input_ids(source.config)
    src_routes, wide_routes = routing(source, ids), routing(wide, ids)
    assert all(torch.equal(s, w) for s, w in zip(src_routes, wide_routes, strict=True))
    assert len(torch.cat(src_routes).unique()) > kwargs["num_experts_per_tok"]  # the test input uses several experts


@pytest.mark.parametrize("factor,ffn_factor", [(2, 3), (3, 2)])
def test_experts_grow_like_the_mlp_and_their_number_and_top_k_stay(case, factor, ffn_factor):
    """The clone has the tensors and shapes transformers gives the wide config written by hand."""
    model_type, kwargs, sizes, source = case
    wide = clone(source, factor, ffn_factor)
    with torch.device("meta"):
        reference = AutoModelForCausalLM.from_config(make_config(model_type, expected_wide_kwargs(
            kwargs, sizes, factor, ffn_factor)))
    assert {n: t.shape for n, t in wide.state_dict().items()} == {n: t.shape for n, t in reference.state_dict().items()}
    src, dst = source.config.to_dict(), wide.config.to_dict()
    assert {k for k in src if src[k] != dst.get(k)} <= set(sizes)  # experts and top-k among the unchanged
    for name, t in source.state_dict().items():
        if t.dim() == 3:
            assert wide.state_dict()[name].shape[0] == t.shape[0], name


@pytest.mark.parametrize("variant", ["noisy_symmetric", "noisy_diagonal"])
def test_noise_never_touches_the_router_or_the_shared_expert_gate(case, variant):
    """Routers are exactly [W/n, ..., W/n] while the experts beside them carry noise."""
    _, _, _, source = case
    n = 2
    wide, clean = clone(source, n, variant=variant, seed=3), clone(source, n, variant="symmetric")
    routers = [name for name in source.state_dict() if name.endswith(ROUTERS)]
    assert routers
    for name in routers:
        w = source.state_dict()[name]
        assert torch.equal(wide.state_dict()[name], (w / n).repeat(1, n)), name
    experts = [name for name, t in source.state_dict().items() if t.dim() == 3]
    assert experts and all(not torch.equal(wide.state_dict()[k], clean.state_dict()[k]) for k in experts)


def test_noise_is_drawn_per_expert():
    """Two experts with the same weights get different noise (seeded by tensor name and expert index)."""
    _, model_type, kwargs, _ = BY_ID["mixtral"]
    source = tiny_model(model_type, kwargs)
    experts = source.model.layers[0].mlp.experts
    with torch.no_grad():
        experts.gate_up_proj[1] = experts.gate_up_proj[0]
    wide = clone(source, 2, variant="noisy_symmetric", seed=5)
    grown = wide.model.layers[0].mlp.experts.gate_up_proj
    assert not torch.equal(grown[0], grown[1])
    again = clone(source, 2, variant="noisy_symmetric", seed=5)
    assert torch.equal(grown, again.model.layers[0].mlp.experts.gate_up_proj)
    assert verify(source, wide).passed


@pytest.mark.parametrize("case_id,experts", [("mixtral", None), ("mixtral", 11), ("qwen2_moe", None),
                                             ("qwen3_moe", None), ("olmoe", None)])
def test_a_streamed_moe_clone_is_bit_identical_to_the_in_memory_clone(tmp_path, case_id, experts):
    """save_pretrained (v5) stores one tensor per expert; streaming merges them on read and splits them on write.

    With 11 experts, expert 10 must be stacked after expert 9 (not after expert 1, as a plain sort would put it).
    """
    _, model_type, kwargs, _ = BY_ID[case_id]
    model = tiny_model(model_type, kwargs if experts is None else dict(kwargs, num_local_experts=experts))
    model.save_pretrained(tmp_path / "src", max_shard_size="12KB")  # a layer's experts spread over shards
    source_keys = stored(tmp_path / "src")
    assert any(".experts.0." in k for k in source_keys) and not any(k.endswith("gate_up_proj") for k in source_keys)
    result = stream_clone(tmp_path / "src", tmp_path / "out", Growth(2, 3, "noisy_symmetric", seed=11),
                          max_shard_size="40KB", verify="full")
    assert result.passed and result.report.max_rel_diff <= TOLERANCE[torch.float32]
    wide = clone(model, 2, 3, variant="noisy_symmetric", seed=11)
    wide.save_pretrained(tmp_path / "mem")
    streamed, saved = stored(tmp_path / "out"), stored(tmp_path / "mem")
    assert streamed.keys() == saved.keys()  # the per-expert names save_pretrained writes
    for name, t in saved.items():
        assert torch.equal(streamed[name], t), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, t in wide.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name


def test_sampled_verification_keeps_each_sampled_layer_dense_or_sparse(tmp_path):
    """Qwen-MoE marks dense layers by index (mlp_only_layers, decoder_sparse_step): renumbered when sampling."""
    _, model_type, kwargs, _ = BY_ID["qwen2_moe"]
    model = tiny_model(model_type, dict(kwargs, num_hidden_layers=6, mlp_only_layers=[3], decoder_sparse_step=2))
    sparse = [type(layer.mlp).__name__ == "Qwen2MoeSparseMoeBlock" for layer in model.model.layers]
    assert sparse == [False, True, False, False, False, True]
    model.save_pretrained(tmp_path / "src")
    result = stream_clone(tmp_path / "src", tmp_path / "out", Growth(2, variant="noisy_symmetric"), verify="sample")
    assert result.verification["layers"] == [0, 3, 5]  # dense, dense (mlp_only_layers), sparse
    assert result.verification["method"] == "sampled layers" and result.passed, result.report.summary()


def test_a_checkpoint_with_fused_experts_streams_as_well(tmp_path):
    _, model_type, kwargs, _ = BY_ID["mixtral"]
    model = tiny_model(model_type, kwargs)
    (tmp_path / "src").mkdir()
    model.config.save_pretrained(tmp_path / "src")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "src" / "model.safetensors")
    stream_clone(tmp_path / "src", tmp_path / "out", Growth(2, variant="noisy_diagonal", seed=2))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for name, t in clone(model, 2, variant="noisy_diagonal", seed=2).state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name


@pytest.mark.parametrize("missing,expected", [
    (("w1",), "do not pair up (3 x '.experts.*.w1.weight', 4 x '.experts.*.w3.weight')"),
    (("w1", "w3"), "has shape (3, 96, 32) in"),  # a whole expert missing: the merged stack is one short
])
def test_a_missing_expert_is_refused_in_one_line_naming_the_fused_tensor(tmp_path, missing, expected):
    _, model_type, kwargs, _ = BY_ID["mixtral"]
    model = tiny_model(model_type, kwargs)
    model.save_pretrained(tmp_path / "src")
    tensors = stored(tmp_path / "src")
    for w in missing:
        del tensors[f"model.layers.1.block_sparse_moe.experts.3.{w}.weight"]
    save_file(tensors, tmp_path / "src" / "model.safetensors")
    with pytest.raises(SourceError) as e:
        stream_clone(tmp_path / "src", tmp_path / "out", Growth(2))
    msg = str(e.value)
    assert "\n" not in msg and "'model.layers.1.mlp.experts.gate_up_proj'" in msg and expected in msg, msg
    assert not (tmp_path / "out").exists()


def test_symmetry_is_measured_per_expert():
    _, model_type, kwargs, _ = BY_ID["qwen2_moe"]
    source = tiny_model(model_type, kwargs)
    wide = clone(source, 2, 3)
    exact = symmetry_by_tensor(wide, 2, 3)
    stacks = [k for k in exact if ".experts." in k]
    assert {k.split("#")[0] for k in stacks} == {f"model.layers.{i}.mlp.experts.{p}" for i in (0, 2)
                                                  for p in ("gate_up_proj", "down_proj")}
    tol = rounding_tolerance(torch.float32, max(p.numel() for p in wide.parameters()))  # as tests/test_symmetry.py
    assert min(exact.values()) > 1 - tol
    assert not any(k.endswith(ROUTERS) for k in exact)  # only the input grows: no output copies
    noisy = symmetry_by_tensor(clone(source, 2, 3, variant="noisy_symmetric"), 2, 3)
    assert noisy.keys() == exact.keys() and max(noisy[k] for k in stacks) < 0.99


def test_heatmaps_show_one_expert_at_a_time():
    _, model_type, kwargs, _ = BY_ID["olmoe"]
    source = tiny_model(model_type, kwargs)
    wide = clone(source, 2)
    name = "model.layers.0.mlp.experts.down_proj"
    assert name in matrix_names(wide) and expert_count(wide, name) == 4 and expert_count(wide, "lm_head.weight") == 0
    fig = clone_heatmaps(source, wide, name, 2, expert=3)
    assert torch.equal(torch.tensor(fig.data[0].z), source.state_dict()[name][3])
    assert "expert 3 of 4" in fig.layout.title.text
    with pytest.raises(KeyError, match="expert 4 does not exist"):
        clone_heatmaps(source, wide, name, 2, expert=4)


def test_tie_keep_stays_approximately_equal_with_the_same_routing():
    _, model_type, kwargs, _ = BY_ID["qwen3_moe"]
    source = tiny_model(model_type, dict(kwargs, tie_word_embeddings=True))
    wide = clone(source, 2, tie="keep")
    report = verify(source, wide)
    assert report.approximate and report.passed and report.top1_agreement == 1.0, report.summary()
    ids = default_input_ids(source.config)
    assert all(torch.equal(s, w) for s, w in zip(routing(source, ids), routing(wide, ids), strict=True))


def test_families_lists_the_moe_families_with_a_hub_checkpoint(capsys):
    assert main(["families"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    examples = {"mixtral": "mistralai/Mixtral-8x7B-v0.1", "qwen2_moe": "Qwen/Qwen1.5-MoE-A2.7B",
                "qwen3_moe": "Qwen/Qwen3-30B-A3B", "olmoe": "allenai/OLMoE-1B-7B-0924"}
    for family, hub_id in examples.items():
        assert hub_id in lines[family]
