"""Depth in the race: a clone grown in depth, a stacked model and random init of the deep shape as contestants."""

from __future__ import annotations

import pytest
from racekit import TINY, one_line_refusal

from hyperclone.training.config import ContestantSpec, RaceConfig
from hyperclone.training.contestants import starting_model
from hyperclone.training.loop import race
from hyperclone.core.verify import verify

DEEP = ("noisy_symmetric", "noisy_symmetric@depth=2", "noisy_symmetric@depth=2@stack", "random@depth=2")


@pytest.mark.parametrize("text, name, depth, stack", [
    ("noisy_symmetric@depth=2", "noisy_symmetric@depth=2", 2, False),
    ("symmetric@stack@depth=3", "symmetric@depth=3@stack", 3, True),
    ("random@depth=2@lr=3e-3", "random@lr=3e-3@depth=2", 2, False),
])
def test_depth_specs_parse_to_one_canonical_name_and_growth(text, name, depth, stack):
    spec = ContestantSpec.parse(text)
    assert spec.name == name and ContestantSpec.parse(name) == spec
    growth = RaceConfig(factor=2).growth_of(spec)
    assert (growth.depth, growth.stack, growth.factor) == (depth, stack, 2)


@pytest.mark.parametrize("text, message", [
    ("source@depth=2", "depth belongs to clones and random init"),
    ("staged@4@depth=2", "depth belongs to clones and random init"),
    ("symmetric@depth=1", "depth must be a whole number >= 2"),
    ("symmetric@stack", "stack needs it too"),
    ("random@depth=2@stack", "random init has no layers to stack"),
    ("symmetric@depth=two", "is not a number"),
])
def test_bad_depth_specs_are_one_line(text, message):
    one_line_refusal(message, ContestantSpec.parse, text)


@pytest.fixture(scope="module")
def deep_race(kit):
    model, tok, corpus = kit
    return race(model, tokenizer=tok, data=corpus, contestants=DEEP, **{**TINY, "steps": 2, "eval_every": 2})


def test_depth_contestants_start_as_the_same_function_and_a_stacked_one_does_not(kit):
    model = kit[0]
    cfg = RaceConfig(factor=2, contestants=DEEP)
    layers = model.config.n_layer
    deep = starting_model("noisy_symmetric@depth=2", model, cfg)
    stacked = starting_model("noisy_symmetric@depth=2@stack", model, cfg)
    shallow_random, deep_random = starting_model("random", model, cfg), starting_model("random@depth=2", model, cfg)
    assert deep.config.n_layer == stacked.config.n_layer == deep_random.config.n_layer == 2 * layers
    assert shallow_random.config.n_layer == layers and deep_random.config.n_embd == 2 * model.config.n_embd
    exact, stacked_report = verify(model, deep), verify(model, stacked)
    assert exact.passed and exact.top1_agreement == 1.0
    assert not stacked_report.function_preserving and stacked_report.max_rel_diff > stacked_report.tolerance


@pytest.mark.slow
def test_the_race_labels_each_deep_contestant(deep_race):
    fairness = deep_race.fairness
    assert "noisy_symmetric@depth=2@stack: 2x the layers, the layer stack repeated: NOT function-preserving" in fairness
    assert "noisy_symmetric@depth=2: 2x the layers, new blocks start as the identity (exact)" in fairness
    assert "random@depth=2: 2x the layers, random init" in fairness
    assert set(deep_race.contestants) == set(DEEP)


def test_the_dashboard_grows_depth_and_says_a_stacked_clone_is_not_expected_to_match(app):
    app.sidebar.select_slider(key="depth").set_value(2).run()
    app.button(key="clone").click().run()
    app.session_state["tab"] = "Equivalence"
    app.run()
    assert not app.exception, app.exception
    assert any("Equivalence PASSED" in s.value for s in app.success)  # twice the layers, the same logits
    app.sidebar.checkbox(key="stack").check().run()
    app.button(key="clone").click().run()
    assert not app.exception, app.exception
    assert any("stacks layers" in i.value and "not function-preserving" in i.value for i in app.info)
    assert not any("FAILED" in w.value for w in app.warning)
    assert app.session_state["clone_key"].growth.depth == 2 and app.session_state["clone_key"].growth.stack
