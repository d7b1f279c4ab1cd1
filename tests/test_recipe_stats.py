"""The figures of the recipe sweep and the honest-defaults check, on hand-made curves."""

import math

import pytest

from hyperclone.training.recipe_stats import equal_loss_speed, keeps_head_start, rise_of


def test_a_clone_that_rises_and_comes_back():
    r = rise_of([(0, 3.6), (100, 3.8), (200, 3.7), (300, 3.5), (400, 3.4)])
    assert (r.start, r.peak, r.peak_tokens, r.final) == (3.6, 3.8, 100, 3.4)
    assert r.rise == pytest.approx(0.2)
    assert r.back_below == pytest.approx(250.0)  # 3.7 -> 3.5 crosses 3.6 halfway
    assert r.final_change == pytest.approx(-0.2)


def test_a_clone_that_never_rises_and_one_that_never_comes_back():
    assert rise_of([(0, 3.6), (10, 3.55), (20, 3.5)]).back_below == 0.0
    assert rise_of([(0, 3.6), (10, 3.55), (20, 3.5)]).rise == pytest.approx(-0.05)
    stuck = rise_of([(0, 3.6), (10, 3.9), (20, 3.7)])
    assert stuck.back_below is None and stuck.rise == pytest.approx(0.3)


def test_the_peak_is_searched_after_the_start_only():
    # an earlier dip below the start does not count as "back below" before the peak
    r = rise_of([(0, 3.6), (10, 3.5), (20, 3.9), (30, 3.8)])
    assert r.peak_tokens == 20 and r.back_below is None


def test_rise_needs_a_finite_point():
    with pytest.raises(ValueError):
        rise_of([(0, math.nan)])
    assert rise_of([(0, 3.0), (5, math.nan), (10, 2.9)]).final == 2.9


def test_equal_loss_speed_measures_from_the_clone_start():
    clone = [(0, 4.0), (100, 3.5), (200, 3.0)]
    # random reaches 4.0 at 1000 tokens and 3.0 at 1600: 600 tokens for the same descent the clone did in 200
    random = [(0, 9.0), (1000, 4.0), (1600, 3.0)]
    s = equal_loss_speed(clone, random)
    assert (s.start, s.target, s.clone_tokens, s.random_tokens) == (4.0, 3.0, 200.0, 600.0)
    assert s.ratio == pytest.approx(3.0)
    slower = equal_loss_speed(clone, [(0, 9.0), (1000, 4.0), (1100, 3.0)])
    assert slower.ratio == pytest.approx(0.5)  # the clone needs twice random's tokens from the same loss


def test_equal_loss_speed_says_why_not():
    worse = equal_loss_speed([(0, 4.0), (100, 4.2)], [(0, 9.0), (50, 3.0)])
    assert worse.ratio is None and "never got below its start" in worse.why
    never = equal_loss_speed([(0, 4.0), (100, 3.5)], [(0, 9.0), (100, 6.0)])
    assert never.ratio is None and never.clone_tokens == 100.0 and "clone's start" in never.why
    partway = equal_loss_speed([(0, 4.0), (100, 3.5)], [(0, 9.0), (100, 3.8)])
    assert partway.ratio is None and "the target" in partway.why


@pytest.mark.parametrize("clone, problem", [
    ([(0, 3.6), (10, 3.62), (20, 3.59)], None),
    ([(0, 3.6), (10, 3.66), (20, 3.59)], "rises 0.0600"),
    ([(0, 3.6), (10, 3.62), (20, 3.615)], "ends 0.0150"),
])
def test_keeps_head_start_targets(clone, problem):
    problems = keeps_head_start(clone, [(0, 9.0), (20, 7.0)])
    assert (problems == []) if problem is None else any(problem in p for p in problems)


def test_keeps_head_start_compares_at_equal_tokens():
    clone = [(0, 3.6), (10, 3.6), (20, 3.59)]
    assert any("not below random init" in p for p in keeps_head_start(clone, [(0, 9.0), (20, 3.5)]))
    # random is only compared over the tokens both covered: its later, lower loss does not count
    assert keeps_head_start(clone, [(0, 9.0), (20, 5.0), (200, 3.0)]) == []
