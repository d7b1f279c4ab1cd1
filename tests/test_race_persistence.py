"""Run directories: every record survives a kill, and a resumed run ends exactly where an unbroken one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from racekit import PAIR, TINY, StopAfter, setup

from hyperclone.core.errors import HyperCloneError
from hyperclone.training.runs import load_run
from hyperclone.training.loop import race

HERE = Path(__file__).resolve().parent
LONG = TINY  # the settings of racekit's __main__ (the run that gets killed)
SAME = ("contestant", "step", "tokens", "flops", "lr", "train_loss", "val_loss", "val_accuracy", "symmetry",
        "data_sha1")


def comparable(records):
    return [{k: r[k] for k in SAME} for r in records]


UNBROKEN = {"contestants": PAIR, **LONG}  # the reference (conftest's unbroken): the runs below end exactly like it


def test_run_dir_holds_config_and_every_record_and_load_run_rebuilds_the_result(kit, tmp_path):
    model, tok, corpus = kit
    result = race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path / "run",
                  **{**TINY, "steps": 4})
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["steps"] == 4 and run["config"]["seed"] == 0
    assert run["config"]["contestants"] == list(PAIR)
    assert {"torch", "transformers", "accelerate", "hyperclone"} <= set(run["versions"])
    assert run["hardware"]["num_processes"] == 1 and run["hardware"]["device"] == "cpu"
    assert "identical training batches" in run["fairness"]

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.records) + len(result.events)
    loaded = load_run(tmp_path / "run")
    assert loaded.records == result.records and loaded.events == result.events
    assert loaded.table() == result.table()
    assert loaded.complete and not loaded.warnings

    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"event": "metrics", "contestant": "rand')  # what a kill during a write leaves
    damaged = load_run(tmp_path / "run")
    assert damaged.records == result.records
    assert damaged.warnings and "incomplete" in damaged.warnings[0]


def test_a_used_run_dir_is_not_overwritten_and_resume_keeps_the_settings(kit, tmp_path):
    model, tok, corpus = kit
    race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path, **{**TINY, "steps": 2})
    with pytest.raises(HyperCloneError, match="already holds a run; continue it with resume=True"):
        race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path, **{**TINY, "steps": 2})
    with pytest.raises(HyperCloneError, match="cannot resume: lr was 0.003 .* but is 0.001"):
        race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path, resume=True,
             **{**TINY, "steps": 2, "lr": 1e-3})
    with pytest.raises(HyperCloneError, match="nothing to resume"):
        race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path / "new", resume=True, **TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HyperCloneError, match="has no run.json"):
        load_run(tmp_path / "empty")


@pytest.mark.slow
def test_a_killed_run_keeps_every_record_and_resumes_to_the_unbroken_result(tmp_path, unbroken):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    child = subprocess.Popen([sys.executable, str(HERE / "racekit.py"), str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env, text=True)
    printed = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            printed.append(event)
            if sum(e["event"] == "metrics" for e in printed) >= 5:  # mid-run: 5 of 10 evaluations
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"

    killed = load_run(tmp_path / "run")
    got = [e for e in printed if e["event"] == "metrics"]
    assert killed.records[: len(got)] == got  # each record reached the disk before the callback saw it
    assert not killed.complete and killed.status("random")[0] == "running"

    model, tok, corpus = setup(tmp_path)  # the child's corpus file: same settings, same data path
    resumed = race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path / "run",
                   checkpoint_every=2, resume=True, **LONG)
    assert resumed.complete
    assert comparable(resumed.records) == comparable(unbroken.records)
    assert comparable(load_run(tmp_path / "run").records) == comparable(unbroken.records)
    for name in PAIR:
        for a, b in zip(resumed.models[name].parameters(), unbroken.models[name].parameters()):
            assert torch.equal(a, b)


@pytest.mark.slow
def test_a_stopped_run_resumes_mid_interval_to_the_same_final_state(kit, tmp_path, unbroken):
    model, tok, corpus = kit
    stopped = race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path, checkpoint_every=4,
                   stop_event=StopAfter(14), **LONG)
    assert {stopped.status(n)[0] for n in PAIR} == {"stopped"}
    # noisy_symmetric stopped between steps 5 and 6, in the middle of an evaluation interval
    assert {e["contestant"]: e["step"] for e in stopped.events} == {"noisy_symmetric": 5, "random": 4}
    assert all((tmp_path / "checkpoints" / f"{n}.pt").exists() for n in PAIR)

    seen = []
    resumed = race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path, checkpoint_every=4,
                   resume=True, callback=seen.append, **LONG)
    assert comparable(resumed.records) == comparable(unbroken.records)  # train_loss too: accumulators restored
    assert [e for e in seen if e["event"] == "metrics"] == resumed.records  # replayed, then continued
    for name in PAIR:
        for a, b in zip(resumed.models[name].parameters(), unbroken.models[name].parameters()):
            assert torch.equal(a, b)
    loaded = load_run(tmp_path)
    assert loaded.complete and comparable(loaded.records) == comparable(unbroken.records)
    assert any(e["event"] == "resumed" for e in loaded.events)
