"""Recipes per contestant: specs, the clone-aware learning rate, continuing at the source's final lr, resume."""

from __future__ import annotations

import json

import pytest
import torch
from racekit import TINY, StopAfter, one_line_refusal, save_source, setup

from hyperclone.cli.main import main
from hyperclone.core.clone import clone
from hyperclone.training.contestants import divided_weights, make_optimizer, set_lr
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import Growth
from hyperclone.training.runs import run_config
from hyperclone.training.config import ADOPTED_RECIPE, AUTO_SWITCH, ContestantSpec, RaceConfig, Schedule, format_lr, lr_at
from hyperclone.training.setup import final_lr_of, source_card
from hyperclone.training.runs import load_run
from hyperclone.io.sources import read_card
from hyperclone.training.loop import race

RECIPES = ("noisy_symmetric", "noisy_symmetric@clone-aware@lr=3e-3", "random@lr=1e-2")


# --------------------------------------------------------------------------- #
# Specs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("text, spec", [
    ("noisy_symmetric", ContestantSpec("noisy_symmetric")),
    ("noisy_symmetric@lr=3e-4", ContestantSpec("noisy_symmetric", lr=3e-4)),
    ("random@lr=0.003", ContestantSpec("random", lr=3e-3)),
    ("source@continue", ContestantSpec("source", "continue")),
    ("symmetric@clone-aware@warmup=0@schedule=constant", ContestantSpec("symmetric", "clone-aware", None, 0,
                                                                        "constant")),
    (" diagonal @ recipe=paper @ lr=1e-3 ", ContestantSpec("diagonal", lr=1e-3)),
])
def test_a_contestant_spec_parses_and_its_name_reads_back_to_the_same_spec(text, spec):
    parsed = ContestantSpec.parse(text)
    assert parsed == spec and ContestantSpec.parse(parsed.name) == spec
    assert ContestantSpec.parse(spec) is spec


def test_names_are_canonical_so_the_same_recipe_cannot_race_twice():
    assert ContestantSpec("random", lr=3e-3).name == "random@lr=3e-3"
    assert ContestantSpec("noisy_symmetric", "paper").name == "noisy_symmetric"
    for value in (3e-4, 1e-3, 0.0125, 2.5e-5, 1 / 3):
        assert float(format_lr(value)) == value
    cfg = RaceConfig(contestants=("random@lr=3e-3", ContestantSpec("random", lr=0.003)))
    with pytest.raises(HyperCloneError, match="listed twice"):
        cfg.validate()
    cfg = RaceConfig(contestants=("noisy_symmetric", "random@lr=0.01"), steps_for={"random@lr=1e-2": 5})
    cfg.validate()
    assert cfg.budget("random@lr=1e-2") == 5


@pytest.mark.parametrize("text, message", [
    ("noisy", "unknown contestant 'noisy'"),
    ("random@lr=fast", "lr 'fast' is not a number"),
    ("random@lr=-1", "lr must be a positive number"),
    ("random@lr=nan", "lr must be a positive number"),
    ("random@warmup=1.5", "warmup '1.5' is not a number"),
    ("random@schedule=step", "unknown schedule 'step'"),
    ("random@fast", "unknown recipe 'fast'"),
    ("random@clone-aware", "random has none; use it with a clone variant"),
    ("random@continue", "random init has no training to continue"),
    ("random@lr=1e-3@lr=2e-3", "cannot read 'lr=2e-3'"),
    ("random@lr=", "cannot read 'lr='"),
])
def test_a_bad_spec_is_refused_in_one_line(text, message):
    one_line_refusal(message, RaceConfig(contestants=(text,)).validate)


