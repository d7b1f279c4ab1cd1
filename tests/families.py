"""Tiny random configs for every supported family, shared by the tests.

Each case names the config keys that hold sizes and which factor multiplies
them, so tests can build the expected wide config independently of the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

LLAMA_SIZES = {"hidden_size": "n", "num_attention_heads": "n", "num_key_value_heads": "n", "intermediate_size": "m"}
LLAMA_KW = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                intermediate_size=48, vocab_size=97, max_position_embeddings=64)

# (case id, model_type, config kwargs, size keys)
CASES = [
    ("gpt2", "gpt2", dict(n_embd=32, n_head=4, n_layer=2, vocab_size=97, n_positions=64, n_inner=80,
                          bos_token_id=0, eos_token_id=0), {"n_embd": "n", "n_head": "n", "n_inner": "m"}),
    ("opt", "opt", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, ffn_dim=48, vocab_size=97,
                        max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=0, eos_token_id=0,
                        pad_token_id=1),
     {"hidden_size": "n", "num_attention_heads": "n", "ffn_dim": "m", "word_embed_proj_dim": "n"}),
    ("opt-proj-postln", "opt", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, ffn_dim=48,
                                    vocab_size=97, max_position_embeddings=64, word_embed_proj_dim=16,
                                    do_layer_norm_before=False, bos_token_id=0, eos_token_id=0, pad_token_id=1),
     {"hidden_size": "n", "num_attention_heads": "n", "ffn_dim": "m", "word_embed_proj_dim": "n"}),
    ("gpt_neox", "gpt_neox", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                                  vocab_size=97, max_position_embeddings=64, rotary_pct=0.25,
                                  bos_token_id=0, eos_token_id=0),
     {"hidden_size": "n", "num_attention_heads": "n", "intermediate_size": "m"}),
    ("gpt_neox-serial", "gpt_neox", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                         intermediate_size=48, vocab_size=97, max_position_embeddings=64,
                                         use_parallel_residual=False, bos_token_id=0, eos_token_id=0),
     {"hidden_size": "n", "num_attention_heads": "n", "intermediate_size": "m"}),
    ("olmo", "olmo", dict(LLAMA_KW, clip_qkv=3.0, pad_token_id=0, bos_token_id=0, eos_token_id=0), LLAMA_SIZES),
    ("olmo2", "olmo2", dict(LLAMA_KW, pad_token_id=0, bos_token_id=0, eos_token_id=0), LLAMA_SIZES),
    ("llama-gqa", "llama", LLAMA_KW, LLAMA_SIZES),
    ("llama-mqa-bias", "llama", dict(LLAMA_KW, num_key_value_heads=1, attention_bias=True, mlp_bias=True),
     LLAMA_SIZES),
    ("llama-tied", "llama", dict(LLAMA_KW, tie_word_embeddings=True), LLAMA_SIZES),
    ("mistral", "mistral", LLAMA_KW, LLAMA_SIZES),
    ("qwen2", "qwen2", LLAMA_KW, LLAMA_SIZES),
    ("qwen3", "qwen3", dict(LLAMA_KW, head_dim=8), LLAMA_SIZES),
    ("gemma", "gemma", dict(LLAMA_KW, head_dim=8), LLAMA_SIZES),
    ("gemma2", "gemma2", dict(LLAMA_KW, head_dim=8, attn_logit_softcapping=20.0, final_logit_softcapping=5.0,
                              query_pre_attn_scalar=16), LLAMA_SIZES),
    ("gemma3_text", "gemma3_text", dict(LLAMA_KW, head_dim=8, sliding_window=8), LLAMA_SIZES),
    ("phi", "phi", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48,
                        vocab_size=97, max_position_embeddings=64, partial_rotary_factor=0.5, qk_layernorm=True,
                        bos_token_id=0, eos_token_id=0),
     {"hidden_size": "n", "num_attention_heads": "n", "num_key_value_heads": "n", "intermediate_size": "m"}),
    ("phi3", "phi3", dict(LLAMA_KW, pad_token_id=0, bos_token_id=0, eos_token_id=0), LLAMA_SIZES),
]
CASE_IDS = [c[0] for c in CASES]

# Mixture-of-experts families (tests/test_moe.py), apart from CASES: their experts are 3-D tensors.
MOE_SIZES = dict(LLAMA_SIZES, moe_intermediate_size="m", shared_expert_intermediate_size="m")
MOE_KW = dict(LLAMA_KW, num_experts_per_tok=2)
MOE_CASES = [
    ("mixtral", "mixtral", dict(MOE_KW, num_local_experts=4), LLAMA_SIZES),
    # layer 1 is a dense MLP (mlp_only_layers); the others hold experts, a shared expert and its gate
    ("qwen2_moe", "qwen2_moe", dict(MOE_KW, num_hidden_layers=3, num_experts=4, moe_intermediate_size=16,
                                    shared_expert_intermediate_size=24, mlp_only_layers=[1], norm_topk_prob=True),
     MOE_SIZES),
    ("qwen3_moe", "qwen3_moe", dict(MOE_KW, num_experts=4, moe_intermediate_size=16, head_dim=8), MOE_SIZES),
    ("olmoe", "olmoe", dict(MOE_KW, num_experts=4, clip_qkv=3.0, pad_token_id=0, bos_token_id=0, eos_token_id=0),
     LLAMA_SIZES),
]
MOE_CASE_IDS = [c[0] for c in MOE_CASES]


def make_config(model_type: str, kwargs: dict):
    return AutoConfig.for_model(model_type, **kwargs)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every weight, bias and norm a non-trivial value, so no rule hides behind a zero or a one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            if p.dim() == 1 and "norm" in name.lower() or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], p.shape[0]) ** 0.5)
    return model


def tiny_model(model_type: str, kwargs: dict, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(model_type, kwargs)).to(dtype)
    return randomise(model, seed).eval()


def expected_wide_kwargs(kwargs: dict, sizes: dict, n: int, m: int) -> dict:
    wide = dict(kwargs)
    for key, which in sizes.items():
        if key in wide:
            wide[key] = wide[key] * (n if which == "n" else m)
        elif key == "num_key_value_heads":  # defaults to num_attention_heads, which is scaled
            continue
    return wide


def case_fixture(cases: list, ids: list[str]):
    """A module-scoped fixture ``case``, one per entry of ``cases``: (model_type, kwargs, sizes, tiny model)."""
    import pytest  # here: the benchmarks import this module without pytest

    @pytest.fixture(scope="module", params=cases, ids=ids, name="case")
    def case(request):
        _, model_type, kwargs, sizes = request.param
        return model_type, kwargs, sizes, tiny_model(model_type, kwargs)

    return case


def save_tiny_llama(path: Path) -> Path:
    """The tiny 2-layer llama of ``LLAMA_KW`` (hidden 32, vocab 97, context 64), saved at ``path``."""
    tiny_model("llama", LLAMA_KW).save_pretrained(path)
    return path


def stored(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved checkpoint, by stored key."""
    from hyperclone.io.checkpoint import weight_files

    out = {}
    for f in weight_files(path):
        out.update(load_file(f))
    return out


