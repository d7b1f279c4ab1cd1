"""Speed-up arithmetic on made-up curves: interpolation, both directions, and honest "not reached"."""

from __future__ import annotations

import pytest

from hyperclone.training.results import RaceResult
from hyperclone.training.speedups import pick_baseline, readout, speedup, speedup_vs_horizon, tokens_to_reach

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


# --------------------------------------------------------------------------- #
# The read-out at equal tokens, and speed-up against horizon
# --------------------------------------------------------------------------- #
def test_one_more_evaluation_of_the_clone_never_gives_a_bound_below_one():
    # The dashboard bug: the clone was evaluated once more than random init, which is far behind.
    clone = [(0, 3.60), (100, 3.70), (200, 3.65), (300, 3.60)]
    random_init = [(0, 7.6), (100, 5.5), (200, 5.3)]
    a = speedup(clone, random_init, "a")
    assert a.value is None and a.bound is None and "not comparable yet" in a.message
    r = readout(clone, random_init)
    assert r.tokens == 200 and r.loss == pytest.approx(3.65) and r.baseline_loss == pytest.approx(5.3)
    assert r.a is None and r.a_bound == (">", pytest.approx(1.0))
    assert r.words.startswith("random is still 1.65 nats behind clone after 200 tokens each")
    assert "already below random's 5.300 before training" in r.words


def test_the_read_out_uses_only_the_tokens_both_have_trained_whatever_the_order_of_evaluations():
    import random

    rng = random.Random(0)
    for _ in range(200):
        curves = [[(100 * i, rng.uniform(3.0, 8.0)) for i in range(rng.randint(1, 6))] for _ in range(2)]
        r = readout(*curves)
        if r.tokens > 0:
            assert r.tokens == min(curves[0][-1][0], curves[1][-1][0])
            assert r.a_bound is None or r.a_bound[1] >= 1.0
            assert (r.a is None) != (r.a_bound is None)  # a number or a bound, never both
        s = speedup(*curves, "a")
        assert s.bound is None or s.bound[1] >= 1.0


def test_the_read_out_in_words_gives_a_measured_ratio_when_random_catches_up_later():
    r = readout([(0, 5.0), (100, 4.5)], RANDOM)  # random reaches 4.5 at 300 tokens
    assert (r.a, r.b) == (pytest.approx(3.0), None)
    assert r.words == ("random is still 1.50 nats behind clone after 100 tokens each; it needed 3.00x the "
                       "tokens (300) to reach clone's 4.500; clone was already below random's 6.000 before training")
    behind = readout([(0, 9.0), (100, 7.0)], RANDOM)  # the clone is behind at equal tokens: an honest ratio < 1
    assert behind.a == pytest.approx(0.5) and behind.words.startswith("clone is 1.00 nats behind random")


def test_speedup_against_horizon_on_made_up_curves():
    clone = [(0, 5.0), (100, 3.0), (200, 2.0), (300, 1.0)]
    random_init = [(0, 6.0), (100, 5.0), (200, 4.0), (400, 3.0), (800, 2.0)]
    a = speedup_vs_horizon(clone, random_init, params=100, definition="a")
    assert [(p.tokens, p.tokens_per_param) for p in a] == [(100, 1.0), (200, 2.0), (300, 3.0)]
    assert [p.other_tokens for p in a] == [400.0, 800.0, None]
    assert [p.value for p in a] == [4.0, 4.0, None]
    assert a[2].bound == (">", pytest.approx(800 / 300))  # random ran further and never got to 1.0
    b = speedup_vs_horizon(clone, random_init, params=100, definition="b")
    # random's 5.0 at 100: the clone was there before training (unbounded, no number); 4.0 at 200: the
    # clone reached it at 50 tokens; 3.0 at 400: at 100; 2.0 at 800: at 200.
    assert [p.tokens for p in b] == [100, 200, 400, 800]
    assert [p.value for p in b] == [None, 4.0, 4.0, 4.0] and b[0].bound is None
    short = speedup_vs_horizon([(0, 5.0), (1000, 1.0)], random_init, params=10)
    assert short[0].value is None and short[0].bound is None  # random stopped at 800 < 1000: no bound


def test_a_horizon_point_where_the_clone_is_not_below_its_start_is_marked():
    clone = [(0, 5.0), (100, 5.4), (200, 5.0), (300, 4.5)]  # re-warming rise, back to its start, then below
    random_init = [(0, 8.0), (100, 6.0), (200, 5.5), (400, 5.0), (800, 4.0)]
    a = speedup_vs_horizon(clone, random_init, params=100, definition="a")
    assert [p.above_start for p in a] == [True, True, False]  # only the last is evidence of learning
    assert [p.value for p in a] == [pytest.approx(240 / 100), 2.0, pytest.approx(600 / 300)]  # 5.4 at 240
    assert not any(p.above_start for p in speedup_vs_horizon(clone, random_init, params=100, definition="b"))


def test_the_best_random_recipe_is_the_baseline():
    assert pick_baseline(["clone", "random@lr=1e-3", "random@lr=3e-3"],
                         {"random@lr=1e-3": [(0, 8.0), (100, 5.0)], "random@lr=3e-3": [(0, 8.0), (100, 4.5)]}) \
        == "random@lr=3e-3"
    assert pick_baseline(["clone", "random"], {}) == "random" and pick_baseline(["clone"], {}) is None


def test_a_second_random_recipe_is_measured_against_the_best_without_the_sources_training():
    curves = {"random@lr=1e-3": [(0, 8.0), (100, 6.5), (200, 5.5)], "random@lr=3e-3": RANDOM}
    records = [dict(contestant=n, step=i, tokens=t, val_loss=l) for n, c in curves.items()
               for i, (t, l) in enumerate(c)]
    result = RaceResult(config={"contestants": list(curves)},
                        info={"contestants": {n: {"flop_params": 4} for n in curves},
                              "source": {"train_tokens": 200, "flop_params": 1}}, records=records)
    assert result.baseline == "random@lr=3e-3"
    a, b = result.speedups()
    assert a.contestant == "random@lr=1e-3" and a.value_with_source is None and b.value_with_source is None
    assert "the lowest final loss of 2 random-init recipes" in result.table()