def test_schedules_follow_the_recipe_and_say_how_they_were_chosen():
    cfg = RaceConfig(lr=1e-3, warmup=30, schedule="cosine", source_final_lr=3e-4,
                     contestants=("noisy_symmetric", "random@lr=3e-3", "source@continue", "symmetric@clone-aware"))
    shared, given, cont, aware = (cfg.schedule_for(n) for n in cfg.contestants)
    assert (shared.lr, shared.warmup, shared.chosen) == (1e-3, 30, "paper recipe: shared")
    assert (given.lr, given.warmup, given.chosen) == (3e-3, 30, "given (lr 3e-3)")
    assert (cont.lr, cont.warmup, cont.schedule) == (3e-4, 0, "cosine") and "final lr" in cont.chosen
    assert aware.clone_aware and aware.lr == 1e-3 and not shared.clone_aware
    assert lr_at(0, 100, cont) == 3e-4  # no warm-up: the first step is at the source's final lr
    with pytest.raises(HyperCloneError, match="no model card stating it"):
        RaceConfig(contestants=("source@continue",)).schedule_for("source@continue")


# --------------------------------------------------------------------------- #
# Clone-aware learning rate
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny():
    from racekit import tiny_gpt2

    return tiny_gpt2(300)


@pytest.mark.parametrize("variant", ["symmetric", "noisy_symmetric", "diagonal", "noisy_diagonal"])
def test_clone_aware_gives_exactly_lr_over_k_to_the_divided_weights_and_lr_elsewhere(tiny, variant):
    growth = Growth(2, None, variant, 10.0, 0)
    wide = clone(tiny, growth=growth)
    divided = divided_weights(wide, tiny.config, growth)
    # Independently of the spec: in the symmetric variants a divided matrix's blocks are the source's / 2,
    # so its largest entry is half the source's; the head ([W/2, W/2]) is divided in every variant.
    source = dict(tiny.named_parameters())
    source["lm_head.weight"] = tiny.get_output_embeddings().weight
    halved = {n for n, p in wide.named_parameters() if p.dim() == 2
              and torch.isclose(p.abs().max() * 2, source[n].abs().max(), rtol=1e-6)}
    if variant == "symmetric":
        assert set(divided) == halved
    expected = {"lm_head.weight"} | ({f"transformer.h.{i}.{w}.weight" for i in range(2) for w in
                                      ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
                                     if variant.endswith("symmetric") else set())
    assert set(divided) == expected and set(divided.values()) == {2}

    cfg = RaceConfig(lr=1e-3)
    optimizer = make_optimizer(wide, cfg, divided)
    set_lr(optimizer, 7e-4)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(wide.parameters()))  # every parameter exactly once
    for name, p in wide.named_parameters():
        assert lr_of[id(p)] == (7e-4 / 2 if name in divided else 7e-4), name
        assert decay_of[id(p)] == (0.1 if p.dim() >= 2 else 0.0), name


def test_without_clone_aware_the_optimizer_is_the_two_usual_groups(tiny):
    optimizer = make_optimizer(tiny, RaceConfig(), {})
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert not any("lr_divisor" in g for g in optimizer.param_groups)


