"""``hyperclone reproduce``: the plan (sweeps, horizons, seeds, variants), the report's arithmetic on made-up
curves, one-line refusals, and a miniature of the whole command (tiny budgets) whose report is checked
against its own run logs."""

from __future__ import annotations

import html
import json
import math

import pytest
from clirun import refused, run_cli

from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import format_lr
from hyperclone.training.paper_report import (b_text, claim, compare, dip, load_report, shipped_reports,
                                              summary_sentence)
from hyperclone.training.reproduce import (PlannedRun, ReproduceConfig, grown_grid, next_lr, planned_runs,
                                           sweep_runs)
from hyperclone.training.runs import load_run
from hyperclone.training.speedups import tokens_to_reach

CFG = ReproduceConfig(wide_params=1000, batch_size=2, seq_len=5,  # 10 tokens a step: 20 per param = 2000 steps
                      lrs=(1e-3, 3e-3, 1e-2))


def finals_for(runs, lr_loss: dict) -> dict:
    return {r.name: lr_loss[(r.kind, r.lr)] for r in runs}


# --------------------------------------------------------------------------- #
# The plan
# --------------------------------------------------------------------------- #
def test_the_lr_ladder_and_a_grid_that_grows_past_a_winning_edge():
    assert (next_lr(1e-3, up=False), next_lr(1e-2, up=True), next_lr(3e-3, up=True), next_lr(3e-3, up=False)) \
        == (3e-4, 3e-2, 1e-2, 1e-3)
    assert grown_grid((1e-3, 3e-3, 1e-2), [3.0, 2.9, 3.1]) is None  # the winner is inside
    assert grown_grid((1e-3, 3e-3, 1e-2), [3.0, 2.9, None]) is None  # not known yet
    assert grown_grid((1e-3, 3e-3, 1e-2), [3.0, 2.9, 2.8]) == (1e-3, 3e-3, 1e-2, 3e-2)
    assert grown_grid((1e-3, 3e-3, 1e-2), [2.7, 2.9, 2.8]) == (3e-4, 1e-3, 3e-3, 1e-2)


def test_the_sweep_comes_first_then_horizons_seeds_and_variants_from_its_winners():
    runs, complete = planned_runs(CFG, {})
    assert not complete and [(r.kind, r.lr, r.horizon) for r in runs] == [
        (k, lr, 20.0) for k in ("random", "noisy_symmetric") for lr in (1e-3, 3e-3, 1e-2)]
    finals = finals_for(runs, {("random", 1e-3): 3.2, ("random", 3e-3): 3.0, ("random", 1e-2): 3.1,
                               ("noisy_symmetric", 1e-3): 2.8, ("noisy_symmetric", 3e-3): 2.9,
                               ("noisy_symmetric", 1e-2): math.inf})  # the clone's best (1e-3) is at the edge
    runs, complete = planned_runs(CFG, finals)
    assert not complete and PlannedRun(20.0, "noisy_symmetric", 3e-4, 0).name in {r.name for r in runs}
    finals[PlannedRun(20.0, "noisy_symmetric", 3e-4, 0).name] = 2.85  # now 1e-3 wins inside the grid
    runs, complete = planned_runs(CFG, finals)
    later = {r.name for r in runs} - set(finals)
    assert complete and later == {
        "h50-random-lr3e-3-seed0", "h50-noisy_symmetric-lr3e-3-seed0",  # past the sweep: W and the paper clone
        "h5-random-lr3e-3-seed0", "h5-random-lr1e-2-seed0",  # before it: W and its better neighbour too
        "h5-noisy_symmetric-lr3e-3-seed0", "h5-noisy_symmetric-lr1e-3-seed0",  # the paper's lr and the clone's best
        "h20-random-lr3e-3-seed1", "h20-noisy_symmetric-lr3e-3-seed1",
        "h20-random-lr3e-3-seed2", "h20-noisy_symmetric-lr3e-3-seed2",
        "h20-symmetric-lr3e-3-seed0", "h20-diagonal-lr3e-3-seed0", "h20-noisy_diagonal-lr3e-3-seed0"}
    assert runs[len(finals)].horizon == 50.0  # the longest runs start first ...
    assert [r.horizon for r in runs[len(finals):]] == sorted((r.horizon for r in runs[len(finals):]), reverse=True)
    # ... and the short ones fill the workers' last gaps
    thorough = ReproduceConfig(**{**CFG.to_dict(), "thorough": True})
    extra = {r.name for r in planned_runs(thorough, finals)[0]} - {r.name for r in runs}
    assert extra == {"h50-random-lr1e-2-seed0", "h50-noisy_symmetric-lr1e-3-seed0"}
    random_grew = {**finals, "h20-random-lr1e-2-seed0": 2.95, "h20-random-lr3e-2-seed0": 2.9}  # grows twice
    random_grew["h20-random-lr0.1-seed0"] = 3.6  # W = 3e-2: outside the clone's grid
    runs, complete = planned_runs(CFG, random_grew)
    assert complete and "h20-noisy_symmetric-lr3e-2-seed0" in {r.name for r in runs}  # the paper's clone at W
    assert len({r.name for r in runs}) == len(runs)


