"""The guided lesson and the shareable view, driven headless with Streamlit's AppTest."""

from __future__ import annotations

import pytest
import torch
from pages import LESSON, open_page, param
from streamlit.testing.v1 import AppTest

from hyperclone import Growth, load_source
from hyperclone.teach.classroom import CLASSROOM_ENV, TOKEN_ENV
from hyperclone.teach.lesson import QUICK, copies_agree, format_duration, hidden_vectors, race_seconds, step_seconds
from hyperclone.core.verify import rounding_tolerance


def lesson_at(**params: str) -> AppTest:
    at = open_page(LESSON, **params)
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.mark.parametrize("chapter, title", [(1, "A vector becomes [x, x]"), (2, "A layer becomes a grid of blocks"),
                                            (3, "The whole model, the same logits"), (4, "The race"),
                                            (5, "Why the copies must drift apart")])
def test_every_chapter_shows_its_idea_and_a_figure_or_what_to_do(runs, chapter, title):
    at = lesson_at(chapter=str(chapter))
    assert at.subheader[0].value.endswith(title)
    if chapter == 4:  # the shipped recorded races first, labelled so; the live one is offered, with its estimate
        picker = at.selectbox(key="lesson_run")
        assert picker.value.startswith("recorded/") and all(o.startswith("recorded · ") for o in picker.options)
        assert at.get("plotly_chart") and at.button(key="lesson_race_start")
        assert any("about" in c.value and "here now (timed just now" in c.value for c in at.caption)
    else:  # chapter 5: the symmetry curve of the recorded race
        assert at.get("plotly_chart")
    if chapter == 3:
        assert any("The logits match" in m.value for m in at.markdown)


def test_without_recorded_races_chapter_4_offers_the_live_race_and_chapter_5_waits_for_one(runs, tmp_path,
                                                                                           monkeypatch):
    import hyperclone.training.recorded

    monkeypatch.setattr(hyperclone.training.recorded, "RUNS_DIR", tmp_path / "none")
    at = lesson_at(chapter="4")
    assert "No recorded race" in at.info[0].value and at.button(key="lesson_race_start")
    assert "quick race" in lesson_at(chapter="5").info[0].value  # the symmetry curve needs a race first


def test_next_and_back_move_through_the_chapters_and_the_url_follows(runs):
    at = lesson_at(chapter="1", factor="3", variant="diagonal")
    at.button(key="lesson_next").click().run()
    assert param(at, "chapter") == "2" and at.subheader[0].value.startswith("2 ·")
    assert at.slider(key="lesson_factor").value == 3 and at.radio(key="lesson_variant").value == "diagonal"
    at.button(key="lesson_back").click().run()
    assert param(at, "chapter") == "1"
    assert param(at, "factor") == "3" and param(at, "variant") == "diagonal"


def test_a_bad_link_is_one_warning_and_the_lesson_still_opens(runs):
    at = open_page(LESSON, factor="two", chapter="9")
    assert "not a number" in at.error[0].value  # one line; nothing from the link is built
    assert at.subheader[0].value.startswith("5 ·")  # an out-of-range chapter is clamped


def test_the_clone_vector_is_the_source_vector_repeated():
    source, tokenizer = load_source("tiny-gpt2-stdlib", device="cpu")
    from hyperclone import clone

    ids = tokenizer("def f(x):\n    return x", return_tensors="pt")["input_ids"]
    for factor in (2, 3):
        x, x_wide = hidden_vectors(source, clone(source, growth=Growth(factor)), ids)
        assert x_wide.numel() == factor * x.numel()
        d = source.config.n_embd  # one layer: a few reductions of width d and 4d, float32
        assert copies_agree(x, x_wide, factor) <= rounding_tolerance(torch.float32, 4 * d * factor,
                                                                     float(x.abs().max()))


@pytest.mark.slow
def test_the_race_estimate_comes_from_a_timed_step_and_reads_like_a_person_says_it():
    source, _ = load_source("tiny-gpt2-stdlib", device="cpu")
    step = step_seconds(source, Growth(2), QUICK.batch_size, QUICK.seq_len)
    assert step > 0
    assert race_seconds(step, 3, 60, 6) == pytest.approx(step * 3 * (60 + 2 * 11))
    assert [format_duration(s) for s in (3, 47, 200, 7200)] == ["5 s", "45 s", "3 min", "2.0 h"]


def test_the_explorer_opens_the_view_a_link_describes(runs):
    at = open_page(source="tiny-llama-stdlib", factor="3", variant="diagonal", seed="7", tab="Heatmaps")
    assert at.sidebar.selectbox(key="builtin").value == "tiny-llama-stdlib"
    assert at.sidebar.slider(key="factor").value == 3 and at.sidebar.radio(key="variant").value == "diagonal"
    assert at.sidebar.number_input(key="seed").value == 7 and at.session_state["tab"] == "Heatmaps"
    assert param(at, "factor") == "3" and param(at, "source") == "tiny-llama-stdlib" and param(at, "tab") == "Heatmaps"


def test_in_classroom_mode_a_race_needs_the_teacher_token(runs, monkeypatch):
    monkeypatch.setenv(CLASSROOM_ENV, "1")
    monkeypatch.setenv(TOKEN_ENV, "teacher-secret")
    at = open_page(tab="Training race")
    start = at.button(key="race_start")
    assert start.disabled  # only the teacher starts races (tests/test_classroom_guards.py)
    start.proto.disabled = False  # a hostile page sends the click anyway: discarded, or refused by start_race
    start.click().run()
    assert not at.exception, at.exception
    assert all("needs the teacher token" in e.value for e in at.error), [e.value for e in at.error]
    assert not runs.exists() or not any(runs.iterdir())  # nothing was started
    at.button(key="clone").click().run()  # a built-in model clones without the token
    at.session_state["tab"] = "Export"
    at.run()
    assert at.text_input(key="export_name").value  # a name, saved in the page's own folder (test_classroom_guards)


def test_a_link_to_a_complete_view_opens_with_its_clone_made(runs):
    """A shared link (a built-in source and growth settings) shows the clone at once, not an empty page."""
    at = open_page(source="tiny-gpt2-stdlib", factor="3", variant="diagonal", tab="Compare")
    key = at.session_state["clone_key"]
    assert key.source == "tiny-gpt2-stdlib" and key.growth.factor == 3 and key.growth.variant == "diagonal"
    assert not at.error and any("equivalence PASSED" in s.label for s in at.status)


def test_a_link_with_one_bad_part_uses_the_rest_and_says_once_what_was_ignored(runs):
    at = open_page(source="tiny-gpt2-stdlib", factor="3", tab="Everything")
    (line,) = [e.value for e in at.error]
    assert "tab=" in line and "the rest of the link was used" in line and "factor" not in line
    assert at.sidebar.slider(key="factor").value == 3 and at.session_state["clone_key"].growth.factor == 3
    at.run()  # said once: a rerun of the page does not repeat it
    assert not at.error


def test_chapter_4_says_what_the_race_shows_in_a_sentence_from_its_numbers(runs):
    from hyperclone import load_run
    from hyperclone.training.recorded import recorded_races
    from hyperclone.training.report import result_sentence

    at = open_page(LESSON, chapter="4")
    shown = [m.value for m in at.markdown if m.value.startswith("What this race shows:")]
    assert len(shown) == 1, shown
    first = load_run(recorded_races()[0].path)  # the race chapter 4 opens with
    best = min((r for r in first.readouts() if not r.contestant.startswith("source")), key=lambda r: r.loss)
    assert shown[0] == result_sentence(first) and f"{best.loss:.3f}" in shown[0] and best.contestant in shown[0]
