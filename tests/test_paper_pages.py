"""The paper's experiment at micro scale on the dashboard's pages: the explorer's recorded races and the lesson's
chapter 4 show the shipped ``hyperclone reproduce`` report first (a damaged one is one line and the rest still
shows), and both pages offer the paper (micro) preset, the lesson's with its time estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pages import EXPLORER, LESSON, open_page

from hyperclone.teach.lesson import PAPER_MICRO
from hyperclone.training.paper_report import shipped_reports

SHIPPED = sorted(shipped_reports())  # the paper reports that ship with HyperClone (none until one is recorded)

SUMMARY = "With the paper's recipe, speed-up (b) of the 2x clone is 1.80x ± 0.10 at 20 (a made-up test summary)."
WIDE = 1000  # the test report's wide parameters


def entry(value: float | None, bound: list | None = None) -> dict:
    """A speed-up as the report stores it: measured (``value``) or a bound."""
    return {"value": value, "measured": value is not None, "bound": bound, "with_source": None,
            "with_source_bound": None, "target_loss": 5.0, "tokens_clone": 10.0, "tokens_random": 20.0, "message": ""}


def comparison(b: dict) -> dict:
    return {"clone_final": 4.9, "random_final": 5.0, "clone_start": 6.0, "b": b, "a": entry(1.5),
            "dip": {"depth": 0.1, "peak_at": 0.5, "back_at": 1.0}}


def horizon(h: float, b: dict) -> dict:
    curve = [[int(h * WIDE * i / 4), round(start - 0.3 * i, 3)] for start in (6.0,) for i in range(5)]
    return {"horizon": h, "tokens": h * WIDE, "steps": 10,
            "curves": {"random": [[t, v + 2] for t, v in curve], "clone": curve},
            "random": {"lr": 3e-3, "final": 5.0, "checked": {"0.003": 5.0}},
            "recipes": [{"recipe": recipe, "lr": 3e-3, **comparison(b)} for recipe in ("paper", "best")]}


def made_report() -> dict:
    """A small report of ``hyperclone reproduce``'s shape: (b) measured at 5 and 20, only a bound at 50."""
    seeds = [{"seed": s, **comparison(entry(b))} for s, b in ((0, 1.7), (1, 1.8), (2, 1.9))]
    return {
        "config": {"source": "micro-gpt2-stdlib", "factor": 2}, "summary": SUMMARY, "wide_params": WIDE,
        "command": "hyperclone reproduce --out test-report", "started": "2026-12-01T08:00:00+0000",
        "finished": "2026-12-01T09:30:00+0000", "seconds": 5400.0,
        "machine": {"platform": "Linux-test", "processor": "x86_64", "cpu_count": 2, "torch": "2.x"},
        "horizons": [horizon(5, entry(2.5)), horizon(20, entry(1.8)), horizon(50, entry(None, [">", 1.2]))],
        "sweep": {"horizon": 20, "grids": {"random": [3e-3]}, "finals": {"random": {"0.003": 5.0}},
                  "winners": {"random": 3e-3, "random_neighbour": 1e-3, "clone": 3e-3}},
        "seeds": {"horizon": 20, "rows": seeds, "all_measured": True, "b_mean": 1.8, "b_sd": 0.1,
                  "b_range": [1.7, 1.9]},
        "variants": [{"variant": "noisy_symmetric", **comparison(entry(1.8))}],
        "claim": {"threshold": 2.0, "at_sweep": {"horizon": 20, "b": 1.8, "met": False},
                  "at_longest": {"horizon": 50, "b": None, "bound": [">", 1.2], "met": False},
                  "measured_at": [5, 20]},
    }


