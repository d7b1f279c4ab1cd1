"""One ``Growth`` value carries the growth settings: checked once, passed whole, never unpacked and rebuilt."""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from families import LLAMA_KW, tiny_model
from safetensors.torch import load_file

from hyperclone import Growth, clone, make_plan, stream_clone
from hyperclone.cli.main import main
from hyperclone.core.clone import ClonePlan
from hyperclone.training.contestants import starting_model
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import RaceConfig

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
BUILTIN = "tiny-gpt2-stdlib"
CLONE_MODULE = importlib.import_module("hyperclone.core.clone")  # ``hyperclone.core.clone`` is the function
STREAM_MODULE = importlib.import_module("hyperclone.io.stream")


def same_bits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def llama():
    return tiny_model("llama", LLAMA_KW)


@pytest.fixture
def llama_dir(llama, tmp_path) -> Path:
    llama.save_pretrained(tmp_path / "src")
    return tmp_path / "src"


# --------------------------------------------------------------------------- #
# The type
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("settings, message", [
    (dict(factor=0), "factor must be an integer >= 1, got 0"),
    (dict(factor=2.0), "factor must be an integer >= 1, got 2.0"),
    (dict(ffn_factor=True), "ffn_factor must be an integer >= 1, got True"),
    (dict(variant="fancy"), "unknown variant 'fancy': choose one of symmetric, diagonal"),
    (dict(snr_db=float("nan")), "snr_db must be a finite number of decibels, got nan"),
    (dict(snr_db="10"), "snr_db must be a finite number of decibels, got '10'"),
    (dict(seed=1.5), "seed must be an integer, got 1.5"),
    (dict(tie="sometimes"), "tie must be one of untie, keep, got 'sometimes'"),
])
def test_a_growth_with_a_bad_setting_is_refused_in_one_line_naming_it(settings, message):
    with pytest.raises(HyperCloneError) as caught:
        Growth(**settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_growth_resolves_its_ffn_factor_and_number_types_so_equal_settings_are_equal():
    assert Growth(3).ffn_factor == 3 and Growth(3, 2).ffn_factor == 2
    assert Growth(2) == Growth(2, 2, snr_db=10) and hash(Growth(2)) == hash(Growth(2, 2, snr_db=10))
    assert isinstance(Growth(snr_db=5).snr_db, float)
    assert len({Growth(), Growth(2, 2), Growth(2, variant="diagonal")}) == 2  # usable as a cache key


def test_a_growth_cannot_be_changed_after_it_was_checked():
    g = Growth(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.factor = 0
    assert dataclasses.replace(g, factor=4).factor == 4
    with pytest.raises(HyperCloneError, match="factor must be"):
        dataclasses.replace(g, factor=0)  # a changed copy is checked again


def test_growth_imports_without_torch_so_the_cli_checks_arguments_first():
    code = "import sys, hyperclone.core.growth, hyperclone.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- #
# Passed whole: make_plan, clone, stream_clone, the race
# --------------------------------------------------------------------------- #
def test_a_plan_holds_the_growth_it_was_made_from(llama):
    g = Growth(2, 3, "noisy_diagonal", 5.0, 9)
    plan = make_plan(llama.config, g)
    assert plan.growth is g
    assert (plan.factor, plan.ffn_factor, plan.variant, plan.snr_db, plan.seed) == (2, 3, "noisy_diagonal", 5.0, 9)
    assert make_plan(llama.config).growth == Growth()
    assert ClonePlan.over_wide(llama.config, 2).growth == Growth(2, 2)


@pytest.mark.parametrize("variant, factor, ffn_factor", [("noisy_symmetric", 2, 3), ("diagonal", 3, 2)])
def test_clone_with_a_growth_equals_clone_with_the_same_settings_one_by_one(llama, variant, factor, ffn_factor):
    by_keywords = clone(llama, factor=factor, ffn_factor=ffn_factor, variant=variant, snr_db=7.5, seed=3)
    by_growth = clone(llama, growth=Growth(factor, ffn_factor, variant, 7.5, 3))
    assert same_bits(by_keywords, by_growth)
    assert by_growth.hyperclone_plan.growth == Growth(factor, ffn_factor, variant, 7.5, 3)


def test_clone_refuses_a_growth_and_loose_settings_at_once(llama):
    with pytest.raises(HyperCloneError, match="not both"):
        clone(llama, 3, growth=Growth(2))
    with pytest.raises(HyperCloneError, match="not both"):
        clone(llama, variant="diagonal", growth=Growth(2))


def test_a_bare_factor_where_a_growth_belongs_is_refused_in_one_line(llama, llama_dir, tmp_path):
    with pytest.raises(HyperCloneError, match=r"must be a Growth, e.g. Growth\(factor=2\), not int 2"):
        make_plan(llama.config, 2)
    with pytest.raises(HyperCloneError, match="must be a Growth"):
        clone(llama, growth=2)
    with pytest.raises(HyperCloneError, match="must be a Growth"):
        stream_clone(llama_dir, tmp_path / "out", 2)
    assert not (tmp_path / "out").exists()


def test_stream_clone_takes_a_growth_and_equals_the_in_memory_clone(llama, llama_dir, tmp_path):
    g = Growth(2, 3, "noisy_symmetric", seed=5)
    result = stream_clone(llama_dir, tmp_path / "out", g)
    stored = load_file(tmp_path / "out" / result.shards[0]) if len(result.shards) == 1 else None
    assert stored is not None
    wide = clone(llama, growth=g).state_dict()
    assert stored.keys() == wide.keys() and all(torch.equal(stored[k], wide[k]) for k in stored)


def test_a_race_grows_its_clones_from_its_growth(llama):
    cfg = RaceConfig(factor=2, ffn_factor=3, snr_db=5.0, seed=4)
    assert cfg.growth("noisy_diagonal") == Growth(2, 3, "noisy_diagonal", 5.0, 4)
    contestant = starting_model("noisy_symmetric", llama, cfg)
    before = clone(llama, 2, 3, variant="noisy_symmetric", snr_db=5.0, seed=4).float()  # the loose call it replaced
    assert same_bits(contestant, before)
    random_start = starting_model("random", llama, cfg)
    assert random_start.config.intermediate_size == 3 * LLAMA_KW["intermediate_size"]


# --------------------------------------------------------------------------- #
# The CLI builds one Growth and one plan
# --------------------------------------------------------------------------- #
def count_calls(monkeypatch, owner, name: str) -> list:
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("mode", [["--in-memory"], []])
def test_the_cli_builds_one_growth_and_one_plan_per_clone(llama_dir, tmp_path, monkeypatch, capsys, mode):
    growths = count_calls(monkeypatch, Growth, "__post_init__")
    plans = count_calls(monkeypatch, CLONE_MODULE, "make_plan")
    stream_plans = count_calls(monkeypatch, STREAM_MODULE, "make_plan")
    code = main(["clone", str(llama_dir), str(tmp_path / "out"), "--factor", "2", "--ffn-factor", "3",
                 "--variant", "noisy_symmetric", "--seed", "8", "--device", "cpu", *mode])
    assert code == 0, capsys.readouterr()
    assert len(growths) == 1
    assert len(plans) + len(stream_plans) == 1
    made = (plans or stream_plans)[0]
    assert made[1] == Growth(2, 3, "noisy_symmetric", seed=8)


# --------------------------------------------------------------------------- #
# The app: one plan per clone, cached by (source, device, dtype, growth)
# --------------------------------------------------------------------------- #
def test_the_app_keys_a_clone_by_source_device_dtype_and_growth_and_plans_it_once(app, monkeypatch):
    plans = count_calls(monkeypatch, importlib.import_module("hyperclone.dashboard.sources_panel"), "make_plan")
    loose_plans = count_calls(monkeypatch, CLONE_MODULE, "make_plan")
    app.sidebar.number_input(key="seed").set_value(4243).run()  # settings no other test clones with
    app.button(key="clone").click().run()
    assert not app.exception and [e.value for e in app.error] == []
    key = app.session_state["clone_key"]
    assert key == (BUILTIN, "auto", "float32", Growth(2, 2, "noisy_symmetric", 10.0, 4243))
    assert (key.source, key.growth.seed) == (BUILTIN, 4243)
    app.session_state["tab"] = "Heatmaps"
    app.run()
    assert not app.exception
    assert len(plans) + len(loose_plans) == 1  # sized, cloned and drawn from the one plan


def test_an_unusable_device_is_named_even_before_a_source_is_loaded(app, tmp_path):
    from hyperclone.io.sources import check_device

    unusable = []
    for device in ("cuda", "mps"):
        try:
            check_device(device)
        except HyperCloneError:
            unusable.append(device)
    if not unusable:
        pytest.skip("every device is usable here")
    app.sidebar.radio(key="source_kind").set_value("Local directory").run()
    app.sidebar.text_input(key="local_dir").set_value(str(tmp_path / "somewhere")).run()
    app.sidebar.selectbox(key="device").set_value(unusable[0]).run()
    app.sidebar.button(key="load").click().run()
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and unusable[0].upper() in errors[0].upper(), errors


def test_the_race_tab_runs_without_a_clone_and_the_others_ask_for_one(app):
    app.session_state["tab"] = "Training race"
    app.run()
    assert not app.exception and app.button(key="race_start")
    app.session_state["tab"] = "Export"
    app.run()
    assert any("Press **Clone**" in i.value for i in app.info)


def test_the_app_sections_are_numbered_in_page_order():
    modules = ("sources_panel", "inspect_tabs", "race_tab", "export_tab")  # the explorer page's parts, top to bottom
    text = "".join((ROOT / "hyperclone" / "dashboard" / f"{m}.py").read_text() for m in modules)
    numbers = [int(n) for n in re.findall(r"^# (\d+)\. ", text, flags=re.MULTILINE)]
    assert numbers == sorted(numbers) == list(range(1, len(numbers) + 1))
