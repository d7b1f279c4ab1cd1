"""Issue 23, items 1 and 2: nothing a link or a widget asks for is built before it passed the controls' checks.

Item 1: every URL parameter each page reads (the Explorer: source, factor, ffn_factor, variant, snr_db, seed, depth,
stack, tab, run; the Lesson: the same growth settings and source, chapter, presenter, run; ``token`` belongs to the
teacher-token tests) is checked as its control checks it, and a bad one is one error line with nothing built.
Item 2: the race tab refuses batch x sequence over the limit and a contestant too large for the memory, and so does
``race()`` itself, before any contestant is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from families import fast_first
from pages import EXPLORER, LESSON, one_error, open_page, param
from streamlit.testing.v1 import AppTest

from hyperclone.core.errors import HyperCloneError

# One absurd or malformed value per URL parameter (a value the page's controls could never send).
GROWTH_LINKS = [("factor", "999"), ("factor", "two"), ("ffn_factor", "64"), ("variant", "x" * 300),
                ("snr_db", "nan"), ("seed", "-5"), ("depth", "1000"), ("stack", "yes"),
                ("source", "../../../etc/passwd")]
LESSON_LINKS = [*GROWTH_LINKS, ("factor", "24"), ("snr_db", "1e308"), ("chapter", "99"), ("presenter", "maybe"),
                ("run", "../../outside")]
EXPLORER_LINKS = [*GROWTH_LINKS, ("tab", "Everything"), ("run", "../outside")]


@pytest.fixture
def runs(runs, tmp_path) -> Path:
    """Races saved under tmp_path/runs (tests/conftest.py); beside it a run directory that no link may reach."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "run.json").write_text('{"config": {}}')
    return tmp_path / "runs"


@pytest.fixture
def plans(monkeypatch) -> list:
    """Every ``Growth`` a plan is made for (a plan comes first in every clone, size count and timed step). A plan
    beyond the controls' ranges trips at once, so that the code before the fix fails fast, not out of memory."""
    import importlib

    import hyperclone
    from hyperclone.dashboard import lesson_page as lesson

    clone_module = importlib.import_module("hyperclone.core.clone")  # hyperclone.core.clone is the function
    real, made = clone_module.make_plan, []

    def recording(config, growth=None):
        made.append(growth)
        if growth is not None and max(growth.factor, growth.ffn_factor, growth.depth) > 8:
            raise RuntimeError(f"tripwire: a plan of {growth} was made from a link")
        return real(config, growth)

    monkeypatch.setattr(clone_module, "make_plan", recording)
    monkeypatch.setattr(hyperclone, "make_plan", recording)
    lesson.lesson_clone.clear()
    lesson.lesson_report.clear()
    return made


def refused_once(at: AppTest, key: str) -> str:
    """The one error line on the page, which names the refused link parameter."""
    line = one_error(at)
    assert f"{key}=" in line and len(line) < 400, line  # the value is cut short, never echoed whole
    return line


@pytest.mark.parametrize("key, value", fast_first(LESSON_LINKS, 4), ids=[f"{k}={v[:12]}" for k, v in LESSON_LINKS])
def test_a_bad_lesson_link_is_one_line_and_nothing_is_built(runs, plans, key, value):
    params = {"chapter": "1", key: value}  # chapter 1 clones as soon as it opens
    at = open_page(LESSON, **params)
    assert "nothing was built" in refused_once(at, key)
    assert plans == []  # no clone, no size count, no timed step
    assert at.subheader and at.button(key="lesson_next")  # the lesson still opens
    assert param(at, key) != value  # the link now holds the lesson's own settings


@pytest.mark.parametrize("key, value", fast_first(EXPLORER_LINKS, 4),
                         ids=[f"{k}={v[:12]}" for k, v in EXPLORER_LINKS])
def test_a_bad_explorer_link_is_one_line_and_the_sidebar_keeps_its_own_settings(runs, plans, key, value):
    at = open_page(EXPLORER, **{key: value})
    refused_once(at, key)
    assert all(g.factor == 2 and g.depth == 1 and g.seed == 0 for g in plans)  # only the sidebar's own growth
    assert at.sidebar.slider(key="factor").value == 2 and at.session_state["tab"] == "Compare"
    assert "race_view" not in at.session_state


def test_a_good_lesson_link_still_opens_its_view(runs, plans):
    at = open_page(LESSON, chapter="2", factor="3", variant="diagonal", presenter="0")
    assert not at.error and at.slider(key="lesson_factor").value == 3
    assert plans and all(g.factor == 3 for g in plans)


