"""The race: fair data, exact symmetry of the plain clone, live records, faults handled one by one."""

from __future__ import annotations

import hashlib
import math
import threading

import pytest
import torch
from racekit import TINY

from hyperclone.training import loop as train
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.grow import split_blocks
from hyperclone.core.symmetry import symmetry_by_tensor
from hyperclone.training.contestants import flop_parameters
from hyperclone.training.loop import RaceConfig, lr_at, race
from hyperclone.core.verify import TOLERANCE, rounding_tolerance

ALL = ("symmetric", "noisy_symmetric", "random", "source")


@pytest.fixture(scope="module")
def full_race(kit):
    """One race of every kind of contestant, with the events its callback received."""
    model, tok, corpus = kit
    received = []
    result = race(model, tokenizer=tok, data=corpus, contestants=ALL, callback=received.append,
                  **{**TINY, "steps": 6})
    return result, received


def is_wide_random(model) -> bool:
    return not hasattr(model, "hyperclone_plan") and model.config.n_embd == 64


# --------------------------------------------------------------------------- #
# Fairness and what the clone starts from
# --------------------------------------------------------------------------- #
def test_every_contestant_trains_on_the_same_batches_in_the_same_order(full_race, kit):
    result, _ = full_race
    _, _, corpus = kit
    chain = ""  # the sha1 chain the race records, recomputed from the corpus directly
    expected = {0: ""}
    for step in range(6):
        x, _ = corpus.get_batch("train", TINY["batch_size"], TINY["seq_len"], step=step, seed=0)
        chain = hashlib.sha1(chain.encode() + x.numpy().tobytes()).hexdigest()
        expected[step + 1] = chain
    for name in ALL:
        assert [r["data_sha1"] for r in result.history(name)] == [expected[r["step"]] for r in result.history(name)]
    assert result.same_batches()
    assert "verified: identical batch digests" in result.fairness


def test_clones_start_exactly_where_the_source_is(full_race, kit):
    result, _ = full_race
    model, _, corpus = kit
    with torch.no_grad():
        windows = corpus.validation_windows(TINY["eval_windows"], TINY["seq_len"])
        logit_scale = float(model(input_ids=windows[:, :-1]).logits.abs().max())
    # A token's loss moves by at most 2 max |logit difference|, and verify's float32 tolerance (eps x the
    # reductions, see hyperclone/verify.py) bounds that difference relative to max |logit|.
    loss_tol = 2 * TOLERANCE[torch.float32] * logit_scale
    start = {name: result.history(name)[0] for name in ALL}
    for name in ("symmetric", "noisy_symmetric"):
        assert start[name]["val_loss"] == pytest.approx(start["source"]["val_loss"], abs=loss_tol)
        assert start[name]["val_accuracy"] == start["source"]["val_accuracy"]
    assert start["random"]["val_loss"] != pytest.approx(start["source"]["val_loss"], abs=loss_tol)


def test_plain_symmetric_clone_stays_exactly_symmetric_while_noise_breaks_symmetry(full_race):
    """Without noise every copy gets the same gradient, so on CPU the copies stay identical to the bit."""
    result, _ = full_race
    wide = result.models["symmetric"]
    # A cosine of identical copies is 1 up to the rounding of its float32 sums of squares, none longer than the
    # largest tensor: the random-walk bound over that many positive terms.
    cosine_tol = rounding_tolerance(torch.float32, max(p.numel() for p in wide.parameters()))
    assert [r["symmetry"] for r in result.history("symmetric")] == [pytest.approx(1.0, abs=cosine_tol)] * 4
    noisy = [r["symmetry"] for r in result.history("noisy_symmetric")]
    assert noisy[-1] < 0.99 and noisy[-1] < noisy[0]
    assert all(r["symmetry"] is None for r in result.history("random") + result.history("source"))

    assert min(symmetry_by_tensor(wide, 2).values()) == pytest.approx(1.0, abs=cosine_tol)
    w = wide.transformer.h[0].mlp.c_proj.weight.detach().T  # Conv1D stores [in, out]
    blocks = split_blocks(w, 2, 2)
    assert torch.equal(blocks[0, 0], blocks[1, 1]) and torch.equal(blocks[0, 1], blocks[1, 0])