def test_each_run_is_a_race_with_one_contestant_and_a_complete_schedule():
    run = PlannedRun(5.0, "random", 3e-3, 1)
    settings = run.race_settings(CFG)
    assert settings["steps"] == 500 and settings["contestants"] == ("random",) and settings["seed"] == 1
    assert settings["schedule"] == "cosine" and settings["lr"] == 3e-3
    words = run.command(CFG, tmp := __import__("pathlib").Path("/x"), resume=False)
    assert words[words.index("--steps") + 1] == "500" and words[words.index("--lr") + 1] == "3e-3"
    assert run.command(CFG, tmp, resume=True)[-4:] == ["--resume", "--no-progress", "--device", "cpu"]
    assert len(sweep_runs(CFG, {"random": (1e-3,), "noisy_symmetric": (1e-3, 3e-3)})) == 3


@pytest.mark.parametrize("settings, words", [
    (dict(horizons=(5.0, 50.0)), "sweep horizon 20 must be one of the horizons"),
    (dict(lrs=(1e-3, 3e-3)), "at least 3 learning rates"),
    (dict(seeds=(0, 0)), "seeds must be distinct"),
    (dict(variants=("wobbly",)), "unknown clone variant 'wobbly'"),
    (dict(horizons=(-1.0, 20.0)), "each above 0"),
])
def test_settings_that_cannot_work_are_one_line(settings, words):
    with pytest.raises(HyperCloneError, match=words):
        ReproduceConfig(**settings).validate()


# --------------------------------------------------------------------------- #
# The report's arithmetic, on made-up curves
# --------------------------------------------------------------------------- #
SOURCE = {"train_tokens": 1000, "flop_params": 10}


def run(name, curve, status="finished"):
    return {"name": name, "curve": curve, "status": status, "final": curve[-1][1], "start": curve[0][1],
            "params": 100, "flop_params": 80, "source": SOURCE}


CLONE = run("clone", [(0, 3.0), (100, 3.4), (200, 3.0), (300, 2.6), (400, 2.4)])
RANDOM = run("random", [(0, 7.6), (100, 4.0), (200, 3.2), (300, 2.8), (400, 2.5)])


def test_speedup_b_is_randoms_tokens_over_the_clones_tokens_to_randoms_final_loss():
    result = compare(CLONE, RANDOM, per_param=100)
    needed = tokens_to_reach(CLONE["curve"], 2.5)  # 350: halfway between 2.6 at 300 and 2.4 at 400
    assert needed == pytest.approx(350)
    assert result["b"]["value"] == pytest.approx(400 / 350) and result["b"]["measured"]
    assert result["b"]["with_source"] == pytest.approx(6 * 80 * 400 / (6 * 80 * 350 + 6 * 10 * 1000))
    assert result["random_ends_below_clone_start"]  # 2.5 < 3.0: random init did catch up
    assert result["a"]["value"] is None and result["a"]["bound"] == [">", 1.0]  # random never got to 2.4
    assert b_text(result["a"]) == "> 1.00x (a bound)"


