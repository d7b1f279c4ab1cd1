"""Bad inputs get one clear line: exit 2 in the CLI, nothing left at OUT, never a traceback.

CLI items run the real console script in a subprocess (what a user sees); API items raise
``HyperCloneError``; app items drive the dashboard with Streamlit's AppTest.
"""

from __future__ import annotations

import importlib
import resource
import shutil
import struct
from pathlib import Path

import pytest
import torch
from clirun import edit_config, refused
from families import CASES, LLAMA_KW, tiny_model
from pages import open_page
from safetensors.torch import load_file, save_file

from hyperclone import Growth, clone, load_source, make_plan, verify
from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.resources import check_fits_in_memory, free_bytes
from hyperclone.io.stream import stream_clone
from hyperclone.io.verify_sampled import verify_streamed

PATHS = {"streaming": [], "in memory": ["--in-memory"]}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def spoilt(source: Path, tmp_path: Path, name: str = "spoilt") -> Path:
    """A copy of ``source`` to break."""
    return Path(shutil.copytree(source, tmp_path / name))


def edit_weights(path: Path, change) -> None:
    state = load_file(path / "model.safetensors")
    change(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


# --------------------------------------------------------------------------- #
# Weights that disagree with the config (items 4 and 9)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("path", PATHS)
def test_a_config_with_more_layers_than_the_weights_is_refused_naming_a_missing_weight(source, tmp_path, path):
    src = spoilt(source, tmp_path)
    edit_config(src, num_hidden_layers=3)  # the weights hold 2
    line = refused("clone", src, tmp_path / "out", *PATHS[path], out=tmp_path / "out")
    assert "lacks the weight 'model.layers.2." in line


@pytest.mark.slow
def test_an_unknown_extra_weight_is_refused_by_name_not_dropped(source, tmp_path):
    src = spoilt(source, tmp_path)
    edit_weights(src, lambda state: state.update({"model.layers.0.mystery.weight": torch.ones(2)}))
    line = refused("clone", src, tmp_path / "out", "--in-memory", out=tmp_path / "out")
    assert "'model.layers.0.mystery.weight'" in line and "does not have" in line


@pytest.mark.slow
def test_a_mis_shaped_weight_is_refused_naming_the_tensor_its_shape_and_the_expected_shape(source, tmp_path):
    src = spoilt(source, tmp_path)
    edit_weights(src, lambda state: state.update({"model.norm.weight": torch.ones(7)}))
    line = refused("clone", src, tmp_path / "out", "--in-memory", out=tmp_path / "out")
    assert "'model.norm.weight'" in line and "(7,)" in line and "(32,)" in line


SPOILERS = {
    "missing": lambda path: edit_config(path, num_hidden_layers=3),
    "unexpected": lambda path: edit_weights(path, lambda state: state.update({"model.mystery": torch.ones(2)})),
    "mis-shaped": lambda path: edit_weights(path, lambda state: state.update({"model.norm.weight": torch.ones(7)})),
}


@pytest.mark.parametrize("spoiler", SPOILERS)
def test_loading_in_memory_and_streaming_refuse_a_disagreeing_checkpoint_with_the_same_words(source, tmp_path, spoiler):
    src = spoilt(source, tmp_path)
    SPOILERS[spoiler](src)
    with pytest.raises(HyperCloneError) as in_memory:
        load_source(src, device="cpu")
    with pytest.raises(HyperCloneError) as streaming:
        stream_clone(src, tmp_path / "out", Growth(2))
    assert str(in_memory.value) == str(streaming.value)


def test_load_source_refuses_missing_weights_instead_of_filling_them_at_random(source, tmp_path):
    src = spoilt(source, tmp_path)
    edit_config(src, num_hidden_layers=3)
    with pytest.raises(HyperCloneError, match="lacks the weight 'model.layers.2."):
        load_source(src, device="cpu")


def test_a_tied_head_stored_once_is_not_missing(tmp_path):
    model = tiny_model("llama", dict(LLAMA_KW, tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "tied")
    loaded, _ = load_source(tmp_path / "tied", device="cpu")
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


# --------------------------------------------------------------------------- #
# Non-finite source weights (item 5)
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_a_source_with_a_nan_weight_is_refused_naming_the_tensor(source, tmp_path, path):
    src = spoilt(source, tmp_path)

    def poison(state):
        state["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")

    edit_weights(src, poison)
    line = refused("clone", src, tmp_path / "out", *PATHS[path], out=tmp_path / "out")
    assert "'model.layers.1.mlp.up_proj.weight'" in line and "NaN" in line


def test_clone_refuses_a_model_with_an_infinite_weight_naming_it():
    model = tiny_model("llama", LLAMA_KW)
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight[0, 0] = float("inf")
    with pytest.raises(HyperCloneError, match=r"'model.layers.0.self_attn.k_proj.weight'.*NaN or infinite"):
        clone(model, 2)


def test_a_float16_weight_whose_sum_overflows_is_still_finite_and_accepted():
    from hyperclone.core.clone import check_finite

    big = torch.full((4,), 60000.0, dtype=torch.float16)  # each finite; the float16 sum is inf
    assert torch.isinf(big.sum())
    check_finite("model.norm.weight", big)
    big[1] = float("-inf")
    with pytest.raises(HyperCloneError, match="'model.norm.weight' holds NaN or infinite"):
        check_finite("model.norm.weight", big)


# --------------------------------------------------------------------------- #
# Growth settings (item 6)
# --------------------------------------------------------------------------- #
def test_an_infinite_snr_is_refused_in_one_line(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--variant", "noisy_symmetric", "--snr-db=-inf",
                   out=tmp_path / "out")
    assert "snr_db must be a finite number" in line


@pytest.mark.parametrize("snr", [float("inf"), float("-inf"), float("nan")])
def test_clone_refuses_a_non_finite_snr(snr):
    with pytest.raises(HyperCloneError, match="snr_db must be a finite number"):
        clone(tiny_model("llama", LLAMA_KW), 2, variant="noisy_symmetric", snr_db=snr)


# --------------------------------------------------------------------------- #
# A made-up model type (item 7)
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_a_made_up_model_type_is_named_with_the_supported_families(source, tmp_path, path):
    src = spoilt(source, tmp_path)
    edit_config(src, model_type="wizardlm9")
    line = refused("clone", src, tmp_path / "out", *PATHS[path], out=tmp_path / "out")
    assert "unknown model type 'wizardlm9'" in line and "not a transformers architecture" in line
    assert "llama" in line and "gpt2" in line and "version" not in line


# --------------------------------------------------------------------------- #
# Broken safetensors files (item 8)
# --------------------------------------------------------------------------- #
def truncated(data: bytes) -> bytes:
    return data[:-100]


def garbage_header(data: bytes) -> bytes:
    return struct.pack("<Q", 30) + b"x" * 30 + data[38:]


def huge_header_length(data: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + data[8:]


BREAKAGES = {"truncated": truncated, "garbage header": garbage_header, "header length 2^62": huge_header_length}


def broken_file(source: Path, tmp_path: Path, breakage: str = "truncated") -> Path:
    src = spoilt(source, tmp_path, "broken")
    weights = src / "model.safetensors"
    weights.write_bytes(BREAKAGES[breakage](weights.read_bytes()))
    return src


@pytest.mark.slow
@pytest.mark.parametrize(("breakage", "path"), [("truncated", "streaming"), ("truncated", "in memory"),
                                                ("garbage header", "in memory"), ("header length 2^62", "streaming")])
def test_a_broken_safetensors_file_is_named_when_cloning(source, tmp_path, breakage, path):
    src = broken_file(source, tmp_path, breakage)
    line = refused("clone", src, tmp_path / "out", *PATHS[path], out=tmp_path / "out")
    assert f"not a valid safetensors file: {src / 'model.safetensors'}" in line and "re-download" in line


@pytest.mark.slow
def test_verify_of_a_truncated_checkpoint_names_the_file(source, tmp_path):
    src = broken_file(source, tmp_path)
    line = refused("verify", source, src, "--device", "cpu")
    assert f"not a valid safetensors file: {src / 'model.safetensors'}" in line


# --------------------------------------------------------------------------- #
# Devices (item 12)
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_an_unknown_device_is_refused_before_any_work(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--device", "tpu", out=tmp_path / "out")
    assert "unknown device 'tpu'" in line and "cpu" in line


@pytest.mark.slow
@NO_CUDA
def test_cuda_on_a_machine_without_it_is_refused_before_any_work(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--device", "cuda", "--in-memory", out=tmp_path / "out")
    assert "CUDA is not available" in line


def test_verify_refuses_an_unknown_device(source):
    assert "unknown device 'tpu'" in refused("verify", source, source, "--device", "tpu")


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "banana"])
def test_load_source_refuses_a_device_it_cannot_use(device):
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(HyperCloneError):
        load_source("tiny-gpt2-stdlib", device=device)


@NO_CUDA
def test_load_source_and_stream_clone_refuse_cuda_without_it(source, tmp_path):
    with pytest.raises(HyperCloneError, match="CUDA is not available"):
        load_source(source, device="cuda")
    with pytest.raises(HyperCloneError, match="CUDA is not available"):
        stream_clone(source, tmp_path / "out", Growth(2), verify=True, device="cuda")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["int8", "bool", "float128"])
def test_load_source_refuses_a_dtype_that_is_not_a_float_type(dtype):
    with pytest.raises(HyperCloneError, match="dtype"):
        load_source("tiny-gpt2-stdlib", device="cpu", dtype=dtype)


# --------------------------------------------------------------------------- #
# verify of models that are not source and clone (item 13)
# --------------------------------------------------------------------------- #
def saved(model, path: Path) -> Path:
    model.save_pretrained(path)
    return path


@pytest.mark.slow
def test_verify_of_models_with_different_vocabularies_says_so(source, tmp_path):
    other = saved(tiny_model("llama", dict(LLAMA_KW, vocab_size=50)), tmp_path / "small-vocab")
    line = refused("verify", source, other, "--device", "cpu")
    assert "vocabular" in line and "97" in line and "50" in line


@pytest.mark.slow
def test_verify_of_two_different_families_says_so(source, tmp_path):
    gpt2 = next(c for c in CASES if c[0] == "gpt2")
    other = saved(tiny_model("gpt2", gpt2[2]), tmp_path / "gpt2")
    line = refused("verify", source, other, "--device", "cpu")
    assert "'llama'" in line and "'gpt2'" in line


@pytest.mark.slow
def test_verify_of_a_narrower_destination_says_so(source, tmp_path):
    wide = saved(clone(load_source(source, device="cpu")[0], 2), tmp_path / "wide")
    line = refused("verify", wide, source, "--device", "cpu")  # swapped
    assert "hidden size 32" in line and "64" in line and "SRC and DST" in line


def test_verify_of_models_with_different_depths_says_so():
    shallow = tiny_model("llama", dict(LLAMA_KW, num_hidden_layers=1))
    with pytest.raises(HyperCloneError, match="1 layer.*2 layers|2 layers.*1 layer"):
        verify(tiny_model("llama", LLAMA_KW), shallow)


def corrupt(model, tensor: str) -> None:
    with torch.no_grad():
        model.get_parameter(tensor)[0, 0] += 1.0


def test_a_corrupted_layer_is_named_with_its_sub_module():
    model = tiny_model("llama", dict(LLAMA_KW, num_hidden_layers=3))
    wide = clone(model, 2)
    corrupt(wide, "model.layers.1.mlp.down_proj.weight")
    report = verify(model, wide)
    assert not report.passed and report.culprit == "layer 1: mlp differs"
    assert "layer 1: mlp differs" in report.summary()


def test_a_corrupted_attention_is_named_as_attention():
    model = tiny_model("llama", LLAMA_KW)
    wide = clone(model, 2)
    corrupt(wide, "model.layers.0.self_attn.o_proj.weight")
    assert verify(model, wide).culprit == "layer 0: self_attn differs"


def test_sampled_verification_names_the_corrupted_layer_by_its_number_in_the_source(tmp_path):
    model = tiny_model("llama", dict(LLAMA_KW, num_hidden_layers=5))
    src = saved(model, tmp_path / "src")
    stream_clone(src, tmp_path / "out", Growth(2))
    edit_weights(tmp_path / "out", lambda s: s["model.layers.4.mlp.down_proj.weight"].__setitem__((0, 0), 9.0))
    _, report = verify_streamed(src, tmp_path / "out", make_plan(model.config, Growth(2)), mode="sample", device="cpu")
    assert report.culprit == "layer 4: mlp differs"


# --------------------------------------------------------------------------- #
# verify's input ids (item 15)
# --------------------------------------------------------------------------- #
BAD_IDS = {
    "outside the vocabulary": (torch.tensor([[5, 97]]), "outside the vocabulary"),
    "negative": (torch.tensor([[-1, 3]]), "outside the vocabulary"),
    "float": (torch.tensor([[1.0, 2.0]]), "integer"),
    "empty": (torch.zeros(1, 0, dtype=torch.long), "no tokens"),
    "longer than the context": (torch.zeros(1, 65, dtype=torch.long), "context of 64"),
    "three-dimensional": (torch.zeros(1, 1, 3, dtype=torch.long), "[batch, tokens]"),
}


@pytest.mark.parametrize("case", BAD_IDS)
def test_verify_refuses_input_ids_the_model_cannot_read(case):
    model = tiny_model("llama", LLAMA_KW)
    ids, message = BAD_IDS[case]
    with pytest.raises(HyperCloneError, match=message.replace("[", r"\[").replace("]", r"\]")):
        verify(model, clone(model, 2), input_ids=ids)


# --------------------------------------------------------------------------- #
# Memory (item 17)
# --------------------------------------------------------------------------- #
ADDRESS_SPACE = 4 * 2**30  # room for Python, torch and a tiny model; not for a 4B-parameter clone


def limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.slow
def test_an_address_space_limit_is_respected_by_the_memory_estimate(source, tmp_path):
    # x512 of a 2-layer hidden-32 llama: ~4e9 parameters, ~16 GB in float32, far over the 4 GiB limit.
    line = refused("clone", source, tmp_path / "out", "--factor", "512", "--device", "cpu", "--in-memory",
                   out=tmp_path / "out", preexec_fn=limit_address_space)
    assert "needs" in line and "free on cpu" in line


def test_free_memory_is_no_more_than_the_address_space_left(monkeypatch):
    import psutil

    used = psutil.Process().memory_info().vms
    monkeypatch.setattr(resource, "getrlimit",
                        lambda which: (used + 2**20, used + 2**20) if which == resource.RLIMIT_AS else (-1, -1))
    assert free_bytes("cpu") <= 2**20
    with pytest.raises(HyperCloneError, match="free on cpu"):
        check_fits_in_memory(2**21, "cpu")


def test_free_memory_is_no_more_than_a_cgroup_limit_leaves(monkeypatch, tmp_path):
    import hyperclone.core.resources as res

    (tmp_path / "memory.max").write_text(f"{3 * 2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2 * 2**30}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {2**29}\n")
    monkeypatch.setattr(res, "CGROUP_DIRS", (tmp_path,))
    assert free_bytes("cpu") <= 2**30 + 2**29


def allocation_failure(*args, **kwargs):
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 17179869184 bytes. Error code 12 (Cannot allocate memory)")


def test_an_allocation_failure_in_the_cli_is_the_one_line_out_of_memory_message(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(importlib.import_module("hyperclone.core.clone"), "apply_plan", allocation_failure)
    assert main(["clone", str(source), str(tmp_path / "out"), "--in-memory", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (transformers' load progress bar too)
    assert len(errors) == 1 and errors[0].startswith("error: out of memory") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_allocation_failure_in_the_app_is_the_one_line_out_of_memory_message(monkeypatch):
    monkeypatch.setattr(importlib.import_module("hyperclone.dashboard.sources_panel"), "apply_plan", allocation_failure)
    at = open_page()
    at.sidebar.number_input(key="seed").set_value(424242).run()  # settings no cached clone has
    at.button(key="clone").click().run()
    assert not at.exception, at.exception
    messages = [e.value for e in at.error]
    assert len(messages) == 1 and messages[0].startswith("out of memory while cloning"), messages


# --------------------------------------------------------------------------- #
# The app (items 7, 8, 12)
# --------------------------------------------------------------------------- #
def load_in_app(path: Path) -> list[str]:
    at = open_page()
    at.sidebar.radio(key="source_kind").set_value("Local directory").run()
    at.sidebar.text_input(key="local_dir").set_value(str(path)).run()
    at.sidebar.button(key="load").click().run()
    assert not at.exception, at.exception
    return [e.value for e in at.error]


def test_the_app_names_a_made_up_model_type_without_blaming_the_transformers_version(source, tmp_path):
    src = spoilt(source, tmp_path)
    edit_config(src, model_type="wizardlm9")
    messages = load_in_app(src)
    assert len(messages) == 1 and "unknown model type 'wizardlm9'" in messages[0], messages
    assert "version" not in messages[0]


def test_the_app_names_a_broken_safetensors_file(source, tmp_path):
    src = broken_file(source, tmp_path, "garbage header")
    messages = load_in_app(src)
    assert len(messages) == 1 and f"not a valid safetensors file: {src / 'model.safetensors'}" in messages[0]


@NO_CUDA
def test_the_app_device_check_is_the_library_one():
    from hyperclone.io.sources import check_device

    with pytest.raises(HyperCloneError) as refused_cuda:
        check_device("cuda")
    at = open_page()
    at.sidebar.selectbox(key="device").set_value("cuda").run()
    assert [e.value for e in at.error] == [str(refused_cuda.value)]

