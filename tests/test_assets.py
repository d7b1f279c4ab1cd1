"""The shipped tokenizer and source models: they load offline, match their cards, and clone."""

from __future__ import annotations

import json
import sys

import pytest
from builtin_corpus import builtin_corpus

from hyperclone.assets import ASSETS_DIR, TOKENIZER_DIR
from hyperclone.assets.build import EVAL_WINDOWS, card_sample
from hyperclone.sources import BUILTIN_NAMES, builtin_dir, load_source, read_card
from hyperclone.train import evaluate

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


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_model_reproduces_its_card_validation_loss(models, name):
    card = read_card(name)
    if card["data"]["python"].rsplit(".", 1)[0] != ".".join(map(str, sys.version_info[:2])):
        pytest.skip(f"card measured on Python {card['data']['python']}: another stdlib, another split")
    model, _ = models[name]
    windows = builtin_corpus().validation_windows(card["data"]["eval_windows"])
    assert card["data"]["eval_windows"] == EVAL_WINDOWS
    loss, accuracy = evaluate(model, windows)
    assert loss == pytest.approx(card["val_loss"], abs=0.05)
    assert accuracy == pytest.approx(card["val_accuracy"], abs=0.01)
    assert loss < 4.0  # it learnt something (uniform would be ln 2048 = 7.6)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_model_reproduces_its_card_sample(models, name):
    model, tokenizer = models[name]
    sample = read_card(name)["samples"][0]
    assert card_sample(model, tokenizer, sample["prompt"]) == sample["completion"]
    assert "## Rebuild" in (builtin_dir(name) / "README.md").read_text()


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
