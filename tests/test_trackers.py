"""A race's curves in experiment trackers (``--log-with``), read back from the trackers' own files: TensorBoard's
event files (tensorboard's ``EventAccumulator``) and trackio's local SQLite store hold every contestant's curve
with the values of ``metrics.jsonl``; a tracker that is not installed is refused in one line before any work."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from racekit import PAIR, TINY, one_line_refusal, save_source, setup

from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.loop import race
from hyperclone.training.trackers import METRICS, PROJECT, tracker_names

pytest.importorskip("tensorboard")
pytest.importorskip("trackio")

CONTESTANTS = ("noisy_symmetric", "random", "source")
ARGS = ["--contestants", ",".join(CONTESTANTS), "--steps", "6", "--batch-size", "4", "--seq-len", "32",
        "--eval-every", "2", "--eval-windows", "4", "--lr", "3e-3", "--warmup", "2", "--device", "cpu",
        "--no-progress"]
# TensorBoard keeps a scalar as float32: rounding to nearest moves it by at most half an eps, relatively.
FLOAT32_REL = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One CLI race logged to TensorBoard and trackio: (run dir, trackio's store, the CLI's output).

    In a process of its own: trackio reads TRACKIO_DIR once, when it is imported."""
    folder = tmp_path_factory.mktemp("trackers")
    source = save_source(folder)
    run_dir, store = folder / "run", folder / "trackio"
    env = {**os.environ, "TRACKIO_DIR": str(store), "HYPERCLONE_CACHE": str(folder / "cache")}
    done = subprocess.run([sys.executable, "-m", "hyperclone", "race", "--source", str(source), "--data",
                           str(folder / "corpus.txt"), "--run-dir", str(run_dir), "--log-with", "tensorboard,trackio",
                           *ARGS], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, store, done.stdout


def records_of(run_dir: Path) -> dict[str, list[dict]]:
    """metrics.jsonl's records, by contestant."""
    out: dict[str, list[dict]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "metrics":
            out.setdefault(event["contestant"], []).append(event)
    return out


def expected_curves(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points as a tracker should hold them (a None value is not logged)."""
    return {m: [(r["step"], float(r[m])) for r in records if r.get(m) is not None]
            for m in METRICS if any(r.get(m) is not None for r in records)}


@pytest.mark.slow
def test_tensorboard_holds_every_contestants_curve(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run_dir, _, out = tracked
    records = records_of(run_dir)
    assert set(records) == set(CONTESTANTS) and f"tensorboard --logdir {run_dir / 'tensorboard'}" in out
    for name, mine in records.items():
        events = EventAccumulator(str(run_dir / "tensorboard" / name))  # one TensorBoard run per contestant
        events.Reload()
        expected = expected_curves(mine)
        assert set(events.Tags()["scalars"]) == set(expected), name
        assert not any(p.is_dir() for p in (run_dir / "tensorboard" / name).iterdir())  # no run beside it
        assert ("symmetry" in expected) == (name == "noisy_symmetric")  # only the clone has a symmetry
        for metric, points in expected.items():
            logged = [(e.step, e.value) for e in events.Scalars(metric)]
            assert [s for s, _ in logged] == [s for s, _ in points], (name, metric)
            for (_, got), (_, want) in zip(logged, points):
                assert got == pytest.approx(want, rel=FLOAT32_REL, abs=0.0), (name, metric)
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = HParamsPluginData.FromString(content).session_start_info.hparams  # the race's settings as config
        assert hparams["contestant"].string_value == name and hparams["lr"].number_value == 0.003
        assert hparams["contestants"].string_value == json.dumps(list(CONTESTANTS))


@pytest.mark.slow
def test_trackio_store_holds_every_contestants_curve_and_the_settings(tracked):
    run_dir, store, out = tracked
    records = records_of(run_dir)
    race_name = run_dir.name
    with sqlite3.connect(store / f"{PROJECT}.db") as db:
        rows = db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY run_name, step").fetchall()
        configs = {name: json.loads(config) for name, config in db.execute("SELECT run_name, config FROM configs")}
    assert {row[0] for row in rows} == {f"{race_name}/{c}" for c in CONTESTANTS}
    for name, mine in records.items():
        logged = [(step, json.loads(values)) for run, step, values in rows if run == f"{race_name}/{name}"]
        for metric, points in expected_curves(mine).items():  # stored as JSON doubles: the same floats
            assert [(step, values[metric]) for step, values in logged if metric in values] == points, (name, metric)
        config = configs[f"{race_name}/{name}"]
        assert config["contestant"] == name and config["lr"] == 0.003 and config["steps"] == 6
        assert config["_Group"] == race_name  # the contestants of one race are grouped
    assert f"trackio show --project {PROJECT}" in out


@pytest.mark.parametrize("tracker", ["mlflow", "wandb", "trackio"])
def test_a_tracker_that_is_not_installed_is_refused_in_one_line_before_any_work(tracker, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import tracker` fails, as when it is not installed
    model, tok, corpus = setup(tmp_path)
    message = one_line_refusal(f"the {tracker} package is not installed; pip install", race, model, tokenizer=tok,
                               data=corpus, contestants=PAIR, run_dir=tmp_path / "run", log_with=tracker, **TINY)
    assert "[trackers]" in message if tracker == "trackio" else tracker in message.split("pip install")[1]
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


def test_the_cli_refuses_a_missing_or_unknown_tracker_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["race", "--run-dir", str(tmp_path / "run"), "--log-with", "tensorboard,mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the mlflow package is not installed; pip install mlflow" in err
    assert main(["race", "--run-dir", str(tmp_path / "run"), "--log-with", "tensorboardx"]) == 2
    assert "unknown tracker 'tensorboardx'; use tensorboard, trackio, mlflow, wandb or all" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_all_means_every_installed_tracker_and_a_run_dir_is_needed(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert tracker_names("all", "runs/x") == ("tensorboard", "trackio")
    assert tracker_names(["trackio", "tensorboard,trackio"], "runs/x") == ("trackio", "tensorboard")
    assert tracker_names(None) == ()
    for log_with in ("tensorboard", "all"):
        with pytest.raises(HyperCloneError, match="log_with needs a run_dir"):
            tracker_names(log_with, None)


def test_the_dashboards_race_settings_offer_the_trackers_and_refuse_a_missing_one(runs, monkeypatch):
    from pages import open_page

    monkeypatch.setitem(sys.modules, "mlflow", None)
    at = open_page()
    at.session_state["tab"] = "Training race"
    at.run()
    assert at.selectbox(key="race_log_with").options == ["none", "tensorboard", "trackio", "mlflow", "wandb", "all"]
    at.selectbox(key="race_log_with").set_value("mlflow").run()
    errors = [e.value for e in at.error]
    assert errors == ["cannot log to mlflow: the mlflow package is not installed; pip install mlflow"]
    assert at.button(key="race_start").disabled
    at.selectbox(key="race_log_with").set_value("tensorboard").run()
    assert not at.error and not at.exception and not at.button(key="race_start").disabled