def test_the_dip_after_cloning_has_a_depth_and_a_length():
    assert dip(CLONE, per_param=100) == {"depth": 0.4, "peak_at": 1.0, "back_at": 2.0}
    assert dip(run("never back", [(0, 3.0), (100, 3.5), (200, 3.2)]), 100)["back_at"] is None
    assert dip(run("no dip", [(0, 3.0), (100, 2.9)]), 100) == {"depth": 0.0, "peak_at": 0.0, "back_at": 0.0}


def test_a_diverged_clone_has_no_speedup_and_a_head_start_is_unbounded():
    diverged = compare(run("clone", [(0, 3.0), (100, 9.0)], status="diverged"), RANDOM, 100)
    assert diverged["b"]["value"] is None and b_text(diverged["b"]) == "diverged"
    ahead = compare(run("clone", [(0, 2.0), (100, 1.9)]), RANDOM, 100)
    assert b_text(ahead["b"]).startswith("unbounded")


def fake_report(b_seeds, b_long, long_bound=None):
    rows = [{"b": {"value": v}} for v in b_seeds]
    return {"seeds": {"horizon": 20.0, "rows": rows, "b_mean": sum(b_seeds) / len(b_seeds),
                      "b_sd": 0.1 if len(b_seeds) > 1 else None},
            "horizons": [{"horizon": 20.0, "recipes": [{"recipe": "paper", "b": {"value": 1.5, "measured": True,
                                                                                   "bound": None, "message": ""}}]},
                         {"horizon": 50.0, "recipes": [{"recipe": "paper", "b": {
                             "value": b_long, "measured": b_long is not None, "bound": long_bound,
                             "message": "", "tokens_clone": None}}]}]}


def test_the_claim_and_the_summary_sentence_come_from_the_numbers():
    report = fake_report([2.1, 2.3, 2.5], None, long_bound=["<", 1.0])
    report["claim"] = claim(report)
    assert report["claim"]["at_sweep"]["met"] and not report["claim"]["at_longest"]["met"]
    assert report["claim"]["measured_at"] == [20.0]
    sentence = summary_sentence(CFG, report)
    assert "2.30x ± 0.1 (mean ± sd of 3 seeds) at 20" in sentence and "< 1.00x (a bound) at 50" in sentence
    assert sentence.endswith("holds at 20 only.")