def shipped(tmp_path: Path, monkeypatch, text: str | None = None) -> Path:
    """A shipped report (``text``, else ``made_report()``) that both pages find, in tmp_path."""
    from hyperclone.dashboard import lesson_page, race_tab

    folder = tmp_path / "shipped" / "paper-micro-gpt2"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(made_report()) if text is None else text)
    for page in (race_tab, lesson_page):  # the pages are cached modules: patch the names they call
        monkeypatch.setattr(page, "shipped_reports", lambda: {folder.name: folder})
    return folder


def recorded_view():
    """The explorer's race tab in "Recorded races" mode (nothing live is timed)."""
    at = open_page(EXPLORER)
    at.session_state["tab"] = "Training race"
    at.session_state["race_mode"] = "Recorded races"
    at.run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    return at


def chart_keys(at) -> list[str]:
    return [c.proto.id for c in at.get("plotly_chart")]


def test_recorded_races_show_the_paper_report_first_then_the_head_start_races(runs, tmp_path, monkeypatch):
    shipped(tmp_path, monkeypatch)
    at = recorded_view()
    label = next(w.value for w in at.warning if "Recorded, not live" in w.value and "reproduce" in w.value)
    assert "hyperclone reproduce --out test-report" in label and "2026-12-01 09:30" in label and "2 CPU cores" in label
    assert "\n" not in label.strip()
    assert any(m.value == SUMMARY for m in at.markdown)
    keys = chart_keys(at)
    assert keys[0].endswith("-paper_figure")  # the paper first, then a head-start race
    assert any(k.endswith("-recorded_loss") for k in keys[1:])
    assert any("head-start story" in m.value for m in at.markdown)
    assert at.selectbox(key="race_recorded").options  # the recorded races still listed
    assert any("## Seeds at 20" in m.value for m in at.markdown)  # the tables, in an expander


def test_a_damaged_paper_report_is_one_warning_line_and_the_recorded_races_still_show(runs, tmp_path, monkeypatch):
    shipped(tmp_path, monkeypatch, text="{not json")
    at = recorded_view()
    lines = [w.value for w in at.warning if "paper" in w.value]
    assert len(lines) == 1 and "not a readable report" in lines[0] and "\n" not in lines[0].strip(), lines
    assert not any(k.endswith("-paper_figure") for k in chart_keys(at))
    assert at.selectbox(key="race_recorded").options
    assert any(k.endswith("-recorded_loss") for k in chart_keys(at))


def test_lesson_chapter_4_tells_the_paper_in_words_and_offers_its_preset_with_an_estimate(runs, tmp_path,
                                                                                         monkeypatch):
    from hyperclone.dashboard import lesson_page

    shipped(tmp_path, monkeypatch)
    lesson_page.paper_estimate_text.clear()  # timed here, now
    at = open_page(LESSON, chapter="4")
    assert not at.error, [e.value for e in at.error]
    (words,) = [m.value for m in at.markdown if m.value.startswith("**The paper at micro scale**")]
    for part in ("5 (2.50x), 20 (1.80x)", "at 50 (> 1.20x (a bound)) it is only a bound", "1.80x ± 0.1",
                 "3 seeds", "missed at 20 and missed at 50", "tokens the clone needs"):
        assert part in words, (part, words)
    assert chart_keys(at)[0].endswith("-lesson_paper")  # the paper's figure before the recorded races
    assert any("head-start story" in m.value for m in at.markdown)
    assert not at.button(key="lesson_paper_start").disabled
    estimate = [c.value for c in at.caption if c.value.startswith("The paper's protocol live on `micro-gpt2-stdlib`")]
    assert len(estimate) == 1 and "here now (timed just now" in estimate[0], estimate


