"""The notebooks' exercise checks: the right answer passes, and wrong answers fail with a reason.

Every check computes its expected answer from the library, so these tests feed each one the
solution the notebook hides and a few plausible mistakes.
"""

from __future__ import annotations

import pytest
import torch
from families import CASES, LLAMA_KW, tiny_model

from hyperclone import clone
from hyperclone.teach.exercises import (WrongAnswer, check_block_patterns, check_cosine_prediction, check_diagonal_prediction,
                                  check_exact_asymmetric_clone, check_exact_asymmetric_grid, check_loss_rise,
                                  check_parameter_prediction, check_repair, check_tokens_to_loss, copy_gradient_gap,
                                  grade, parameter_count)
from hyperclone.core.grow import grow_matrix
from hyperclone.training.results import RaceResult
from hyperclone.core.verify import rounding_tolerance

GPT2 = CASES[0][2]
FFN_IN = "transformer.h.0.mlp.c_fc.weight"


def grid(coefficients, w):
    return torch.cat([torch.cat([c * w for c in row], dim=1) for row in coefficients], dim=0)


# --- notebook 1 --------------------------------------------------------------------------------- #
def first_row_diagonal(w, n):  # the solution: [[W, 0, ...], [W/n, ..., W/n], ...]
    return grid([[1.0] + [0.0] * (n - 1)] + [[1.0 / n] * n] * (n - 1), w)


def swap_invariant(w, n):  # looks uneven, but every column of blocks also sums to W: the copies stay equal
    return grid([[0.7 if i == j else 0.3 / (n - 1) for j in range(n)] for i in range(n)], w)


def test_exact_asymmetric_grid_check():
    assert check_exact_asymmetric_grid(first_row_diagonal).ok
    wrong = {
        "symmetric": lambda w, n: grow_matrix(w, n, n, "symmetric"),
        "diagonal": lambda w, n: grow_matrix(w, n, n, "diagonal"),
        "swap-invariant": swap_invariant,
        "noisy": lambda w, n: grow_matrix(w, n, n, "noisy_symmetric", generator=torch.Generator().manual_seed(0)),
        "W in every block": lambda w, n: w.repeat(n, n),
        "wrong shape": lambda w, n: w,
    }
    for name, make in wrong.items():
        verdict = check_exact_asymmetric_grid(make)
        assert not verdict.ok, name
    assert "same gradient" in check_exact_asymmetric_grid(swap_invariant).message
    assert "not a multiple of W" in check_exact_asymmetric_grid(wrong["noisy"]).message
    assert "sum to [2.0, 2.0]" in check_exact_asymmetric_grid(wrong["W in every block"]).message


def diagonal_by_hand(w, a, b):
    if a == 1 or b == 1:  # one row or one column of blocks: no diagonal, so every variant splits evenly
        return grid([[1.0 / b] * b] * a, w)
    return grid([[1.0 if i % b == j else 0.0 for j in range(b)] for i in range(a)], w)


def test_diagonal_prediction_check():
    assert check_diagonal_prediction(diagonal_by_hand).ok
    no_wrap = check_diagonal_prediction(lambda w, a, b: torch.kron(torch.eye(a, b), w) if min(a, b) > 1
                                        else diagonal_by_hand(w, a, b))
    assert not no_wrap.ok and "block (2, 0)" in no_wrap.message  # a 3x2 grid wraps around its diagonal
    head = check_diagonal_prediction(lambda w, a, b: torch.kron(torch.eye(a, b), w))
    assert not head.ok


def test_grade_checks_the_solution_until_there_is_an_answer(capsys):
    assert grade(check_exact_asymmetric_grid, None, first_row_diagonal).ok
    assert "checking the hidden solution" in capsys.readouterr().out
    verdict = grade(check_exact_asymmetric_grid, swap_invariant, first_row_diagonal)  # a hint, not a traceback
    assert not verdict.ok and capsys.readouterr().out.startswith("Not yet: your answer is wrong")
    with pytest.raises(WrongAnswer, match="the solution is wrong"):
        grade(check_exact_asymmetric_grid, None, swap_invariant)