# --------------------------------------------------------------------------- #
# Continue: the source's final lr from its card
# --------------------------------------------------------------------------- #
def test_the_final_lr_is_read_from_the_card():
    card = read_card("tiny-gpt2-stdlib")
    assert "lr=0.003" in card["training"]["optimizer"] and "cosine to 0.1 x peak" in card["training"]["schedule"]
    assert final_lr_of(card) == 3e-4
    assert final_lr_of({"training": {"final_lr": 2e-4, "optimizer": "AdamW(lr=0.003)"}}) == 2e-4
    assert final_lr_of({"training": {"optimizer": "AdamW(lr=0.01)", "schedule": "constant after warm-up"}}) == 0.01
    assert final_lr_of({"training": {"optimizer": "AdamW(lr=0.01)"}}) is None and final_lr_of({}) is None


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A checkpoint directory with a model card whose training ended at lr 0.02 x 0.25 = 5e-3."""
    folder = tmp_path_factory.mktemp("carded")
    source = save_source(folder)
    card = {"training": {"optimizer": "AdamW(lr=0.02, betas=(0.9, 0.95))",
                         "schedule": "linear warmup 10 steps, cosine to 0.25 x peak"}}
    (source / "card.json").write_text(json.dumps(card))
    return source, folder / "corpus.txt"


def test_the_cli_races_recipes_and_continue_starts_at_the_cards_final_lr(carded, tmp_path, capsys, monkeypatch):
    source, text = carded
    monkeypatch.setenv("HYPERCLONE_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    rc = main(["race", "--source", str(source), "--data", str(text), "--run-dir", str(run_dir),
               "--contestants", "source@continue,noisy_symmetric@clone-aware,random@lr=1e-2",
               "--steps", "2", "--steps-for", "random@lr=0.01=4", "--batch-size", "4", "--seq-len", "32",
               "--eval-every", "1", "--eval-windows", "2", "--lr", "3e-3", "--warmup", "2", "--device", "cpu",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and source_card(str(source))["training"]
    result = load_run(run_dir)
    assert result.contestants == ["source@continue", "noisy_symmetric@clone-aware", "random@lr=1e-2"]
    first = {r["contestant"]: r["lr"] for r in result.records if r["step"] == 1}
    assert first == {"source@continue": 5e-3, "noisy_symmetric@clone-aware": 3e-3 / 2, "random@lr=1e-2": 1e-2 / 2}
    recipes = {n: c["recipe"] for n, c in result.info["contestants"].items()}
    assert recipes["source@continue"]["warmup"] == 0 and recipes["source@continue"]["lr"] == 5e-3
    assert recipes["noisy_symmetric@clone-aware"]["lr_divided_weights"] == 9  # 4 per layer and the head
    assert result.config["source_final_lr"] == 5e-3 and result.final("random@lr=1e-2")["step"] == 4
    assert "[paper recipe: shared]" not in out and "[given (lr 1e-2)]" in out and "the source's final lr" in out
    assert "at equal tokens" in out and "speed-up against horizon" in (run_dir / "race.html").read_text().lower()


def test_gentle_starts_clone_and_source_at_the_cards_final_lr_rewarmed_and_divides_only_the_clones(
        carded, tmp_path, monkeypatch):
    source, text = carded
    monkeypatch.setenv("HYPERCLONE_CACHE", str(tmp_path / "cache"))
    result = race(str(source), data=str(text), contestants=("noisy_symmetric@gentle", "source@gentle", "random"),
                  run_dir=tmp_path / "run", **{**TINY, "lr": 3e-3, "warmup": 2, "eval_every": 1})
    first = {r["contestant"]: r["lr"] for r in result.records if r["step"] == 1}
    # warm-up 2: step 1 (the first) trains at half the peak; the peak is the card's final lr 5e-3 (shared 3e-3 for random)
    assert first == {"noisy_symmetric@gentle": 5e-3 / 2, "source@gentle": 5e-3 / 2, "random": 3e-3 / 2}
    recipes = {n: c["recipe"] for n, c in result.info["contestants"].items()}
    assert recipes["noisy_symmetric@gentle"]["lr_divided_weights"] == 9  # 4 per layer and the head
    assert recipes["source@gentle"]["lr_divided_weights"] == 0  # nothing of the source was divided
    assert "final lr (model card)" in recipes["source@gentle"]["chosen"]


def test_gentle_without_a_card_uses_the_races_lr_and_says_so_and_is_refused_for_random():
    cfg = RaceConfig(lr=2e-3, warmup=7)
    s = cfg.schedule_for("noisy_symmetric@gentle")
    assert (s.lr, s.warmup, s.clone_aware) == (2e-3, 7, True) and "no model card" in s.chosen
    assert RaceConfig(source_final_lr=3e-4).schedule_for("noisy_symmetric@gentle@lr=1e-4").lr == 1e-4
    with pytest.raises(HyperCloneError, match="random init has no training to continue"):
        ContestantSpec.parse("random@gentle")


def test_the_default_race_uses_the_adopted_recipe_for_the_clone_and_randoms_best_lr():
    cfg = RaceConfig()
    assert cfg.contestants == (f"noisy_symmetric@{ADOPTED_RECIPE}", "random") and ADOPTED_RECIPE == "auto"
    assert cfg.lr == 3e-3  # random init's best of {1e-3, 3e-3, 1e-2} in benchmarks/recipe_sweep.py
    assert cfg.schedule_for("noisy_symmetric").chosen == "paper recipe: shared"  # the paper's recipe, by name


@pytest.mark.parametrize("steps, chosen, name", [(10, "gentle", "noisy_symmetric@gentle"),
                                                 (int(AUTO_SWITCH * 1000 / 64) + 1, "paper", "noisy_symmetric")])
def test_the_auto_recipe_follows_the_races_horizon(steps, chosen, name):
    cfg = RaceConfig(contestants=("noisy_symmetric@auto", "random"), steps=int(steps), batch_size=4, seq_len=16,
                     steps_for={"noisy_symmetric@auto": 5})
    cfg.resolve_auto(wide_params=1000)  # 64 tokens a step: 10 steps = 0.64 tokens per wide parameter
    assert cfg.contestants == (name, "random") and cfg.steps_for == {name: 5}
    assert cfg.auto_recipe.startswith(f"auto chose {chosen}: ") and name in cfg.auto_recipe
    with pytest.raises(HyperCloneError, match="auto recipe is chosen when the race starts"):
        RaceConfig().schedule_for("noisy_symmetric@auto")
    with pytest.raises(HyperCloneError, match="random init has no training to continue"):
        ContestantSpec.parse("random@auto")


def test_a_race_records_what_auto_chose_and_why(tmp_path):
    folder = tmp_path / "auto"
    folder.mkdir()
    source = save_source(folder)
    result = race(str(source), data=str(folder / "corpus.txt"), contestants=("noisy_symmetric@auto", "random"),
                  run_dir=tmp_path / "run", **TINY)
    assert result.contestants == ["noisy_symmetric@gentle", "random"]  # a few steps: far below 5 per parameter
    assert result.config["auto_recipe"].startswith("auto chose gentle: ")
    assert result.config["auto_recipe"] in result.table()


def test_continue_without_a_card_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "nocard"
    folder.mkdir()
    source = save_source(folder)
    one_line_refusal("no model card stating it", race, str(source), data=str(folder / "corpus.txt"),
                     contestants=("source@continue",), **TINY)


# --------------------------------------------------------------------------- #
# run.json and resume
# --------------------------------------------------------------------------- #


@pytest.mark.slow
def test_recipes_round_trip_through_run_json_and_a_resumed_run_is_bit_exact(tmp_path):
    model, tok, corpus = setup(tmp_path)
    specs = [RECIPES[0], ContestantSpec.parse(RECIPES[1]), RECIPES[2]]
    unbroken = race(model, tokenizer=tok, data=corpus, contestants=specs, **TINY)
    stopped = race(model, tokenizer=tok, data=corpus, contestants=specs, run_dir=tmp_path / "run",
                   checkpoint_every=2, stop_event=StopAfter(13), **TINY)
    assert {stopped.status(n)[0] for n in RECIPES} == {"stopped"}
    cfg = run_config(tmp_path / "run")
    assert cfg.contestants == RECIPES and [cfg.spec(n) for n in RECIPES][1].recipe == "clone-aware"
    resumed = race(model, tokenizer=tok, run_dir=tmp_path / "run", resume=True,
                   **{**cfg.race_arguments(), "data": corpus, "device": "cpu"})
    keys = ("contestant", "step", "lr", "train_loss", "val_loss", "data_sha1")
    assert sorted([r[k] for k in keys] for r in resumed.records) == sorted([r[k] for k in keys] for r in unbroken.records)
    for name in RECIPES:
        for a, b in zip(resumed.models[name].parameters(), unbroken.models[name].parameters()):
            assert torch.equal(a, b)
    lrs = {n: load_run(tmp_path / "run").info["contestants"][n]["recipe"]["lr"] for n in RECIPES}
    assert lrs == {RECIPES[0]: 3e-3, RECIPES[1]: 3e-3, RECIPES[2]: 1e-2}
    assert Schedule(**{k: v for k, v in load_run(tmp_path / "run").info["contestants"][RECIPES[1]]["recipe"].items()
                       if k in Schedule.__dataclass_fields__}).clone_aware
