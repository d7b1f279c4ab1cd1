"""Speed-up arithmetic on made-up curves: interpolation, both directions, and honest "not reached"."""

from __future__ import annotations

import pytest

from hyperclone.results import RaceResult, speedup, tokens_to_reach

RANDOM = [(0, 8.0), (100, 6.0), (200, 5.0), (300, 4.5), (400, 4.2)]


def test_tokens_to_reach_interpolates_linearly_between_evaluations():
    assert tokens_to_reach(RANDOM, 5.5) == pytest.approx(150.0)
    assert tokens_to_reach(RANDOM, 5.0) == pytest.approx(200.0)  # exactly on a point
    assert tokens_to_reach(RANDOM, 9.0) == 0.0  # already there before training
    assert tokens_to_reach(RANDOM, 4.0) is None  # never within the run


def test_first_crossing_counts_even_if_the_loss_rises_again():
    bumpy = [(0, 6.0), (10, 5.0), (20, 5.5), (30, 4.0)]
    assert tokens_to_reach(bumpy, 5.2) == pytest.approx(8.0)


def test_speedup_a_is_baseline_tokens_to_reach_clone_final_over_clone_tokens():
    clone = [(0, 5.0), (50, 4.9), (100, 4.5)]  # final 4.5 at 100 tokens; random gets to 4.5 at 300
    s = speedup(clone, RANDOM, "a")
    assert s.value == pytest.approx(3.0)
    assert (s.tokens_contestant, s.tokens_baseline, s.target_loss) == (100, pytest.approx(300.0), 4.5)


def test_speedup_b_is_baseline_tokens_over_clone_tokens_to_reach_baseline_final():
    clone = [(0, 5.0), (100, 4.6), (200, 4.0), (400, 3.5)]  # reaches 4.2 at 100 + 0.4/0.6*100
    s = speedup(clone, RANDOM, "b")
    assert s.tokens_contestant == pytest.approx(100 + 100 * 0.4 / 0.6)
    assert s.value == pytest.approx(400 / (100 + 100 * 0.4 / 0.6))


def test_not_reached_gives_no_number_but_a_bound_and_a_reason():
    clone = [(0, 5.0), (200, 4.0)]  # better than random ever gets: (a) cannot be measured
    s = speedup(clone, RANDOM, "a")
    assert s.value is None
    assert s.bound == (">", pytest.approx(2.0))  # random needs more than its 400 tokens = 2x the clone's 200
    assert "not reached within the run" in s.message and "4.2000" in s.message

    worse = [(0, 7.0), (400, 4.5)]  # never gets down to random's final 4.2: (b) cannot be measured
    s = speedup(worse, RANDOM, "b")
    assert s.value is None and s.bound == ("<", pytest.approx(1.0))
    assert "not reached within the run" in s.message


def test_a_clone_that_starts_below_the_target_is_unbounded_in_tokens_but_not_in_flops():
    clone = [(0, 4.0), (400, 3.8)]  # already better than random's final before any training
    s = speedup(clone, RANDOM, "b", flop_params=(10, 10), source_flops=6 * 10 * 200)
    assert s.value is None and s.tokens_contestant == 0.0
    assert s.describe().startswith("(b) unbounded:") and "before training" in s.message
    # counting the source's training: random spent 6*10*400 FLOPs, the clone 0 + the source's 6*10*200
    assert s.value_with_source == pytest.approx(2.0)


def test_flops_comparison_adds_the_source_training_to_the_clone():
    clone = [(0, 5.0), (100, 4.5)]
    s = speedup(clone, RANDOM, "a", flop_params=(4, 4), source_flops=6 * 1 * 200)
    # random: 6*4*300 FLOPs to reach 4.5; clone: 6*4*100 + source 6*1*200
    assert s.value_with_source == pytest.approx((6 * 4 * 300) / (6 * 4 * 100 + 6 * 200))
    assert speedup(clone, RANDOM, "a").value_with_source is None  # unknown source cost: no number


def test_race_result_speedups_from_records():
    records = [dict(contestant=n, step=i, tokens=t, val_loss=l, data_sha1=str(i))
               for n, curve in (("noisy_symmetric", [(0, 5.0), (100, 4.5)]), ("random", RANDOM))
               for i, (t, l) in enumerate(curve)]
    result = RaceResult(
        config={"contestants": ["noisy_symmetric", "random"]},
        info={"contestants": {"noisy_symmetric": {"flop_params": 4}, "random": {"flop_params": 4}},
              "source": {"train_tokens": 200, "flop_params": 1}},
        records=records,
    )
    a, b = result.speedups()
    assert (a.definition, b.definition) == ("a", "b")
    assert a.value == pytest.approx(3.0)
    assert a.value_with_source == pytest.approx((6 * 4 * 300) / (6 * 4 * 100 + 6 * 200))
    assert b.value is None  # the clone stopped at 4.5, above random's final 4.2
    text = result.table()
    assert "(a) 3.00x" in text and "not reached within the run" in text


def test_bounds_carry_over_to_the_flops_view():
    clone = [(0, 5.0), (200, 4.0)]
    s = speedup(clone, RANDOM, "a", flop_params=(1, 1), source_flops=6 * 200)
    assert s.value_with_source is None
    assert s.bound_with_source == (">", pytest.approx((6 * 400) / (6 * 200 + 6 * 200)))
    assert s.describe_with_source() == ">1.00x"
    unbounded = speedup([(0, 4.0), (400, 3.8)], RANDOM, "b")
    assert unbounded.describe().startswith("(b) unbounded:")
