"""Saving clones and the CLI: standard checkpoints, provenance, atomic output, one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from families import LLAMA_KW, tiny_model
from transformers import AutoConfig, AutoModelForCausalLM

from hyperclone import clone, verify
from hyperclone.core.verify import TOLERANCE
from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.io.export import atomic_output


@pytest.fixture()
def tied_llama_dir(tmp_path):
    model = tiny_model("llama", dict(LLAMA_KW, tie_word_embeddings=True))
    path = tmp_path / "src"
    model.save_pretrained(path)
    return path, model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_saved_clone_loads_with_stock_transformers_and_gives_the_same_logits(tied_llama_dir, tmp_path, capsys):
    src, model = tied_llama_dir
    out = tmp_path / "wide"
    # Streaming (the default) checks logits only when asked to.
    assert main(["clone", str(src), str(out), "--factor", "2", "--ffn-factor", "3",
                 "--variant", "noisy_symmetric", "--seed", "7", "--device", "cpu"]) == 0
    assert "equivalence PASSED" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "generation_config.json", "hyperclone.json", "README.md"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin"))
    wide = AutoModelForCausalLM.from_pretrained(out).eval()  # no custom code
    assert wide.config.hidden_size == 64 and wide.config.intermediate_size == 144
    assert wide.config.tie_word_embeddings is False
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(0))
    reference = _logits(model, ids)  # verify's float32 tolerance (eps x reductions) is relative to max |logit|
    atol = TOLERANCE[torch.float32] * float(reference.abs().max())
    torch.testing.assert_close(_logits(wide, ids), reference, rtol=0, atol=atol)
    record = json.loads((out / "hyperclone.json").read_text())
    assert record["factor"] == 2 and record["ffn_factor"] == 3 and record["variant"] == "noisy_symmetric"
    assert record["seed"] == 7 and record["snr_db"] == 10.0 and record["equivalence"]["passed"] is True
    assert record["source"] == str(src) and record["hyperclone_version"]
    assert not list(tmp_path.glob(".wide.tmp-*"))


def test_clone_in_memory_equals_clone_saved_and_reloaded(tied_llama_dir, tmp_path):
    _, model = tied_llama_dir
    wide = clone(model, 3, variant="noisy_diagonal", seed=3)
    wide.save_pretrained(tmp_path / "w")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "w")
    for (name, a), (_, b) in zip(wide.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_verify_command_passes_and_fails(tied_llama_dir, tmp_path, capsys):
    src, model = tied_llama_dir
    out = tmp_path / "wide"
    assert main(["clone", str(src), str(out)]) == 0
    assert main(["verify", str(src), str(out)]) == 0
    broken = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        broken.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    broken.save_pretrained(tmp_path / "broken")
    capsys.readouterr()
    assert main(["verify", str(src), str(tmp_path / "broken")]) == 1
    assert "equivalence FAILED" in capsys.readouterr().out


def test_an_earlier_output_is_refused_without_overwrite(tied_llama_dir, tmp_path, capsys):
    """Foreign non-empty directories are refused even with --overwrite: tests/test_output_safety.py."""
    src, _ = tied_llama_dir
    out = tmp_path / "busy"
    out.mkdir()
    (out / "hyperclone.json").write_text("{}")
    (out / "config.json").write_text("old")  # a file HyperClone writes (files the user added: test_output_ownership)
    assert main(["clone", str(src), str(out)]) == 2
    assert "holds an earlier HyperClone output; choose a new directory, or pass --overwrite" in capsys.readouterr().err
    assert (out / "config.json").read_text() == "old"
    assert main(["clone", str(src), str(out), "--overwrite"]) == 0
    assert (out / "config.json").read_text() != "old" and (out / "hyperclone.json").read_text() != "{}"


def test_interrupted_save_leaves_nothing_at_out(tied_llama_dir, tmp_path, monkeypatch):
    src, _ = tied_llama_dir
    out = tmp_path / "wide"
    import transformers

    def explode(self, path, *a, **k):
        (path / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", explode)
    # The in-memory path saves with save_pretrained; tests/test_stream.py interrupts the streaming writer.
    assert main(["clone", str(src), str(out), "--in-memory"]) == 130
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_atomic_output_keeps_the_old_output_when_overwrite_fails(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "hyperclone.json").write_text("{}")  # an earlier output: only that may be replaced
    (out / "config.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(out, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "hyperclone.json"]


def test_pickle_only_checkpoint_is_refused_unless_allowed(tied_llama_dir, tmp_path, capsys):
    _, model = tied_llama_dir
    pickled = tmp_path / "pickled"
    model.save_pretrained(pickled, safe_serialization=False) if "safe_serialization" in \
        model.save_pretrained.__code__.co_varnames else None
    if not (pickled / "pytorch_model.bin").exists():  # transformers v5 always writes safetensors
        pickled.mkdir(exist_ok=True)
        model.config.save_pretrained(pickled)
        torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    assert main(["clone", str(pickled), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "pickle" in line and "--allow-pickle" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv_extra,message",
    [
        (["--factor", "0"], "factor must be an integer >= 1, got 0"),
        (["--ffn-factor", "-2"], "ffn_factor must be an integer >= 1, got -2"),
    ],
)
def test_bad_factors_give_one_line_errors(tied_llama_dir, tmp_path, capsys, argv_extra, message):
    src, _ = tied_llama_dir
    assert main(["clone", str(src), str(tmp_path / "o"), *argv_extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "o").exists()


def test_unsupported_family_is_named_with_the_supported_list(tmp_path, capsys):
    cfg = AutoConfig.for_model("bloom", hidden_size=16, n_head=2, n_layer=1, vocab_size=50)
    m = AutoModelForCausalLM.from_config(cfg)
    m.save_pretrained(tmp_path / "bloom")
    assert main(["clone", str(tmp_path / "bloom"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bloom" in err and "gpt2" in err and "llama" in err


def test_missing_source_path(tmp_path, capsys):
    assert main(["clone", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_will_not_fit_is_refused_with_numbers_unless_forced(tied_llama_dir, tmp_path, capsys, monkeypatch):
    src, _ = tied_llama_dir
    import hyperclone.core.resources as res

    monkeypatch.setattr(res, "free_bytes", lambda device: 1000)
    assert main(["clone", str(src), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs" in err and "only 1000 B is free" in err and "--force" in err
    assert main(["clone", str(src), str(tmp_path / "o"), "--force"]) == 0


def test_spec_refuses_unknown_weights():
    from hyperclone.core.clone import make_plan

    model = tiny_model("llama", LLAMA_KW)
    plan = make_plan(model.config)
    with pytest.raises(HyperCloneError, match="'model.layers.0.mystery.weight' is not described by the llama spec"):
        plan.grow("model.layers.0.mystery.weight", torch.ones(2, 2))


def test_tie_keep_refused_where_inexact():
    model = tiny_model("gemma", dict(LLAMA_KW, head_dim=8, tie_word_embeddings=True))
    with pytest.raises(HyperCloneError, match="tie='keep' is not supported for gemma"):
        clone(model, 2, tie="keep")


def test_bad_variant_and_tie_and_model():
    model = tiny_model("llama", LLAMA_KW)
    with pytest.raises(HyperCloneError, match="unknown variant"):
        clone(model, 2, variant="fancy")
    with pytest.raises(HyperCloneError, match="tie must be one of untie, keep"):
        clone(model, 2, tie="sometimes")
    with pytest.raises(HyperCloneError, match="expects a transformers PreTrainedModel"):
        clone(torch.nn.Linear(2, 2), 2)
    with pytest.raises(HyperCloneError, match="needs a tokenizer"):
        verify(model, clone(model, 2), text="hello")


def test_families_command_lists_all(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    for fam in ("gpt2", "opt", "gpt_neox", "phi3", "gemma3_text"):
        assert fam in out


def test_sources_command_lists_builtins_with_their_validation_loss(capsys):
    from hyperclone.io.sources import read_card

    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny-gpt2-stdlib", "tiny-llama-stdlib"):
        line = next(x for x in out.splitlines() if x.strip().startswith(name))
        assert f"{read_card(name)['val_loss']:.3f}" in line
    assert "EleutherAI/pythia-70m" in out


def test_build_assets_refuses_an_unknown_part(capsys):
    with pytest.raises(SystemExit):
        main(["build-assets", "--only", "bert"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], "steps must be a positive number"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_build_assets_refuses_a_bad_budget_or_device_in_one_line_before_any_work(tmp_path, capsys, argv, words):
    out = tmp_path / "assets"
    assert main(["build-assets", "--only", "gpt2", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and not out.exists()
