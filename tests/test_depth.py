"""Depth growth (issue 14 item 2): new blocks that start as the identity, combined with width; stacking.

A depth-grown clone inserts ``depth - 1`` blocks after every ``depth_every``-th source layer; each is a copy
of the grown layer it follows with its residual writers zeroed, so logits and the mapped hidden states are
those of the width-only clone. Stacking repeats the layer stack and is reported as not function-preserving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from families import CASES, fast_first, stored, tiny_model

from hyperclone import Growth, clone
from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.io.export import PROVENANCE_FILE, provenance
from hyperclone.io.stream import stream_clone
from hyperclone.core.verify import TOLERANCE, verify

ROOT = Path(__file__).resolve().parents[1]
BY_ID = {c[0]: c for c in CASES}
FAMILIES = ["llama-gqa", "gpt2", "qwen3"]
VARIANTS = ["symmetric", "noisy_symmetric"]


def _model(case_id: str, layers: int | None = None, **extra):
    _, model_type, kwargs, _ = BY_ID[case_id]
    if layers is not None:
        extra["n_layer" if model_type == "gpt2" else "num_hidden_layers"] = layers
    return tiny_model(model_type, dict(kwargs, **extra))


@pytest.mark.parametrize("variant", fast_first(VARIANTS))  # noisy_symmetric: slow
@pytest.mark.parametrize("case_id", FAMILIES)
def test_depth_x2_with_width_x2_keeps_the_logits_and_maps_every_layer(case_id, variant):
    model = _model(case_id)
    n = int(model.config.num_hidden_layers)
    wide = clone(model, factor=2, depth=2, variant=variant)
    assert int(wide.config.num_hidden_layers) == 2 * n
    report = verify(model, wide)
    assert report.max_rel_diff <= TOLERANCE[torch.float32], report.summary()
    assert report.top1_agreement == 1.0
    assert len(report.layers) == n + 1 and all(c.passed for c in report.layers), report.summary()
    assert report.passed and report.function_preserving


@pytest.mark.parametrize("variant", fast_first(VARIANTS))  # noisy_symmetric: slow
@pytest.mark.parametrize("case_id", FAMILIES)
def test_new_blocks_write_nothing_and_copy_the_grown_layer_they_follow(case_id, variant):
    model = _model(case_id)
    wide = clone(model, factor=2, depth=2, variant=variant)
    width_only = clone(model, factor=2, variant=variant).state_dict()
    plan, state = wide.hyperclone_plan, wide.state_dict()
    spec, groups = plan.spec, plan.growth.layer_groups(plan.n_layers)
    zeroed = copied = 0
    for name, t in state.items():
        layer = spec.layer_of(name)
        if layer is None:
            continue
        source, new = plan.layer_sources[layer]
        own = spec.with_layer(name, groups[source][0])
        if not new:  # the source layer's own copy: exactly the width-only clone's layer
            assert torch.equal(t, width_only[spec.with_layer(name, source)]), name
        elif spec.writes_residual(name):
            assert not t.any(), f"{name} should be zero in a new block"
            zeroed += 1
        else:
            assert torch.equal(t, state[own]), f"{name} should equal {own}"
            copied += 1
    assert zeroed >= 2 * plan.n_layers and copied >= 2 * plan.n_layers  # both writers and some norms/projections


@pytest.mark.parametrize(("depth", "every", "expected"), [(2, 2, 6), (3, 2, 8), (2, 3, 5), (2, 1, 8)])
def test_depth_every_inserts_blocks_after_every_kth_layer(depth, every, expected):
    model = _model("llama-gqa", layers=4)
    wide = clone(model, factor=2, depth=depth, depth_every=every, variant="noisy_symmetric")
    assert int(wide.config.num_hidden_layers) == expected == 4 + (depth - 1) * (4 // every)
    report = verify(model, wide)
    assert report.passed and len(report.layers) == 5, report.summary()


def test_per_layer_lists_grow_with_the_layers():
    model = _model("qwen3", layers=2, layer_types=["sliding_attention", "full_attention"], sliding_window=8,
                   use_sliding_window=True)
    wide = clone(model, factor=2, depth=2)
    assert wide.config.layer_types == ["sliding_attention"] * 2 + ["full_attention"] * 2
    report = verify(model, wide, input_ids=torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1)))
    assert report.passed, report.summary()


def test_a_corrupted_layer_of_a_deep_clone_is_found_and_named_by_its_source_number():
    model = _model("llama-gqa")
    wide = clone(model, factor=2, depth=2)
    with torch.no_grad():
        wide.model.layers[2].mlp.up_proj.weight.add_(0.5)  # wide layer 2 is source layer 1's own copy
    report = verify(model, wide)
    assert not report.passed and report.culprit == "layer 1: mlp differs", report.culprit


@pytest.mark.parametrize("case_id", ["gpt2", "qwen3"])
def test_streaming_with_depth_equals_in_memory_bit_for_bit(tmp_path, case_id):
    model = _model(case_id)
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="20KB")
    growth = Growth(2, 3, "noisy_symmetric", seed=5, depth=2)
    result = stream_clone(src, tmp_path / "out", growth, verify="full")
    assert result.passed and result.report.passed, result.report.summary()
    clone(model, growth=growth).save_pretrained(tmp_path / "mem")
    streamed, saved = stored(tmp_path / "out"), stored(tmp_path / "mem")
    assert streamed.keys() == saved.keys()
    assert all(torch.equal(streamed[k], saved[k]) for k in saved)
    record = json.loads((tmp_path / "out" / PROVENANCE_FILE).read_text())
    assert record["depth"] == 2 and record["function_preserving"] is True


def test_sampled_verification_of_a_deep_clone_checks_the_mapped_layers(tmp_path):
    model = _model("llama-gqa", layers=5)
    src = tmp_path / "src"
    model.save_pretrained(src)
    result = stream_clone(src, tmp_path / "out", Growth(2, depth=2, depth_every=2), verify="sample")
    assert result.verification["method"] == "sampled layers" and result.report.passed, result.report.summary()
    assert result.verification["layers"] == [0, 2, 4] and result.verification["wide_layers"] == [0, 3, 6]


def test_stacking_doubles_the_layers_and_is_labelled_not_function_preserving(tmp_path):
    model = _model("llama-gqa")
    wide = clone(model, factor=2, depth=2, stack=True)
    n = int(model.config.num_hidden_layers)
    assert int(wide.config.num_hidden_layers) == 2 * n
    state = wide.state_dict()
    for name, t in state.items():
        layer = wide.hyperclone_plan.spec.layer_of(name)
        if layer is not None and layer >= n:
            assert torch.equal(t, state[wide.hyperclone_plan.spec.with_layer(name, layer - n)]), name
    report = verify(model, wide)
    assert not report.function_preserving and not report.passed and report.as_expected
    assert report.culprit is None and "not function-preserving by design" in report.summary()
    assert "FAILED" not in report.summary()
    record = provenance(wide.hyperclone_plan, "tiny")
    assert record["stack"] is True and record["function_preserving"] is False
    assert "NOT function-preserving" in record["layers"]


def test_the_cli_grows_depth_and_verify_reads_the_layer_map_from_the_record(tmp_path, capsys):
    src = tmp_path / "src"
    _model("llama-gqa").save_pretrained(src)
    assert main(["clone", str(src), str(tmp_path / "deep"), "--depth", "2", "--variant", "noisy_symmetric"]) == 0
    config = json.loads((tmp_path / "deep" / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["hidden_size"] == 64
    assert "identity block(s) after every layer (function-preserving)" in capsys.readouterr().out
    assert main(["verify", str(src), str(tmp_path / "deep")]) == 0
    assert "equivalence PASSED" in capsys.readouterr().out


def test_the_cli_labels_a_stacked_clone_and_does_not_call_it_failed(tmp_path, capsys):
    src = tmp_path / "src"
    _model("gpt2").save_pretrained(src)
    assert main(["clone", str(src), str(tmp_path / "stacked"), "--depth", "2", "--stack", "--in-memory"]) == 0
    out = capsys.readouterr().out
    assert "NOT function-preserving by design" in out and "FAILED" not in out
    record = json.loads((tmp_path / "stacked" / PROVENANCE_FILE).read_text())
    assert record["function_preserving"] is False and record["equivalence"]["function_preserving"] is False
    card = (tmp_path / "stacked" / "README.md").read_text()
    assert "NOT function-preserving by design" in card and "FAILED" not in card
    assert main(["verify", str(src), str(tmp_path / "stacked")]) == 0
    assert "not function-preserving by design" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "words"), [
    (["--depth", "0"], "depth must be an integer >= 1, got 0"),
    (["--depth-every", "2"], "depth_every needs depth >= 2"),
    (["--stack"], "stack needs depth >= 2"),
])
def test_bad_depth_flags_are_one_line_exit_2_before_torch_is_imported(tmp_path, argv, words):
    code = ("import sys; from hyperclone.cli.main import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code, "clone", "tiny-llama", str(tmp_path / "out"), *argv],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.stdout.split() == ["2", "False"], (run.stdout, run.stderr)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("kw", "words"), [
    (dict(depth=1.5), "depth must be an integer"),
    (dict(depth=2, depth_every=0), "depth_every must be an integer >= 1"),
    (dict(depth=2, stack=True, depth_every=2), "takes no depth_every"),
    (dict(depth=2, stack="yes"), "stack must be True or False"),
])
def test_growth_refuses_bad_depth_settings_in_one_line(kw, words):
    with pytest.raises(HyperCloneError, match=words):
        Growth(**kw)


def test_depth_every_beyond_the_layers_is_refused():
    with pytest.raises(HyperCloneError, match="more than the source's 2 layers"):
        clone(_model("llama-gqa"), depth=2, depth_every=3)


PRE_LN = [c[0] for c in CASES if c[2].get("do_layer_norm_before", True)]


@pytest.mark.parametrize("case_id", PRE_LN)
def test_every_pre_ln_family_grows_in_depth_exactly(case_id):
    """A spec that forgot a residual writer would leave a new block that is not the identity: caught here."""
    model = _model(case_id)
    report = verify(model, clone(model, factor=2, depth=2, variant="noisy_symmetric"))
    assert report.passed and report.top1_agreement == 1.0, report.summary()


def test_a_post_ln_model_is_refused_depth_growth_but_may_be_stacked():
    model = _model("opt-proj-postln")
    with pytest.raises(HyperCloneError, match="needs a pre-LayerNorm model"):
        clone(model, depth=2)
    assert int(clone(model, depth=2, stack=True).config.num_hidden_layers) == 4
