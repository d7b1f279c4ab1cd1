"""The shipped tokenizer and source models: they load offline, match their cards, and clone."""

from __future__ import annotations

import json
import math
import sys

import pytest
from builtin_corpus import builtin_corpus

from hyperclone.assets import ASSETS_DIR, TOKENIZER_DIR
from hyperclone.cli.build_assets import EVAL_WINDOWS, card_sample
from hyperclone.io.sources import BUILTIN_NAMES, builtin_dir, load_source, read_card
from hyperclone.training.loop import evaluate

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "README.md", "card.json")


@pytest.fixture(scope="module")
def models():
    return {name: load_source(name, device="cpu") for name in BUILTIN_NAMES}


def test_tokenizer_loads_offline_and_round_trips():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert len(tok) == 2048 and tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    text = 'def f(x):\n    """Return x, naïvely — ünïcode too."""\n    return x  # ok\n'
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: any text survives
    meta = builtin_corpus().meta  # and it compresses the corpus it was trained for
    assert meta["chars"] / sum(meta["tokens"].values()) > 2.5
    assert json.loads((TOKENIZER_DIR / "tokenizer.json").read_bytes()) == json.loads(
        (builtin_dir(BUILTIN_NAMES[0]) / "tokenizer.json").read_bytes()
    )


def test_assets_are_small_and_complete():
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total < 15 * 2**20
    for name in BUILTIN_NAMES:
        for f in MODEL_FILES:
            assert (builtin_dir(name) / f).is_file(), f"{name}/{f} missing"


def test_architectures_are_what_the_cards_say(models):
    gpt2 = models["tiny-gpt2-stdlib"][0].config
    assert gpt2.model_type == "gpt2" and gpt2.tie_word_embeddings and gpt2.n_positions == 256
    assert gpt2.resid_pdrop == gpt2.embd_pdrop == gpt2.attn_pdrop == 0.0  # deterministic training
    llama = models["tiny-llama-stdlib"][0].config
    assert llama.model_type == "llama" and llama.max_position_embeddings == 256
    assert llama.num_key_value_heads < llama.num_attention_heads  # grouped-query attention
    assert llama.attention_dropout == 0.0 and llama.hidden_act == "silu"
    for name, (model, _) in models.items():
        assert sum(p.numel() for p in model.parameters()) == read_card(name)["params"]


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_model_reproduces_its_card_validation_loss(models, name):
    card = read_card(name)
    if card["data"]["python"].rsplit(".", 1)[0] != ".".join(map(str, sys.version_info[:2])):
        pytest.skip(f"card measured on Python {card['data']['python']}: another stdlib, another split")
    model, _ = models[name]
    windows = builtin_corpus().validation_windows(card["data"]["eval_windows"], card["data"]["eval_window_tokens"])
    assert card["data"]["eval_windows"] == EVAL_WINDOWS
    loss, accuracy = evaluate(model, windows)
    assert loss == pytest.approx(card["val_loss"], abs=0.05)
    assert accuracy == pytest.approx(card["val_accuracy"], abs=0.01)
    assert loss < 0.6 * math.log(card["config"]["vocab_size"])  # it learnt something (uniform: ln 2048 = 7.6)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_model_reproduces_its_card_sample(models, name):
    model, tokenizer = models[name]
    sample = read_card(name)["samples"][0]
    assert card_sample(model, tokenizer, sample["prompt"]) == sample["completion"]
    assert "## Rebuild" in (builtin_dir(name) / "README.md").read_text()


def test_micro_gpt2_ships_the_fused_kernel_of_the_gelu_it_trained_with(models):
    """micro-gpt2-stdlib trained with gelu_new (Python ops) and ships gelu_pytorch_tanh, the same tanh formula in
    one kernel (faster races): the logits agree to fp32 rounding. Each GELU output differs by a few ulps; through
    4 blocks that stays within 64 ulps of the largest logit, while another function (erf GELU) is far outside."""
    import torch
    from transformers.activations import ACT2FN

    model, _ = models["micro-gpt2-stdlib"]
    assert model.config.activation_function == "gelu_pytorch_tanh"
    x = builtin_corpus().validation_windows(2)[:, :128]
    blocks = model.transformer.h
    shipped = blocks[0].mlp.act

    def logits_with(act: str):
        for block in blocks:
            block.mlp.act = ACT2FN[act]
        with torch.no_grad():
            return model(input_ids=x).logits

    try:
        fused, trained, erf = logits_with("gelu_pytorch_tanh"), logits_with("gelu_new"), logits_with("gelu")
    finally:
        for block in blocks:
            block.mlp.act = shipped
    tol = 64 * torch.finfo(torch.float32).eps * fused.abs().max().item()
    assert (fused - trained).abs().max().item() <= tol
    assert (fused - erf).abs().max().item() > tol  # the check can tell functions apart


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_model_clones_with_equal_logits(models, name, factor):
    from hyperclone import clone, verify

    source, _ = models[name]
    wide = clone(source, factor=factor)
    assert wide.config.vocab_size == source.config.vocab_size
    report = verify(source, wide, input_ids=builtin_corpus().validation_windows(2)[:, :128])
    assert report.passed, f"max relative difference {report.max_rel_diff}"
    assert sum(p.numel() for p in wide.parameters()) > factor * sum(p.numel() for p in source.parameters())


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_card_says_where_and_how_long_the_source_trained(name):
    """Each source trained on builtin-large; its card's budget adds up and its plateau verdict is its curve's."""
    from hyperclone.cli.asset_cards import plateau_of
    from hyperclone.training.setup import final_lr_of

    card = read_card(name)
    data, training = card["data"], card["training"]
    assert data["corpus_spec"] == "builtin-large" and data["train_tokens"] >= 10 * builtin_corpus().num_tokens("train")
    assert training["tokens_seen"] == training["steps"] * training["batch_size"] * training["seq_len"]
    assert training["epochs"] == round(training["tokens_seen"] / data["train_tokens"], 2)
    assert card["curve"][-1]["step"] == training["steps"]
    assert plateau_of(card["curve"], training["steps"]) == card["plateau"]  # the card's verdict is its curve's
    evaluated = [p["step"] for p in card["curve"]]
    assert card["plateau"]["from_step"] == max(s for s in evaluated if s <= 0.8 * training["steps"])  # the last 20 %
    assert 0.8 * training["steps"] - card["plateau"]["from_step"] < evaluated[1] - evaluated[0]  # (to an evaluation)
    verdict = "trained to its plateau" if card["plateau"]["met"] else "**not** at its plateau"
    assert verdict in (builtin_dir(name) / "README.md").read_text()  # and the README says it plainly
    assert final_lr_of(card) == training["final_lr"] == pytest.approx(3e-4)  # what the gentle recipe continues from


@pytest.mark.parametrize("losses, met", [
    ([5.0, 4.0, 3.5, 3.40, 3.395, 3.392], True),  # 80% of 6 steps is step 4.8: from step 4 (3.40) to 3.392
    ([5.0, 4.0, 3.5, 3.40, 3.39, 3.38], False),  # fell 0.02 over the last stretch
])
def test_plateau_is_measured_over_the_last_fifth_of_training(losses, met):
    from hyperclone.cli.asset_cards import plateau_of

    curve = [{"step": i + 1, "val_loss": v} for i, v in enumerate(losses)]
    verdict = plateau_of(curve, steps=6)
    assert (verdict["from_step"], verdict["to_step"], verdict["met"]) == (4, 6, met)
    assert verdict["improvement"] == pytest.approx(losses[3] - losses[-1])