@pytest.fixture
def race_tab(runs, monkeypatch) -> AppTest:
    """The Explorer's race tab; timing a step larger than a race may take trips at once."""
    import hyperclone.teach.lesson

    real = hyperclone.teach.lesson.time_steps

    def guarded(source, growth, batch_size, seq_len, *args, **kwargs):
        if batch_size * seq_len > 2**15:
            raise RuntimeError(f"tripwire: a step of {batch_size} x {seq_len} tokens was timed")
        return real(source, growth, batch_size, seq_len, *args, **kwargs)

    monkeypatch.setattr(hyperclone.teach.lesson, "time_steps", guarded)
    return open_page(EXPLORER, tab="Training race")


def test_race_tab_refuses_a_batch_times_sequence_over_the_limit_and_times_nothing(race_tab):
    race_tab.selectbox(key="race_seq").set_value(256).run()
    race_tab.number_input(key="race_batch").set_value(512).run()
    assert not race_tab.exception, race_tab.exception
    lines = [e.value for e in race_tab.error]
    assert len(lines) == 1 and "tokens per step" in lines[0], lines
    assert race_tab.button(key="race_start").disabled
    assert not any("No time estimate" in c.value or "Estimated time" in c.value for c in race_tab.caption)
    race_tab.number_input(key="race_batch").set_value(8).run()  # back within the limit: estimated, startable
    assert not race_tab.error and any("Estimated time" in c.value for c in race_tab.caption)
    assert not race_tab.button(key="race_start").disabled


def test_race_tab_refuses_an_absurd_contestant_depth_before_building_it(race_tab):
    race_tab.text_input(key="race_more").set_value("random@depth=100000").run()
    assert not race_tab.exception, race_tab.exception
    lines = [e.value for e in race_tab.error]
    assert len(lines) == 1 and "depth" in lines[0] and "\n" not in lines[0], lines
    assert race_tab.button(key="race_start").disabled


def test_race_tab_refuses_contestants_that_do_not_fit_in_free_memory(race_tab, monkeypatch):
    import hyperclone.core.resources

    monkeypatch.setattr(hyperclone.core.resources, "free_bytes", lambda device: 2**20)
    race_tab.number_input(key="race_steps").set_value(20).run()
    assert not race_tab.exception, race_tab.exception
    lines = [e.value for e in race_tab.error if "race" in e.value]
    assert len(lines) == 1 and "needs" in lines[0] and "1.0 MiB is free" in lines[0], lines
    assert race_tab.button(key="race_start").disabled


@pytest.fixture
def nothing_built(monkeypatch):
    """Building any contestant trips at once."""
    import hyperclone.training.contestants

    def tripwire(*args, **kwargs):
        raise RuntimeError("tripwire: a contestant was built")

    monkeypatch.setattr(hyperclone.training.contestants, "starting_model", tripwire)


def test_race_refuses_an_absurd_depth_before_building_any_contestant(kit, nothing_built):
    from racekit import TINY, one_line_refusal

    from hyperclone.training.loop import race

    model, tok, corpus = kit
    one_line_refusal("depth", race, model, tokenizer=tok, data=corpus,
                     contestants=("noisy_symmetric", "random@depth=100000"), **TINY)


def test_race_refuses_contestants_that_do_not_fit_in_free_memory_before_building_them(kit, nothing_built,
                                                                                       monkeypatch):
    from racekit import TINY, one_line_refusal

    import hyperclone.core.resources
    from hyperclone.training.loop import race

    monkeypatch.setattr(hyperclone.core.resources, "free_bytes", lambda device: 2**20)
    model, tok, corpus = kit
    message = one_line_refusal("needs .* but only 1.0 MiB is free", race, model, tokenizer=tok, data=corpus,
                               contestants=("noisy_symmetric", "random@depth=4"), **TINY)
    assert "random@depth=4" in message and "fewer or smaller contestants" in message


@pytest.mark.parametrize("batch, seq", [(1024, 256), (512, 128)])
def test_the_estimate_refuses_more_tokens_a_step_than_the_dashboard_races(kit, batch, seq):
    """The dashboard's cap on batch x sequence (a class shares one server); the CLI and the API are bounded by
    the race's memory check instead, so a GPU user may train larger batches."""
    from hyperclone import Growth
    from hyperclone.teach.lesson import step_seconds

    model, _, _ = kit
    with pytest.raises(HyperCloneError, match="tokens per step"):
        step_seconds(model, Growth(2), batch, seq)


def test_the_estimate_times_a_small_step_and_scales_it(kit, monkeypatch):
    import torch

    from hyperclone import Growth
    from hyperclone.teach.lesson import TIMED_TOKENS, step_seconds

    shapes = []
    real = torch.randint
    monkeypatch.setattr(torch, "randint", lambda *a, **k: shapes.append(a[2]) or real(*a, **k))
    assert step_seconds(kit[0], Growth(2), 64, 64) > 0
    assert shapes == [(TIMED_TOKENS // 64, 64)]