def test_records_arrive_live_and_side_by_side(full_race):
    result, received = full_race
    metrics = [e for e in received if e["event"] == "metrics"]
    assert metrics == result.records
    # round-robin: everyone's step-k record comes before anyone's step-(k+2) record
    steps = [e["step"] for e in metrics]
    assert steps == sorted(steps)
    assert [e["contestant"] for e in metrics[:4]] == list(ALL)
    assert [e["event"] for e in received if e["event"] != "metrics"] == ["finished"] * 4
    r = metrics[-1]
    assert r["tokens"] == 6 * TINY["batch_size"] * TINY["seq_len"]
    assert r["flops"] == 6 * result.info["contestants"][r["contestant"]]["flop_params"] * r["tokens"]
    assert r["train_loss"] > 0 and 0 <= r["val_accuracy"] <= 1 and r["lr"] > 0 and r["seconds"] > 0


def test_table_and_curves_name_every_contestant(full_race):
    result, _ = full_race
    table = result.table()
    for name in ALL:
        assert name in table
    assert "speed-up over random init" in table
    assert "unknown" in table  # a model object with no record of its training: the FLOPs view says so
    assert result.curves_table().splitlines()[0].split() == ["step", "tokens", *ALL]


# --------------------------------------------------------------------------- #
# Faults
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_nan_loss_stops_that_contestant_and_the_others_finish(kit, monkeypatch):
    model, tok, corpus = kit
    real = train.loss_on
    calls = {"n": 0}

    def poisoned(m, x, y):
        loss = real(m, x, y)
        if is_wide_random(m):
            calls["n"] += 1
            if calls["n"] > 3:  # random's 4th step (index 3) goes bad
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train, "loss_on", poisoned)
    result = race(model, tokenizer=tok, data=corpus, contestants=("source", "random"), **{**TINY, "steps": 6})
    status, message = result.status("random")
    assert status == "diverged" and "step 3" in message and "nan" in message
    assert result.status("source")[0] == "finished"
    assert result.final("source")["step"] == 6
    assert result.final("random")["step"] == 2  # its last good evaluation
    assert all(torch.isfinite(p).all() for p in result.models["random"].parameters())  # bad step not applied
    assert result.complete


def test_out_of_memory_is_one_line_with_a_batch_size_to_try(kit, monkeypatch):
    model, tok, corpus = kit

    def oom(m, x, y):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train, "loss_on", oom)
    with pytest.raises(HyperCloneError, match=r"out of memory .* try batch_size=2 \(--batch-size 2\)"):
        race(model, tokenizer=tok, data=corpus, contestants=("random",), **TINY)


def test_stop_event_stops_everyone_cleanly_between_steps(kit):
    model, tok, corpus = kit
    stop = threading.Event()

    def stop_after_first_interval(event):
        if event["event"] == "metrics" and event["step"] == 2 and event["contestant"] == "random":
            stop.set()

    result = race(model, tokenizer=tok, data=corpus, contestants=("source", "random"),
                  callback=stop_after_first_interval, stop_event=stop, **TINY)
    assert [result.status(n)[0] for n in ("source", "random")] == ["stopped", "stopped"]
    assert max(r["step"] for r in result.records) == 2
    assert not result.complete


@pytest.mark.slow
def test_a_longer_budget_for_random_lets_speedup_a_be_measured(kit):
    model, tok, corpus = kit
    result = race(model, tokenizer=tok, data=corpus, contestants=("source", "random"),
                  steps_for={"random": 4}, **{**TINY, "steps": 2})
    assert result.final("source")["step"] == 2 and result.final("random")["step"] == 4
    assert "random 4" in result.fairness
    assert len(result.speedups()) == 2