def test_the_lesson_paper_button_queues_the_paper_race_on_the_micro_source(runs, tmp_path, monkeypatch):
    from hyperclone.dashboard import lesson_page
    from hyperclone.teach.classroom import shared_queue

    started = []
    monkeypatch.setattr(lesson_page, "race", lambda source, config, **kw: started.append((source, config, kw)))
    monkeypatch.setattr(lesson_page, "paper_estimate", lambda: "about 13 min here now (a test)")
    lesson_page.paper_estimate_text.clear()
    at = open_page(LESSON, chapter="4")
    at.button(key="lesson_paper_start").click().run()
    assert not at.exception and shared_queue().wait_idle(60)
    ((source, config, kw),) = started
    assert source == PAPER_MICRO.source and config is PAPER_MICRO and kw["device"] == "cpu"
    assert "lesson-paper-micro-gpt2-stdlib" in str(kw["run_dir"])
    assert at.session_state["lesson_estimate"] == "about 13 min here now (a test)"


def test_in_a_class_only_the_teacher_starts_the_paper_race(tmp_path, monkeypatch):
    from hyperclone.dashboard import lesson_page
    from hyperclone.teach.classroom import CLASSROOM_ENV, TOKEN_ENV

    monkeypatch.setenv(CLASSROOM_ENV, "1")
    monkeypatch.setenv(TOKEN_ENV, "teacher-secret")
    monkeypatch.setenv("HYPERCLONE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(lesson_page, "paper_estimate", lambda: "about 13 min here now (a test)")
    lesson_page.paper_estimate_text.clear()
    student = open_page(LESSON, chapter="4")
    assert student.button(key="lesson_paper_start").disabled
    assert any("Only the teacher starts races" in c.value for c in student.caption)
    assert any("about 13 min here now (a test)" in c.value for c in student.caption)  # the estimate still shows
    teacher = open_page(LESSON, chapter="4", token="teacher-secret")
    assert not teacher.button(key="lesson_paper_start").disabled


def test_the_explorer_paper_preset_fills_the_race_widgets_and_names_its_source(runs, monkeypatch):
    from hyperclone.dashboard import race_tab

    monkeypatch.setattr(race_tab, "step_seconds_of", lambda key, batch, seq: [0.01, 0.01, 0.01])  # nothing timed
    at = open_page(EXPLORER)
    at.session_state["tab"] = "Training race"
    at.run()
    at.button(key="race_paper").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    for key, value in (("race_steps", PAPER_MICRO.steps), ("race_batch", PAPER_MICRO.batch_size),
                       ("race_eval", PAPER_MICRO.eval_every), ("race_lr", PAPER_MICRO.lr)):
        assert at.number_input(key=key).value == value, key
    assert at.selectbox(key="race_seq").value == PAPER_MICRO.seq_len
    assert at.multiselect(key="race_contestants").value == ["noisy_symmetric", "random"]
    assert at.selectbox(key="race_recipe").value == "paper"
    assert any(c.value.startswith("Paper (micro) preset") and "micro-gpt2-stdlib" in c.value for c in at.caption)
    assert any(f"warm-up {PAPER_MICRO.warmup} steps" in c.value and "builtin-large" in c.value for c in at.caption)
    (other,) = [w.value for w in at.warning if "meant for `micro-gpt2-stdlib`" in w.value]
    assert "tiny-gpt2-stdlib" in other and "\n" not in other.strip()

    at.number_input(key="race_steps").set_value(100).run()  # a changed widget leaves the preset
    assert not any(c.value.startswith("Paper (micro) preset") for c in at.caption)
    assert not any("meant for `micro-gpt2-stdlib`" in w.value for w in at.warning)
    assert any(f"warm-up {race_tab.race_warmup(100)} steps" in c.value for c in at.caption)


@pytest.mark.parametrize("name", SHIPPED or [pytest.param("none", marks=pytest.mark.skip(reason="none ships yet"))])
def test_a_shipped_paper_report_reads_draws_and_tells(name):
    from hyperclone.dashboard.lesson_page import paper_words
    from hyperclone.training.paper_report import load_report
    from hyperclone.views.paper_figure import paper_figure, report_text

    report = load_report(shipped_reports()[name])
    assert paper_figure(report).data and report_text(report)
    assert paper_words(report).startswith("**The paper at micro scale**")
