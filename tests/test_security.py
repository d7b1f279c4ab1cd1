"""A checkpoint's own code never runs unless asked, and a blocked pickle is one line: nothing prompts, nothing runs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from clirun import one_line, run_cli
from families import LLAMA_KW, tiny_model
from safetensors.torch import save_file

from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError

# Imported by transformers only if it runs the checkpoint's code: the marker file is the proof.
CUSTOM_CODE = """
import pathlib

pathlib.Path({marker!r}).write_text("the checkpoint's own code ran")

from transformers import PretrainedConfig, PreTrainedModel


class TrojanConfig(PretrainedConfig):
    model_type = "trojan_lm"


class TrojanModel(PreTrainedModel):
    config_class = TrojanConfig
"""




@pytest.fixture()
def custom_code_checkpoint(tmp_path):
    """A checkpoint whose config names its own classes (auto_map), with the Python file that defines them."""
    path, marker = tmp_path / "trojan", tmp_path / "code-ran.txt"
    path.mkdir()
    (path / "trojan.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    (path / "config.json").write_text(json.dumps({
        "model_type": "trojan_lm", "architectures": ["TrojanModel"],
        "auto_map": {"AutoConfig": "trojan.TrojanConfig", "AutoModelForCausalLM": "trojan.TrojanModel"},
    }))
    save_file({"weight": torch.zeros(4)}, path / "model.safetensors")
    return path, marker


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--in-memory"]], ids=["streaming", "in-memory"])
def test_cli_refuses_a_checkpoint_with_its_own_code_without_running_or_asking(custom_code_checkpoint, tmp_path,
                                                                              mode):
    src, marker = custom_code_checkpoint
    out = tmp_path / "out"
    code, stdout, err = run_cli("clone", str(src), str(out), *mode)
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: ") and "--trust-remote-code" in line
    assert "[y/N]" not in stdout + err
    assert not marker.exists() and not out.exists()


def test_verify_and_race_refuse_it_too(custom_code_checkpoint, tmp_path, capsys, monkeypatch):
    src, marker = custom_code_checkpoint
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # a prompt would read EOF here, not hang
    assert main(["verify", str(src), str(src)]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    assert main(["race", "--source", str(src), "--run-dir", str(tmp_path / "run"), "--no-progress",
                 "--device", "cpu"]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    assert not marker.exists()


def test_the_api_raises_one_line_errors_and_runs_nothing(custom_code_checkpoint, tmp_path, monkeypatch):
    from hyperclone import load_source, race, stream_clone

    src, marker = custom_code_checkpoint
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    for load in (lambda: load_source(src), lambda: stream_clone(src, tmp_path / "out"),
                 lambda: race(src, steps=1, run_dir=tmp_path / "run", device="cpu")):
        with pytest.raises(HyperCloneError, match="trust_remote_code=True") as e:
            load()
        assert "\n" not in str(e.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_tokenizer_with_its_own_code_is_refused_like_a_model(tmp_path, monkeypatch):
    """A supported model whose tokenizer_config.json names custom classes: the model loads, the tokenizer may not."""
    from hyperclone import load_source

    path, marker = tmp_path / "src", tmp_path / "code-ran.txt"
    tiny_model("llama", LLAMA_KW).save_pretrained(path)
    (path / "trojan.py").write_text(CUSTOM_CODE.format(marker=str(marker)))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "TrojanTokenizer", "auto_map": {"AutoTokenizer": ["trojan.TrojanTokenizer", None]}}))
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    with pytest.raises(HyperCloneError, match="--trust-remote-code"):
        load_source(path, device="cpu")
    assert not marker.exists()


@pytest.mark.slow
def test_a_pickle_that_the_safe_loader_blocks_is_one_line_and_nothing_runs(tmp_path):
    """--allow-pickle still loads with torch's weights_only: an object that would run a command is blocked."""

    class RunsACommand:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pickle-ran.txt'}",)

    model = tiny_model("llama", LLAMA_KW)
    src = tmp_path / "pickled"
    src.mkdir()
    model.config.save_pretrained(src)
    torch.save(dict(model.state_dict(), extra=RunsACommand()), src / "pytorch_model.bin")
    code, _, err = run_cli("clone", str(src), str(tmp_path / "out"), "--allow-pickle")
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: ")
    assert "pickle" in line and "nothing in them was run" in line
    assert not (tmp_path / "pickle-ran.txt").exists() and not (tmp_path / "out").exists()
