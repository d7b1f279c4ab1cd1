"""Recorded races: the shipped run logs load, say how they were made, and stay small; bad ones are skipped."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from racekit import one_line_refusal

from hyperclone.training.recorded import RECORD_FILE, RUNS_DIR, read_record, recorded_races, write_record
from hyperclone.io.sources import BUILTIN_NAMES

SHIPPED = recorded_races()


def test_every_tiny_source_has_a_recorded_race_under_one_megabyte_in_all():
    """The tiny sources' races tell the head-start story; the micro sources are for ``hyperclone reproduce``, whose
    report ships beside them (tests/test_reproduce.py checks it)."""
    assert sorted({r.load().config["source"] for r in SHIPPED}) == sorted(n for n in BUILTIN_NAMES
                                                                          if n.startswith("tiny-"))
    total = sum(f.stat().st_size for r in SHIPPED for f in r.path.rglob("*") if f.is_file())
    assert total < 1024 * 1024, f"recorded races take {total} bytes"


@pytest.mark.parametrize("recorded", SHIPPED, ids=[r.name for r in SHIPPED])
def test_a_recorded_race_is_complete_fair_and_says_how_it_was_made(recorded):
    result = recorded.load()
    assert result.complete and result.same_batches
    names = [n.partition("@")[0] for n in result.contestants]
    if "symmetric" in names:  # chapter 5's race: the exact clone against the noisy one, random init as the baseline
        assert {"symmetric", "noisy_symmetric", "random"} <= set(names)
    else:  # a speed-up race: the paper's recipe and the best one, random init and the source
        assert {"random", "source"} <= set(names) and sum(n == "noisy_symmetric" for n in names) >= 2
    assert len({result.config.get("steps")} | {result.final(n)["step"] for n in result.contestants}) == 1
    assert result.config["schedule"] == "constant"  # every evaluation is a fair horizon
    assert recorded.command.startswith("python benchmarks/record_races.py ")
    assert recorded.machine and recorded.date[:4].isdigit() and recorded.label.startswith("recorded · ")
    assert result.horizon(result.contestants[0])  # the speed-up-vs-horizon figure has points


def test_a_recorded_race_shows_the_symmetric_clone_stay_identical_and_the_noisy_one_drift_apart():
    """Chapter 5's race: symmetric's copies stay identical (cosine 1 up to float32 rounding) at every evaluation,
    noisy_symmetric's fall clearly below where they started."""
    races = [r.load() for r in SHIPPED if {"symmetric", "noisy_symmetric"} <= set(r.load().contestants)]
    assert races, "no recorded race has both symmetric and noisy_symmetric"
    eps = torch.finfo(torch.float32).eps
    for result in races:
        exact = [r["symmetry"] for r in result.records if r["contestant"] == "symmetric"]
        noisy = [r["symmetry"] for r in result.records if r["contestant"] == "noisy_symmetric"]
        assert len(exact) == len(noisy) > 10
        assert all(abs(s - 1.0) <= 8 * eps for s in exact), max(abs(s - 1.0) for s in exact)
        assert noisy[-1] < noisy[0] - 0.05 and noisy == sorted(noisy, reverse=True)  # falls, steadily


@pytest.mark.parametrize("recorded", SHIPPED, ids=[r.name for r in SHIPPED])
def test_a_recorded_race_raced_the_source_that_ships_today(recorded):
    """A rebuilt source makes its old recordings stale: they must say the same training budget and final lr."""
    from hyperclone.training.setup import final_lr_of
    from hyperclone.io.sources import read_card

    config = recorded.load().config
    card = read_card(config["source"])
    assert config["source_train_tokens"] == card["training"]["tokens_seen"]
    from hyperclone.training.config import FROM_SOURCE, RaceConfig

    cfg = RaceConfig.from_dict(config)  # the race reads the card's final lr only for a recipe that starts at it
    uses_it = any(cfg.spec(n).recipe in FROM_SOURCE and cfg.spec(n).lr is None for n in cfg.contestants)
    assert config["source_final_lr"] == (final_lr_of(card) if uses_it else None)


def test_a_directory_without_a_record_or_with_a_bad_one_is_refused_in_one_line_and_skipped(tmp_path):
    good = tmp_path / "good"
    shutil.copytree(SHIPPED[0].path, good)
    (tmp_path / "no-record").mkdir()
    shutil.copytree(SHIPPED[0].path, tmp_path / "garbled")
    (tmp_path / "garbled" / RECORD_FILE).write_text("{not json")
    shutil.copytree(SHIPPED[0].path, tmp_path / "partial")
    (tmp_path / "partial" / RECORD_FILE).write_text(json.dumps({"title": "x", "command": ""}))
    assert [r.name for r in recorded_races(tmp_path)] == ["good"]
    for name, words in (("no-record", "is not a recorded race"), ("garbled", "cannot be read"),
                        ("partial", "lacks command, machine, date, summary")):
        one_line_refusal(words, read_record, tmp_path / name)
    assert recorded_races(tmp_path / "missing") == []


def test_write_record_round_trips(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SHIPPED[0].path, run)
    write_record(run, "t", "python benchmarks/record_races.py --steps 1", "m", "2026-12-01", "s")
    assert read_record(run).title == "t" and read_record(run).summary == "s"