# --- notebook 2 --------------------------------------------------------------------------------- #
def predict_parameters(model, n):  # the solution
    one_sided = {id(model.get_output_embeddings().weight)} | {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    total = sum(p.numel() * (n if id(p) in one_sided else n ** p.dim()) for p in model.parameters())
    return total + (model.get_output_embeddings().weight.numel() * n if model.config.tie_word_embeddings else 0)


@pytest.mark.parametrize("family, kwargs", [("gpt2", GPT2), ("llama", LLAMA_KW)])
def test_parameter_prediction_check(family, kwargs):
    source = tiny_model(family, kwargs)
    assert check_parameter_prediction(predict_parameters, source).ok
    assert not check_parameter_prediction(lambda m, n: parameter_count(m) * n * n, source).ok
    if source.config.tie_word_embeddings:  # forgetting the untied head
        assert not check_parameter_prediction(lambda m, n: predict_parameters(m, n) - m.lm_head.weight.numel() * n,
                                              source).ok


def test_block_pattern_check():
    source = tiny_model("gpt2", GPT2)
    right = {FFN_IN: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "lm_head.weight": [[1 / 3] * 3],
             "transformer.wte.weight": [[1], [1], [1]]}
    assert check_block_patterns(right, source, 3).ok
    for name, bad in (("lm_head.weight", [[1, 0, 0]]), ("transformer.wte.weight", [[1 / 3], [1 / 3], [1 / 3]]),
                      (FFN_IN, [[1 / 3] * 3] * 3), (FFN_IN, [[1, 0], [0, 1]])):
        assert not check_block_patterns({**right, name: bad}, source, 3).ok, (name, bad)
    with pytest.raises(WrongAnswer, match="fused"):
        check_block_patterns({"transformer.h.0.attn.c_attn.weight": [[1, 0], [0, 1]]}, source, 2)


def test_repair_check():
    source = tiny_model("gpt2", GPT2)
    wide = clone(source, 2)
    ids = torch.arange(10)[None] % source.config.vocab_size
    hidden = source.config.n_embd
    name = "transformer.h.1.mlp.c_fc.weight"  # Conv1D, stored [in, out]

    def entry(index, delta):
        def repair(model):
            with torch.no_grad():
                model.get_parameter(name)[index] += delta
        return repair

    assert check_repair(entry((hidden, 0), -0.5), source, wide, name, (0, 0), 0.5, ids).ok  # input copy 1
    assert not check_repair(entry((0, 0), -0.5), source, wide, name, (0, 0), 0.5, ids).ok  # undoes it
    assert not check_repair(entry((0, 1), -0.5), source, wide, name, (0, 0), 0.5, ids).ok  # another output
    assert not check_repair(entry((hidden, 0), 0.5), source, wide, name, (0, 0), 0.5, ids).ok  # wrong sign


# --- notebook 3 --------------------------------------------------------------------------------- #
def race_result() -> RaceResult:
    losses = {"clone": [3.6, 3.7, 3.65, 3.5, 3.5], "random": [7.6, 6.0, 5.2, 5.3, 4.9]}
    records = [dict(event="metrics", contestant=name, step=10 * i, tokens=512 * 10 * i, val_loss=loss)
               for name, curve in losses.items() for i, loss in enumerate(curve)]
    return RaceResult(config={"contestants": list(losses)}, info={}, records=records)


def tokens_by_hand(curve, target):  # the solution
    previous = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None or previous[1] == loss:
                return tokens
            t0, l0 = previous
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        previous = (tokens, loss)
    return None


def test_tokens_to_loss_check():
    result = race_result()
    assert check_tokens_to_loss(tokens_by_hand, result).ok
    last_crossing = lambda curve, target: next((t for t, l in reversed(curve) if l <= target), None)  # noqa: E731
    assert not check_tokens_to_loss(last_crossing, result).ok
    never_none = lambda curve, target: tokens_by_hand(curve, target) or 0.0  # noqa: E731
    assert not check_tokens_to_loss(never_none, result).ok


def test_loss_rise_check():
    result = race_result()

    def rise(history):  # the solution
        peak = max(history[1:], key=lambda r: r["val_loss"])
        return peak["step"], peak["val_loss"] - history[0]["val_loss"]

    assert check_loss_rise(rise, result).ok
    assert not check_loss_rise(lambda h: (rise(h)[0], -rise(h)[1]), result).ok
    assert not check_loss_rise(lambda h: max((r["val_loss"], r["step"]) for r in h)[::-1], result).ok  # step 0 too


# --- notebook 4 --------------------------------------------------------------------------------- #
def batch(source, seed=0):
    ids = torch.randint(source.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:]


def reweighted(source):  # the solution: one layer's rows of blocks split unevenly, columns unequal
    wide = clone(source, factor=2, variant="symmetric")
    w = source.get_parameter(FFN_IN).detach().T
    with torch.no_grad():
        wide.get_parameter(FFN_IN).copy_(grid([[1.0, 0.0], [0.5, 0.5]], w).T)
    return wide


def test_exact_asymmetric_clone_check():
    source = tiny_model("gpt2", GPT2)
    x, y = batch(source)
    assert check_exact_asymmetric_clone(reweighted, source, 2, x, y).ok
    for variant, why in (("symmetric", "same gradient"), ("diagonal", "same gradient"),
                         ("noisy_symmetric", "noise")):
        verdict = check_exact_asymmetric_clone(lambda s: clone(s, 2, variant=variant), source, 2, x, y)
        assert not verdict.ok and why in verdict.message, (variant, verdict)

    def inexact(s):
        wide = reweighted(s)
        with torch.no_grad():
            wide.get_parameter(FFN_IN)[0, 0] += 0.5
        return wide

    assert "not exact" in check_exact_asymmetric_clone(inexact, source, 2, x, y).message


def test_copy_gradient_gap_is_rounding_for_interchangeable_copies():
    source = tiny_model("gpt2", GPT2)
    x, y = batch(source)
    # one outer product per token, rounding differences of one origin: the worst case, linear in the tokens
    tolerance = rounding_tolerance(torch.float32, x.numel(), worst_case=True)
    assert copy_gradient_gap(clone(source, 2, variant="diagonal"), 2, x, y)[0] < tolerance
    assert copy_gradient_gap(reweighted(source), 2, x, y)[0] > tolerance
    assert source.config.resid_pdrop > 0  # dropout is switched off for the measurement, and the mode restored
    model = clone(source, 2, variant="symmetric").train()
    assert copy_gradient_gap(model, 2, x, y) == (0.0, "") and model.training  # bit-identical copies


def test_cosine_prediction_check():
    source = tiny_model("gpt2", GPT2)

    def cosine(variant, factor, snr_db):  # the solution: signal / (signal + noise), whatever the factor
        return 1 / (1 + 10 ** (-snr_db / 10)) if variant.startswith("noisy") else 1.0

    assert check_cosine_prediction(cosine, source, FFN_IN).ok
    assert not check_cosine_prediction(lambda v, n, s: 1 / (1 + 10 ** (-s / 10)), source, FFN_IN).ok
    assert not check_cosine_prediction(lambda v, n, s: cosine(v, n, s) ** (n - 1), source, FFN_IN).ok


def test_grade_passes_the_check_its_arguments(capsys):
    source = tiny_model("gpt2", GPT2)
    assert grade(check_parameter_prediction, predict_parameters, None, source, factors=(2,)).ok
    assert not grade(check_parameter_prediction, lambda m, n: 0, predict_parameters, source, factors=(2,)).ok
    assert "x2: you predict" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match=r"the solution is wrong: x2: you predict"):
        grade(check_parameter_prediction, None, lambda m, n: 0, source, factors=(2,))