def test_a_damaged_report_is_one_line(tmp_path):
    (tmp_path / "report.json").write_text('{"summary": "x"}')
    with pytest.raises(HyperCloneError, match="lacks config"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{oops")
    with pytest.raises(HyperCloneError, match="not a readable report"):
        load_report(tmp_path)


# --------------------------------------------------------------------------- #
# The command
# --------------------------------------------------------------------------- #
MINI = ["--horizons", "0.001,0.002", "--sweep-horizon", "0.001", "--lrs", "1e-4,3e-4,1e-3", "--batch-size", "2",
        "--seq-len", "16", "--warmup", "2", "--eval-every", "5", "--eval-windows", "2", "--seeds", "0,1",
        "--variants", "noisy_symmetric,diagonal", "--data", "builtin", "--yes"]


def test_bad_flags_and_an_occupied_out_are_refused_in_one_line(tmp_path):
    assert "--horizons: expected numbers" in refused("reproduce", "--horizons", "5,x", "--out", str(tmp_path / "r"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    assert "is not empty" in refused("reproduce", "--out", str(taken))
    assert (taken / "mine.txt").read_text() == "keep me"
    assert "nothing to resume" in refused("reproduce", "--out", str(tmp_path / "new"), "--resume")


def agrees_with_its_run_logs(report: dict, runs_dir) -> None:
    """Every run of the report is a complete run log, and each horizon's (b) is random init's tokens ÷ the tokens
    the clone's own log needs to reach random init's final loss (recomputed here from the logs)."""
    assert sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) == sorted(report["runs"])
    assert all(r["status"] in ("finished", "diverged") for r in report["runs"].values())
    for section in report["horizons"]:
        base = load_run(runs_dir / f"h{section['horizon']:g}-random-lr{format_lr(section['random']['lr'])}-seed0")
        for recipe in section["recipes"]:
            name = f"h{section['horizon']:g}-{report['config']['clone']}-lr{format_lr(recipe['lr'])}-seed0"
            clone = load_run(runs_dir / name).curve(report["config"]["clone"])
            assert recipe["random_final"] == base.curve("random")[-1][1]
            if recipe["b"]["measured"]:
                needed = tokens_to_reach(clone, recipe["random_final"])
                assert recipe["b"]["value"] == pytest.approx(base.curve("random")[-1][0] / needed)


SHIPPED = "paper-micro-gpt2"


def test_the_shipped_report_agrees_with_its_run_logs_says_how_it_was_made_and_stays_small():
    path = shipped_reports()[SHIPPED]  # it ships with the package: a KeyError here means it went missing
    report = load_report(path)
    agrees_with_its_run_logs(report, path / "runs")
    assert report["command"].startswith("hyperclone reproduce") and report["machine"]["cpu_count"]
    assert report["finished"][:4].isdigit() and report["seconds"] > 0
    assert report["config"]["source"] == "micro-gpt2-stdlib" and report["config"]["horizons"] == [5.0, 20.0, 50.0]
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 2 * 2**20, f"the shipped report takes {size} bytes"


@pytest.mark.slow
def test_a_miniature_report_is_complete_and_agrees_with_its_run_logs(tmp_path):
    out = tmp_path / "report"
    code, stdout, err = run_cli("reproduce", "--source", "micro-gpt2-stdlib", "--out", str(out), *MINI)
    assert code == 0, err[-3000:]
    assert "plan: 11 runs" in stdout and " to " in stdout.splitlines()[0]  # a grid that grows adds runs
    report = load_report(out)
    assert report["summary"] in stdout and html.escape(report["summary"]) in (out / "report.html").read_text()
    assert len(report["runs"]) >= 11
    agrees_with_its_run_logs(report, out / "runs")
    assert [r["seed"] for r in report["seeds"]["rows"]] == [0, 1]
    assert [v["variant"] for v in report["variants"]] == ["noisy_symmetric", "diagonal"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.jsonl")}
    code, stdout, err = run_cli("reproduce", "--source", "micro-gpt2-stdlib", "--out", str(out), *MINI, "--resume")
    assert code == 0, err[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.jsonl")} == before  # nothing re-run
    assert len(json.loads((out / "reproduce.json").read_text())["sessions"]) == 2
    line = refused("reproduce", "--source", "micro-gpt2-stdlib", "--out", str(out), *MINI[:-1], "--warmup", "3",
                   "--resume")
    assert "other settings (warmup)" in line


def test_the_paper_preset_races_the_settings_of_the_shipped_reports_seed_0_runs():
    from hyperclone.teach.lesson import PAPER_MICRO

    report = load_report(shipped_reports()[SHIPPED])
    cfg = ReproduceConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["config"].items()})
    settings = PlannedRun(cfg.sweep_horizon, "random", report["sweep"]["winners"]["random"], 0).race_settings(cfg)
    for name, value in settings.items():
        if name not in ("contestants", "checkpoint_every"):
            assert getattr(PAPER_MICRO, name) == value, name
    assert PAPER_MICRO.contestants == (cfg.clone, "random")  # the paper's recipe: one shared lr, W
