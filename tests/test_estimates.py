"""Time estimates that hold on a busy machine: timed as a race starts (a few small steps, their median, at the load of
now), said as a range, and, while a race trains, the time left from the pace measured so far.

A slowed-down step (a monkeypatched sleep) must show in the estimate and in the time left: every bound below is a
sleep that really happened, so the checks hold however busy the machine is; timeouts are hang guards only.
"""

from __future__ import annotations

import time

import pytest

from hyperclone.teach import lesson
from hyperclone.teach.lesson import (MIN_TIMED_STEPS, QUICK, estimate_from, estimate_race, race_remaining,
                                     race_seconds, remaining_seconds, time_steps)
from hyperclone.training import loop
from pages import EXPLORER, LESSON, open_page
from racekit import PAIR, TINY

SLOW_S = 0.2  # added to every slowed-down step
HANG_GUARD_S = 300


def record(name: str, step: int, seconds: float, at: float) -> dict:
    return {"event": "metrics", "contestant": name, "step": step, "seconds": seconds, "time": at}


def test_the_time_left_is_the_pace_so_far_times_the_steps_to_go():
    records = [record("a", 0, 1.0, 100.0), record("b", 0, 2.0, 101.0), record("a", 6, 4.0, 104.0)]
    assert remaining_seconds(records[:2], 60) is None  # no step trained yet: no pace
    # a: (4 - 1) s over 6 steps since its step-0 evaluation = 0.5 s a step, 54 to go; b: no step yet, a's pace, 60
    assert remaining_seconds(records, 60) == pytest.approx(0.5 * 54 + 0.5 * 60)
    # a contestant with no record yet goes at the mean pace; one that stopped training has no steps to go
    assert remaining_seconds(records, {"a": 60, "b": 60, "c": 30}) == pytest.approx(0.5 * (54 + 60 + 30))
    assert remaining_seconds(records, {"a": 60, "b": 60}, done=("b",)) == pytest.approx(0.5 * 54)
    # the time since the latest record is taken off, never below zero
    assert remaining_seconds(records, 60, now=110.0) == pytest.approx(0.5 * 114 - 6.0)
    assert remaining_seconds(records, 60, now=1e6) == 0.0
    records.append(record("b", 12, 8.0, 112.0))  # b: 0.5 s a step; a faster contestant keeps its own pace
    records.append(record("a", 12, 4.0 + 6 * 0.25, 113.0))
    assert remaining_seconds(records, 60) == pytest.approx(48 * ((5.5 - 1.0) / 12) + 48 * 0.5)


def test_the_range_goes_from_the_fastest_step_to_the_slowest():
    estimate = estimate_from([0.3, 0.1, 0.2, 0.2, 0.9], 3, 60, 6)
    assert estimate.step_s == 0.2 and estimate.timed_steps == 5  # the median, said in words
    assert estimate.low == pytest.approx(race_seconds(0.1, 3, 60, 6))
    assert estimate.high == pytest.approx(race_seconds(0.9, 3, 60, 6))
    even = estimate_from([0.2] * 5, 3, 60, 6)  # never a bare point: at least a quarter above the median's
    assert even.high == pytest.approx(1.25 * even.low) and even.low == pytest.approx(race_seconds(0.2, 3, 60, 6))
    words = estimate_from([1.0] * 5, 3, 60, 6).words()
    assert words.startswith("about 4–6 min here now") and "assumes" in words  # the high end rounded up


@pytest.fixture
def timed_steps(monkeypatch) -> list[float]:
    """Every step an estimate times, slowed down by ``SLOW_S``: the seconds each took."""
    real, taken = lesson.train_step, []

    def slowed(model, optimizer, ids):
        time.sleep(SLOW_S)
        taken.append(real(model, optimizer, ids) + SLOW_S)
        return taken[-1]

    monkeypatch.setattr(lesson, "train_step", slowed)
    return taken


def test_each_estimate_is_timed_anew_and_grows_with_a_slowed_step(kit, timed_steps):
    from hyperclone import Growth

    first = estimate_race(kit[0], Growth(2), 3, 60, 4, 32, 6)
    after_first = len(timed_steps)
    second = estimate_race(kit[0], Growth(2), 3, 60, 4, 32, 6)
    assert after_first >= 2 and len(timed_steps) - after_first >= 2  # a warm-up and timed steps, each time
    for estimate in (first, second):  # 4 x 32 tokens are timed whole: each step took at least the sleep
        assert estimate.step_s >= SLOW_S and estimate.low >= race_seconds(SLOW_S, 3, 60, 6)  # the fastest, too
        assert estimate.high > estimate.low


