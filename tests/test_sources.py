"""Loading source models: built-in names, local checkpoints, hub ids, and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from clirun import one_line
from safetensors.torch import save_file

import hyperclone.io.sources as sources
from hyperclone.core.errors import HyperCloneError, SourceError
from hyperclone.io.sources import (
    BUILTIN_NAMES,
    HUB_PRESETS,
    default_device,
    list_sources,
    load_source,
    read_card,
    resolve_source,
)
from hyperclone.specs import supported_families


def one_line_error(excinfo) -> str:
    """The message of a ``HyperCloneError`` that ``pytest.raises`` caught: one line."""
    assert isinstance(excinfo.value, HyperCloneError)
    return one_line(str(excinfo.value))


def test_default_device_prefers_an_accelerator():
    dev = default_device()
    assert isinstance(dev, torch.device)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.type == expected


def test_list_sources_reads_the_cards():
    listed = {s.name: s for s in list_sources()}
    assert set(listed) == set(BUILTIN_NAMES)
    for name, info in listed.items():
        card = read_card(name)
        assert info.family == card["family"] and info.params == card["params"]
        assert info.val_loss == card["val_loss"] and 0 < info.val_loss < 5
        assert 0.3 < info.size_mb < 8 and info.builtin
        assert info.family in supported_families()
    assert sources.BUILTIN["tiny-llama-stdlib"].family == "llama"


def test_hub_presets_are_curated():
    ids = {p.name: p for p in HUB_PRESETS}
    for hub_id in ("EleutherAI/pythia-70m", "facebook/opt-125m", "openai-community/gpt2",
                   "HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B", "allenai/OLMo-1B-hf"):
        assert hub_id in ids and not ids[hub_id].builtin
    assert ids["EleutherAI/pythia-70m"].family == "gpt_neox"
    assert 60e6 < ids["EleutherAI/pythia-70m"].params < 80e6
    assert all(p.params > 1e6 and p.size_mb > 1 for p in HUB_PRESETS)


def test_resolve_source_names_where_a_source_comes_from(tmp_path):
    assert resolve_source("tiny-gpt2-stdlib")[0] == "builtin"
    assert resolve_source(tmp_path) == ("local", str(tmp_path))
    assert resolve_source("EleutherAI/pythia-70m") == ("hub", "EleutherAI/pythia-70m")
    assert resolve_source("gpt2") == ("hub", "gpt2")


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_sources_load_offline(name):
    model, tokenizer = load_source(name, device="cpu")
    p = next(model.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu" and not model.training
    assert model.config.model_type == read_card(name)["family"]
    assert tokenizer.eos_token == "<|endoftext|>" and len(tokenizer) == model.config.vocab_size


def test_dtype_argument():
    model, _ = load_source("tiny-llama-stdlib", device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(SourceError) as e:
        load_source("tiny-llama-stdlib", device="cpu", dtype="float7")
    assert "unknown dtype" in one_line_error(e)


def test_local_checkpoint_directory(tmp_path):
    model, tokenizer = load_source("tiny-gpt2-stdlib", device="cpu")
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    again, _ = load_source(str(tmp_path / "ckpt"), device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(model(ids).logits, again(ids).logits)


def test_missing_local_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_source(str(tmp_path / "nowhere"))
    msg = one_line_error(e)
    assert "not found" in msg and "tiny-gpt2-stdlib" in msg


def test_pickle_only_checkpoint_is_refused(tmp_path):
    model, tokenizer = load_source("tiny-gpt2-stdlib", device="cpu")
    ckpt = tmp_path / "pickled"
    model.config.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    torch.save(model.state_dict(), ckpt / "pytorch_model.bin")
    with pytest.raises(SourceError) as e:
        load_source(str(ckpt), device="cpu")
    msg = one_line_error(e)
    assert "pickle" in msg and "--allow-pickle" in msg
    loaded, _ = load_source(str(ckpt), device="cpu", allow_pickle=True)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)  # the same weights on the same kernels: the same bits


def test_unsupported_family_fails_before_loading_weights(tmp_path):
    from transformers import AutoConfig

    ckpt = tmp_path / "mamba"
    AutoConfig.for_model("mamba", hidden_size=8, num_hidden_layers=1, vocab_size=16).save_pretrained(ckpt)
    save_file({"unused": torch.zeros(1)}, ckpt / "model.safetensors")  # never read
    with pytest.raises(SourceError) as e:
        load_source(str(ckpt), device="cpu")
    msg = one_line_error(e)
    assert "'mamba'" in msg and "supported families" in msg
    assert all(f in msg for f in supported_families())


def test_directory_without_config(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(SourceError) as e:
        load_source(str(tmp_path / "weights"))
    assert "no config.json" in one_line_error(e)


def test_hub_unreachable_names_the_builtin_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as e:
        load_source("EleutherAI/pythia-70m")
    msg = one_line_error(e)
    assert "could not reach the Hugging Face hub" in msg and "EleutherAI/pythia-70m" in msg
    assert all(name in msg for name in BUILTIN_NAMES)


def test_hub_reachable_respects_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert sources.hub_reachable() is False


def test_card_json_is_valid_json_with_the_figures():
    for name in BUILTIN_NAMES:
        card = json.loads((sources.builtin_dir(name) / "card.json").read_text())
        for key in ("params", "val_loss", "val_accuracy", "samples", "training", "rebuild"):
            assert key in card
