"""Issue 23, items 15 and 16: inputs the CLI used to answer with a traceback, a long wait, a broken clone or a
misleading message now end in one line (exit 2, nothing left at OUT), decided before any work.

Each runs the real console script in a subprocess through ``clirun.refused``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import pytest
from clirun import edit_config, refused
from families import LLAMA_KW, MOE_KW, tiny_model

from hyperclone import Growth, clone
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import MAX_LAYERS
from hyperclone.training.config import RaceConfig
from hyperclone.core.resources import is_out_of_memory
from hyperclone.io.stream import stream_clone


# --------------------------------------------------------------------------- #
# Item 15: tracebacks
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("under", ["", "sub/dir"])
def test_build_assets_refuses_an_out_that_is_a_file_before_training(tmp_path, under):
    (tmp_path / "notes.txt").write_text("mine")
    line = refused("build-assets", "--out", tmp_path / "notes.txt" / under)
    assert "is a file, not a directory" in line
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def moe_over_chosen(tmp_path_factory) -> Path:
    """A tiny Mixtral whose config routes each token to 5 of its 4 experts."""
    path = tmp_path_factory.mktemp("moe") / "moe"
    tiny_model("mixtral", dict(MOE_KW, num_local_experts=4)).save_pretrained(path)
    edit_config(path, num_experts_per_tok=5)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("command", ["clone", "verify"])  # streaming reads the config; verify loads the model
def test_an_moe_config_choosing_more_experts_than_it_has_is_refused_as_a_bad_config(moe_over_chosen, tmp_path,
                                                                                    command):
    target = moe_over_chosen if command == "verify" else tmp_path / "out"
    line = refused(command, moe_over_chosen, target, out=None if command == "verify" else target)
    assert "num_experts_per_tok=5" in line and "of 4" in line and "config.json" in line


def test_cloning_such_an_moe_model_in_python_is_refused_too():
    model = tiny_model("mixtral", dict(MOE_KW, num_local_experts=4))
    model.config.num_experts_per_tok = 5
    with pytest.raises(HyperCloneError, match="num_experts_per_tok=5 experts of 4"):
        clone(model, 2)


@pytest.fixture(scope="module")
def clone_dir(source, tmp_path_factory) -> Path:
    """A x2 clone of ``source``; tests spoil its ``hyperclone.json``."""
    return stream_clone(source, tmp_path_factory.mktemp("clone") / "wide", Growth(2)).out


RECORDS = {"bad JSON": ("{depth: 2", "cannot be read as JSON"), "a list": ("[1, 2]", "holds a JSON list"),
           "depth 1e9": (json.dumps({"depth": 10**9}), f"depth must be at most {MAX_LAYERS}")}


@pytest.mark.parametrize("record", RECORDS)
def test_verify_refuses_a_damaged_provenance_record_naming_it(source, clone_dir, record):
    text, words = RECORDS[record]
    (clone_dir / "hyperclone.json").write_text(text)
    line = refused("verify", source, clone_dir)
    assert words in line and "hyperclone.json" in line


def test_a_failed_memory_map_is_out_of_memory():
    assert is_out_of_memory(OSError(errno.ENOMEM, "Cannot allocate memory"))
    assert is_out_of_memory(RuntimeError("unable to mmap 253290768 bytes from file <x>: Cannot allocate memory (12)"))
    assert not is_out_of_memory(OSError(errno.ENOSPC, "No space left on device"))


# What a failed memory map raises inside the clone check after streaming (seen under `ulimit -v`: the check maps
# the output shard, and torch says "unable to mmap"): made to happen there, in the real console script, by a
# sitecustomize that the subprocess imports first. A real `ulimit -v` test depends on how much address space a
# given machine's threads and allocator arenas reserve, so it would pass or fail by machine, not by the code.
FAILING_MAP = """
from hyperclone.io import verify_sampled

def fail_to_map(*args, **kwargs):
    raise RuntimeError("unable to mmap 253290768 bytes from file <model.safetensors>: Cannot allocate memory (12)")

verify_sampled._load_layers = fail_to_map
"""


@pytest.mark.slow
def test_streaming_out_of_address_space_is_the_one_line_out_of_memory_message(source, tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(FAILING_MAP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]))
    line = refused("clone", source, tmp_path / "out", "--factor", "2", out=tmp_path / "out")
    assert line.startswith("error: out of memory")


def test_an_snr_too_large_for_a_float_is_refused_before_torch_loads(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--variant", "noisy_symmetric", "--snr-db", "1e308",
                   out=tmp_path / "out")
    assert "snr_db must be a finite number of decibels, got 1e+308; use one from -3000 to 3000" in line


# --------------------------------------------------------------------------- #
# Item 16: weak refusals
# --------------------------------------------------------------------------- #
SNR_CASES = {"streaming float32": (["--snr-db=-1000"], "float32; use snr_db >= -385"),
             "in memory float16": (["--snr-db=-60", "--in-memory", "--dtype", "float16"], "float16; use snr_db >= -48")}


@pytest.mark.slow
@pytest.mark.parametrize("case", SNR_CASES)
def test_an_snr_whose_noise_overflows_the_dtype_is_refused_before_cloning(source, tmp_path, case):
    flags, words = SNR_CASES[case]
    line = refused("clone", source, tmp_path / "out", "--variant", "noisy_symmetric", *flags, out=tmp_path / "out")
    assert "overflows" in line and words in line


def test_the_noise_check_is_the_api_one_too():
    with pytest.raises(HyperCloneError, match="overflows float32"):
        clone(tiny_model("llama", LLAMA_KW), 2, variant="noisy_symmetric", snr_db=-1000)


def test_a_huge_depth_is_refused_at_once(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--depth", "10000", out=tmp_path / "out")
    assert f"depth must be at most {MAX_LAYERS}" in line


@pytest.mark.slow
def test_a_depth_making_too_many_layers_is_refused_before_any_work(source, tmp_path):
    line = refused("clone", source, tmp_path / "out", "--depth", "1000", out=tmp_path / "out")  # 2 -> 2,000 layers
    assert "2,000 layers" in line and f"more than the {MAX_LAYERS} allowed" in line


def test_serve_on_a_busy_port_says_so_in_one_line_before_announcing_the_dashboard():
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = refused("serve", "--port", port)
    assert f"port {port} on localhost is in use" in line


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["x" * 100_000, "noisy_symmetric@" + "x" * 100_000, "staged@" + "9" * 100_000 + "x"])
def test_a_100_kb_contestant_spec_is_not_echoed_whole(tmp_path, spec):
    line = refused("race", "--contestants", spec, "--run-dir", tmp_path / "run")
    assert len(line) < 1000 and "characters)" in line


def test_a_long_name_in_steps_for_is_not_echoed_whole():
    with pytest.raises(HyperCloneError, match="characters") as refusal:
        RaceConfig(steps_for={"x" * 100_000: 5}).validate()
    assert len(str(refusal.value)) < 300


@pytest.mark.slow
def test_a_missing_relative_source_path_is_named_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)  # the CLI runs here: runs/ exists, runs/wide does not
    line = refused("clone", "runs/wide", "out")
    assert "no such directory: runs/wide)" in line and "could not reach" not in line