@pytest.mark.parametrize("cap_s, timed", [(10.0, 5), (0.9, MIN_TIMED_STEPS), (0.3, 1)])
def test_a_slow_machine_times_fewer_steps(kit, monkeypatch, cap_s, timed):
    """Steps of 1 s on a clock of its own: all five within the cap; past it, the fewest that one slow step cannot
    sway; past three times the cap, one."""
    from types import SimpleNamespace

    from hyperclone import Growth

    clock = [0.0]

    def step(model, optimizer, ids):
        clock[0] += 1.0
        return 1.0

    monkeypatch.setattr(lesson, "train_step", step)
    monkeypatch.setattr(lesson, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    assert time_steps(kit[0], Growth(2), 4, 32, steps=5, cap_s=cap_s) == [1.0] * timed
    assert clock[0] == timed + 1  # and the warm-up step


def test_the_time_left_grows_with_slowed_training_and_evaluation(kit, monkeypatch):
    model, tok, corpus = kit
    real_loss, real_eval, forecasts = loop.loss_on, loop.evaluate, []
    monkeypatch.setattr(loop, "loss_on", lambda *a, **k: time.sleep(SLOW_S) or real_loss(*a, **k))
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: time.sleep(SLOW_S) or real_eval(*a, **k))
    records = []

    def on_record(event):
        if event["event"] == "metrics":
            records.append(event)
            steps = {n: max((r["step"] for r in records if r["contestant"] == n), default=0) for n in PAIR}
            budgets = dict.fromkeys(PAIR, TINY["steps"])
            forecasts.append((sum(TINY["steps"] - s for s in steps.values()), remaining_seconds(records, budgets)))

    result = loop.race(model, contestants=PAIR, tokenizer=tok, data=corpus,
                       callback=on_record, **TINY)
    pace = SLOW_S + SLOW_S / TINY["eval_every"]  # a step's sleep, and a share of its evaluation's
    measured = [(to_go, left) for to_go, left in forecasts if left is not None]
    assert measured and measured[-1][1] == 0.0  # nothing left once every contestant has finished
    for to_go, left in measured:
        assert left >= to_go * pace * (1 - 1e-6), (to_go, left)
    assert race_remaining(result) == 0.0


def slowed_race(kit, monkeypatch):
    """A stand-in for the pages' ``race``: the tiny race of ``kit`` into the page's run directory, each training step
    slowed by ``SLOW_S`` so that a page sees it train."""
    model, tok, corpus = kit
    real_loss = loop.loss_on
    monkeypatch.setattr(loop, "loss_on", lambda *a, **k: time.sleep(SLOW_S) or real_loss(*a, **k))
    settings = dict(TINY, steps=24, eval_every=2)

    def fake(*args, run_dir=None, stop_event=None, **kwargs):
        return loop.race(model, contestants=PAIR, tokenizer=tok, data=corpus,
                         run_dir=run_dir, stop_event=stop_event, **settings)
    return fake


def watch_until(at, words: str) -> str:
    """Rerun the page until a caption holds ``words`` (a hang guard, not a speed test); that caption."""
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline:
        at.run()
        assert not at.exception, at.exception
        found = [c.value for c in at.caption if words in c.value]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no caption with {words!r} within {HANG_GUARD_S} s: {[c.value for c in at.caption]}")


def stop_races() -> None:
    from hyperclone.teach.classroom import shared_queue

    queue = shared_queue()
    running = queue.running()
    if running is not None:
        queue.stop(running, by="", teacher=True)
    assert queue.wait_idle(HANG_GUARD_S)


@pytest.mark.slow
def test_the_lesson_times_its_race_again_at_start_and_shows_the_time_left(runs, kit, timed_steps, monkeypatch):
    from hyperclone.dashboard import lesson_page

    lesson_page.estimate_text.clear()
    monkeypatch.setattr(lesson_page, "race", slowed_race(kit, monkeypatch))
    at = open_page(LESSON, chapter="4")
    assert any("here now" in c.value and "assumes" in c.value for c in at.caption)
    before = len(timed_steps)
    try:
        at.button(key="lesson_race_start").click().run()
        assert len(timed_steps) - before >= 2  # timed again as it started, though the caption's estimate is cached
        assert "here now" in at.session_state["lesson_estimate"]
        shown = watch_until(at, "left at the pace measured so far")
        assert "estimated at the start: about" in shown
    finally:
        stop_races()


@pytest.mark.slow
def test_the_explorer_times_its_race_again_at_start_and_shows_the_time_left(runs, kit, timed_steps, monkeypatch):
    from hyperclone.dashboard import race_tab

    race_tab.step_seconds_of.clear()
    monkeypatch.setattr(race_tab, "race", slowed_race(kit, monkeypatch))
    at = open_page(EXPLORER, tab="Training race")
    for key, value in (("race_steps", QUICK.steps), ("race_batch", 4), ("race_eval", 6)):
        at.number_input(key=key).set_value(value).run()
    at.selectbox(key="race_seq").set_value(64).run()
    assert any("Estimated time: about" in c.value and "here now" in c.value for c in at.caption)
    before = len(timed_steps)
    try:
        at.button(key="race_start").click().run()
        assert not at.exception, at.exception
        assert len(timed_steps) - before >= 2  # timed again as it started, though the estimate was cached
        shown = watch_until(at, "left at the pace measured so far")
        assert "Race training now" in shown and "estimated at its start: about" in shown
    finally:
        stop_races()
