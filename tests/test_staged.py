"""Staged training: ``staged@STEP`` trains the source, grows it mid-race and trains on as the wide model."""

from __future__ import annotations

import pytest
import torch
from racekit import TINY, StopAfter, one_line_refusal

from hyperclone.core.clone import clone
from hyperclone.core.growth import Growth
from hyperclone.views.plots import loss_figure, race_figure, race_report_html
from hyperclone.training.config import ContestantSpec, RaceConfig
from hyperclone.training.runs import run_config
from hyperclone.training.speedups import training_flops
from hyperclone.training.runs import load_run, read_checkpoint
from hyperclone.training.loop import evaluate, race
from hyperclone.core.verify import TOLERANCE, rounding_tolerance

GROW_AT = 4  # an evaluation step (TINY evaluates every 2), so the source has a record there too
STAGED = f"staged@{GROW_AT}"
# The lr must not depend on the budget (the source stops at GROW_AT): constant after warm-up.
SETTINGS = {**TINY, "schedule": "constant"}
KEYS = ("contestant", "step", "tokens", "flops", "lr", "train_loss", "val_loss", "val_accuracy", "data_sha1")


UNBROKEN = {"contestants": ("source", STAGED), "steps_for": {"source": GROW_AT}, **SETTINGS}  # conftest's unbroken


def staged_race(kit, **kw):
    model, tok, corpus = kit
    return race(model, tokenizer=tok, data=corpus, **{**UNBROKEN, **kw})


def by_step(result, name):
    return {r["step"]: r for r in result.history(name)}


# --------------------------------------------------------------------------- #
# The spec
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("text, spec, name", [
    ("staged@200", ContestantSpec("staged", grow_at=200), "staged@200"),
    ("staged@200@lr=3e-4", ContestantSpec("staged", grow_at=200, lr=3e-4), "staged@200@lr=3e-4"),
    ("staged@200@symmetric@continue", ContestantSpec("staged", "continue", grow_at=200, variant="symmetric"),
     "staged@200@symmetric@continue"),
    ("staged@200@noisy_symmetric", ContestantSpec("staged", grow_at=200), "staged@200"),  # the default variant
])
def test_staged_specs_parse_to_one_canonical_name(text, spec, name):
    parsed = ContestantSpec.parse(text)
    assert parsed == spec and parsed.name == name and ContestantSpec.parse(name) == parsed
    assert parsed.grows_into == (spec.variant or "noisy_symmetric")


@pytest.mark.parametrize("text, message", [
    ("staged@0", "staged needs the step to grow at"),
    ("staged", "staged needs the step to grow at"),
    ("staged@12@diagonal@nope", "unknown recipe 'nope'"),
    ("noisy_symmetric@12", "belongs to staged only"),
    ("random@symmetric", "belongs to staged only"),
])
def test_bad_staged_specs_fail_in_one_line(text, message):
    one_line_refusal(message, ContestantSpec.parse, text)


@pytest.mark.parametrize("contestants, steps_for", [(("staged@8", "random"), {}),
                                                    (("staged@5", "random"), {"staged@5": 5})])
def test_a_growth_step_beyond_the_race_is_refused_before_anything_loads(contestants, steps_for):
    message = one_line_refusal(r"grows at step \d+ but trains (5|8) steps",
                               RaceConfig(contestants=contestants, steps=8, steps_for=steps_for).validate)
    assert "grow at a step from 1 to" in message


# --------------------------------------------------------------------------- #
# The race
# --------------------------------------------------------------------------- #
def test_before_growth_staged_is_the_source_exactly(unbroken):
    source, staged = by_step(unbroken, "source"), by_step(unbroken, STAGED)
    before = [s for s in staged if s < GROW_AT]
    assert before == [0, 2]
    for step in before:
        assert [staged[step][k] for k in KEYS[1:]] == [source[step][k] for k in KEYS[1:]]
    assert unbroken.same_batches()