def synthetic_llama(path: Path, dtype=torch.float32, shard_bytes: int = 200_000, **sizes) -> int:
    """A random Llama checkpoint written straight to safetensors shards of about ``shard_bytes`` (no model in
    memory): weights ~ N(0, 0.02), norms near 1. Returns the number of shards."""
    from transformers import LlamaConfig

    from hyperclone.core.pretrained import meta_model, state_shapes
    from hyperclone.io.checkpoint import INDEX_FILE

    config = LlamaConfig(**sizes)
    shapes = state_shapes(meta_model(config))
    path.mkdir()
    config.save_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    shard, weight_map, n, size = {}, {}, 0, 0
    for i, (name, shape) in enumerate(shapes.items()):
        t = torch.randn(shape, generator=gen) * 0.02 if len(shape) > 1 else 1 + torch.randn(shape, generator=gen) / 10
        shard[name] = t.to(dtype)
        size += shard[name].numel() * shard[name].element_size()
        if size > shard_bytes or i == len(shapes) - 1:
            n += 1
            save_file(shard, path / f"part-{n}.safetensors", metadata={"format": "pt"})
            weight_map.update({k: f"part-{n}.safetensors" for k in shard})
            shard, size = {}, 0
    (path / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return n


def fast_first(values: list, n: int = 1) -> list:
    """Parametrize values: the first ``n`` run in the fast loop, the others are marked slow (``python -m pytest``
    runs them all)."""
    import pytest

    return [v if i < n else pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=pytest.mark.slow)
            for i, v in enumerate(values)]