# --------------------------------------------------------------------------- #
# Settings and small pieces
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs, message", [
    (dict(contestants=("noisy", "random")), "unknown contestant 'noisy'"),
    (dict(contestants=("random", "random")), "listed twice"),
    (dict(steps_for={"source": 5}), "not racing"),
    (dict(precision="fp16"), "use bf16"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(schedule="step"), "unknown schedule"),
    (dict(seq_len=128), "longer than the model's context of 64"),
])
def test_bad_settings_fail_in_one_line_before_training(kit, kwargs, message):
    model, tok, corpus = kit
    args = {**TINY, "contestants": ("noisy_symmetric", "random"), **kwargs}
    with pytest.raises(HyperCloneError, match=message):
        race(model, tokenizer=tok, data=corpus, **args)


def test_learning_rate_warms_up_then_follows_the_schedule():
    cfg = RaceConfig(lr=1.0, warmup=10, min_lr_ratio=0.1, schedule="cosine")
    assert [lr_at(s, 100, cfg) for s in (0, 4, 9)] == [pytest.approx(v) for v in (0.1, 0.5, 1.0)]
    assert lr_at(10, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(100, 100, cfg) == pytest.approx(0.1)
    assert lr_at(70, 100, RaceConfig(lr=1.0, warmup=10, schedule="constant")) == 1.0
    assert lr_at(55, 100, RaceConfig(lr=1.0, warmup=10, min_lr_ratio=0.0, schedule="linear")) == pytest.approx(0.5)


def test_flop_parameters_leave_out_lookups_but_count_a_tied_head(kit):
    model, _, _ = kit  # tied GPT-2: wte is also the head, wpe is only looked up
    total = sum(p.numel() for p in model.parameters())
    assert flop_parameters(model) == total - model.transformer.wpe.weight.numel()
    from hyperclone import clone

    wide = clone(model, 2)  # untied: wte is a lookup, lm_head a separate matrix
    wide_total = sum(p.numel() for p in wide.parameters())
    assert flop_parameters(wide) == wide_total - wide.transformer.wte.weight.numel() - wide.transformer.wpe.weight.numel()


def test_a_source_named_as_built_in_takes_its_training_tokens_from_the_card(kit, monkeypatch):
    import hyperclone.io.sources as sources

    model, tok, corpus = kit
    monkeypatch.setattr(sources, "BUILTIN_NAMES", ("tiny-test",))
    monkeypatch.setattr(sources, "load_source", lambda name, device=None, **kwargs: (model, tok))
    monkeypatch.setattr(sources, "read_card", lambda name: {"training": {"tokens_seen": 10_000}})
    result = race("tiny-test", data=corpus, contestants=("noisy_symmetric", "random"), **{**TINY, "steps": 2})
    assert result.info["source"]["train_tokens"] == 10_000
    assert result.info["source"]["train_tokens_from"] == "model card of tiny-test"
    assert result.source_flops() == 6 * flop_parameters(model) * 10_000
    assert all(s.value_with_source is not None or s.value is None for s in result.speedups())
    assert not math.isnan(result.source_flops())


@pytest.mark.slow
def test_bf16_autocast_and_then_fp32_in_the_same_process(kit):
    """A notebook or the dashboard may race in bf16, then in fp32: accelerate's settings must follow."""
    model, tok, corpus = kit
    args = dict(tokenizer=tok, data=corpus, contestants=("source", "random"), **{**TINY, "steps": 2})
    bf16 = race(model, precision="bf16", **args)
    assert bf16.config["precision"] == "bf16" and "precision bf16" in bf16.fairness
    assert all(math.isfinite(r["val_loss"]) for r in bf16.records)
    fp32 = race(model, **args)
    assert fp32.config["precision"] == "fp32"
    assert fp32.final("random")["val_loss"] != bf16.final("random")["val_loss"]
    assert next(model.parameters()).dtype == torch.float32 and not model.training  # the caller's model untouched