def test_right_after_growth_the_wide_model_has_the_small_ones_loss(unbroken, kit):
    _, _, corpus = kit
    small = unbroken.models["source"]  # trained GROW_AT steps, as the staged one was when it grew
    windows = corpus.validation_windows(SETTINGS["eval_windows"], SETTINGS["seq_len"])
    with torch.no_grad():
        max_logit = float(small(input_ids=windows[:, :-1]).logits.abs().max())
    # verify's float32 logit budget (rounding_tolerance over ~200 roundings, relative to max |logit|); a
    # cross-entropy moves at most twice the largest change of a logit.
    assert TOLERANCE[torch.float32] == pytest.approx(rounding_tolerance(torch.float32, 196), rel=0.01)
    tol = 2 * rounding_tolerance(torch.float32, 196) * max_logit
    grown = by_step(unbroken, STAGED)[GROW_AT]
    assert abs(grown["val_loss"] - by_step(unbroken, "source")[GROW_AT]["val_loss"]) <= tol
    assert grown["symmetry"] is not None and by_step(unbroken, STAGED)[2]["symmetry"] is None
    # and it is the race's clone of that model (noisy_symmetric, the race's factor, seed and noise)
    growth = RaceConfig.from_dict(unbroken.config).growth("noisy_symmetric")
    assert growth == Growth(2, None, "noisy_symmetric", 10.0, 0)
    wide = clone(small, growth=growth)
    assert evaluate(wide, windows, SETTINGS["batch_size"])[0] == grown["val_loss"]


def test_parameter_count_changes_at_the_growth_step_and_flops_count_both_phases(unbroken):
    sizes = unbroken.info["contestants"][STAGED]
    small, wide = unbroken.models["source"], unbroken.models[STAGED]
    assert sizes["kind"] == "staged" and sizes["grow_at"] == GROW_AT and sizes["grows_into"] == "noisy_symmetric"
    assert sizes["params_before"] == sum(p.numel() for p in small.parameters())
    assert sizes["params"] == sum(p.numel() for p in wide.parameters()) > sizes["params_before"]
    assert sizes["flop_params"] > sizes["flop_params_before"] == unbroken.info["source"]["flop_params"]
    per_step = SETTINGS["batch_size"] * SETTINGS["seq_len"]
    for step, record in by_step(unbroken, STAGED).items():
        small_steps, wide_steps = min(step, GROW_AT), max(0, step - GROW_AT)
        assert record["flops"] == 6.0 * per_step * (sizes["flop_params_before"] * small_steps
                                                    + sizes["flop_params"] * wide_steps)
    final = unbroken.final(STAGED)
    assert final["step"] == SETTINGS["steps"]
    assert final["flops"] < 6.0 * sizes["flop_params"] * final["tokens"]  # cheaper than wide all along
    assert training_flops(final["tokens"], sizes["flop_params"], (GROW_AT * per_step, sizes["flop_params_before"])) \
        == final["flops"]


def test_the_loss_figure_and_the_report_mark_the_growth(unbroken):
    grown = by_step(unbroken, STAGED)[GROW_AT]
    for fig in (loss_figure(unbroken), loss_figure(unbroken.records)):
        marker = [t for t in fig.data if t.name == f"{STAGED}: grown at step {GROW_AT}"]
        assert len(marker) == 1 and list(marker[0].x) == [grown["tokens"]]
        assert list(marker[0].y) == [grown["val_loss"]]
        assert [s.x0 for s in fig.layout.shapes if s.line.dash == "dot"] == [grown["tokens"]]
    assert [s.x0 for s in loss_figure(unbroken, x="flops").layout.shapes] == [grown["flops"]]
    assert sum(t.name == f"{STAGED}: grown at step {GROW_AT}" for t in race_figure(unbroken).data) >= 3
    assert f"grown at step {GROW_AT}" in race_report_html(unbroken)
    plain = loss_figure([r for r in unbroken.records if r["contestant"] == "source"])
    assert not plain.layout.shapes and len(plain.data) == 1


# --------------------------------------------------------------------------- #
# Resuming across the growth
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("stop_after, grown", [(6, False), (14, True)])
def test_a_run_stopped_before_or_after_the_growth_resumes_bit_exactly(kit, tmp_path, unbroken, stop_after, grown):
    model, tok, corpus = kit
    run_dir = tmp_path / "run"
    stopped = staged_race(kit, run_dir=run_dir, checkpoint_every=2, stop_event=StopAfter(stop_after))
    assert stopped.status(STAGED)[0] == "stopped"
    saved = read_checkpoint(run_dir, STAGED)
    assert saved["grown"] is grown and (saved["step"] >= GROW_AT) is grown
    cfg = run_config(run_dir)
    resumed = race(model, tokenizer=tok, run_dir=run_dir, resume=True, **{**cfg.race_arguments(), "data": corpus})
    rows = [sorted([r[k] for k in KEYS] for r in result.records) for result in (resumed, unbroken)]
    assert rows[0] == rows[1]
    for a, b in zip(resumed.models[STAGED].parameters(), unbroken.models[STAGED].parameters(), strict=True):
        assert torch.equal(a, b)
    assert load_run(run_dir).info["contestants"][STAGED]["grow_at"] == GROW_AT
