"""Damaged, shared and unwritable run directories: one clear line each, never a traceback, records kept.

A damaged run (run.json or metrics.jsonl) is refused by ``load_run`` in one line, left out of every listing
with a note, and refused by ``race --resume``; a run is raced by one race at a time and only with its own
checkpoints; a run directory that cannot be written ends the race in one line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clirun import one_line
from racekit import PAIR, TINY, one_line_refusal, save_source

from hyperclone.training.recorded import RECORD_FILE, recorded_races
from hyperclone.training.results import RaceResult
from hyperclone.training.runs import CHECKPOINT_DIR, METRICS_FILE, RUN_FILE, hold_run_dir, list_runs, load_run
from hyperclone.training.loop import race

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {**TINY, "steps": 2, "checkpoint_every": 2}

# Each damaged form: (file, content written over it, words the refusal holds)
DAMAGE = {
    "run.json is a list": (RUN_FILE, b"[]", "not a JSON object"),
    "run.json is empty": (RUN_FILE, b"{}", "config"),
    "run.json config is null": (RUN_FILE, b'{"config": null}', "config"),
    "run.json contestants is a number": (RUN_FILE, b'{"config": {"contestants": 5, "batch_size": 4, "seq_len": 8}}',
                                         "contestants"),
    "metrics line is a number": (METRICS_FILE, b"42\n", "line 1"),
    "metrics record lacks its fields": (METRICS_FILE, b'{"event": "metrics"}\n', "line 1"),
    "metrics line is not UTF-8": (METRICS_FILE, b"\xff\xfe\x00garbage\n", "line 1"),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished two-step run of a source saved on disk (so the CLI can resume it), with checkpoints."""
    folder = tmp_path_factory.mktemp("damage")
    source = save_source(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERCLONE_CACHE", str(folder / "cache"))
        race(str(source), data=str(folder / "corpus.txt"), contestants=PAIR, run_dir=folder / "run", **SETTINGS)
    return folder


@pytest.fixture
def run(made, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the finished run, to damage."""
    monkeypatch.setenv("HYPERCLONE_CACHE", str(made / "cache"))
    return Path(shutil.copytree(made / "run", tmp_path / "run"))


def resume(made: Path, run_dir: Path, **overrides):
    return race(str(made / "source"), data=str(made / "corpus.txt"), contestants=PAIR, run_dir=run_dir,
                resume=True, **{**SETTINGS, **overrides})


def damage(run_dir: Path, form: str) -> str:
    name, content, words = DAMAGE[form]
    path = run_dir / name
    path.write_bytes(content + path.read_bytes() if name == METRICS_FILE else content)
    return words


# --------------------------------------------------------------------------- #
# Item 5: a damaged run is one line, left out of listings with a note
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("form", DAMAGE)
def test_a_damaged_run_is_refused_by_load_run_in_one_line_naming_the_file(run, form):
    words = damage(run, form)
    message = one_line_refusal(words, load_run, run)
    assert DAMAGE[form][0] in message and "damaged" in message


def test_a_torn_last_line_is_still_skipped_with_a_note(run):
    with open(run / METRICS_FILE, "ab") as f:
        f.write(b'{"event": "metrics", "contestant": "ran')
    result = load_run(run)
    assert result.records and "incomplete" in result.warnings[0]


def test_listings_leave_damaged_runs_out_and_say_which(made, tmp_path):
    root = tmp_path / "runs"
    for name in ("b-good", "a-list", "c-not-utf8"):
        shutil.copytree(made / "run", root / name)
    damage(root / "a-list", "run.json is a list")
    damage(root / "c-not-utf8", "metrics line is not UTF-8")
    (root / "not-a-run").mkdir()
    found = list_runs(root)
    assert list(found) == [root / "b-good"]
    assert len(found.skipped) == 2 and all(("a-list" in s) != ("c-not-utf8" in s) for s in found.skipped)
    assert list_runs(tmp_path / "missing") == [] and not list_runs(tmp_path / "missing").skipped


def test_a_damaged_recorded_race_or_record_is_left_out_and_reported(tmp_path):
    shipped = recorded_races()
    for name in ("good", "damaged-log", "damaged-record"):
        shutil.copytree(shipped[0].path, tmp_path / name)
    (tmp_path / "damaged-log" / RUN_FILE).write_text('{"config": null}')
    (tmp_path / "damaged-record" / RECORD_FILE).write_text("[1, 2]")
    found = recorded_races(tmp_path)
    assert [r.name for r in found] == ["good"]
    assert [s.split(":")[0] for s in found.skipped] == ["damaged-log", "damaged-record"]
    assert "lacks" in found.skipped[1] or "not a JSON object" in found.skipped[1]


def lesson_and_explorer_runs(made: Path, tmp_path: Path, monkeypatch) -> None:
    """Races saved on this server: a good run, and a damaged one listed first (newest by name); recorded
    races: only a damaged one."""
    import hyperclone.training.recorded

    root = tmp_path / "runs"
    shutil.copytree(made / "run", root / "20000101-000000-good")
    shutil.copytree(made / "run", root / "29990101-000000-damaged")
    damage(root / "29990101-000000-damaged", "run.json config is null")
    shutil.copytree(recorded_races()[0].path, tmp_path / "recorded" / "broken-recording")
    damage(tmp_path / "recorded" / "broken-recording", "metrics line is a number")
    monkeypatch.setattr(hyperclone.training.recorded, "RUNS_DIR", tmp_path / "recorded")


def noted(at, name: str, what: str) -> bool:
    return any(name in c.value and f"{what}(s) left out" in c.value for c in at.caption)


@pytest.mark.parametrize("chapter", ["4", "5"])
def test_a_damaged_run_leaves_the_lesson_working_with_a_note(made, tmp_path, runs, monkeypatch, chapter):
    from pages import LESSON, open_page

    lesson_and_explorer_runs(made, tmp_path, monkeypatch)
    at = open_page(LESSON, chapter=chapter)
    assert noted(at, "29990101-000000-damaged", "run")
    if chapter == "4":
        assert at.selectbox(key="lesson_run").options == ["this server · 20000101-000000-good"]
        assert noted(at, "broken-recording", "recorded race")


def test_a_damaged_run_leaves_the_explorer_race_tab_working_with_a_note(made, app, tmp_path, monkeypatch):
    lesson_and_explorer_runs(made, tmp_path, monkeypatch)
    app.session_state["tab"] = "Training race"
    app.run()
    assert not app.exception, app.exception
    picker = next(s for s in app.selectbox if s.label == "Run")
    assert picker.options and all("damaged" not in o for o in picker.options)
    assert noted(app, "29990101-000000-damaged", "run")
    app.radio(key="race_mode").set_value("Recorded races").run()
    assert not app.exception, app.exception
    assert noted(app, "broken-recording", "recorded race")


def cli_resume(made: Path, run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYPERCLONE_CACHE": str(made / "cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hyperclone", "race", "--run-dir", str(run_dir), "--resume",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(done: subprocess.CompletedProcess, words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in one_line(done.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["run.json is a list", "run.json config is null", "metrics line is a number",
                                  "metrics line is not UTF-8"])
def test_cli_resume_of_a_damaged_run_is_one_line(made, run, form):
    words = damage(run, form)
    assert_one_line(cli_resume(made, run), words)


# --------------------------------------------------------------------------- #
# Item 14: one race per run, only its own files
# --------------------------------------------------------------------------- #
def test_a_run_in_use_is_refused_to_a_second_race_naming_its_pid(made, run):
    before = (run / METRICS_FILE).read_bytes()
    with hold_run_dir(run):
        one_line_refusal(f"in use by another race \\(pid {os.getpid()}\\)", resume, made, run)
        assert_one_line(cli_resume(made, run), f"in use by another race (pid {os.getpid()})")
    assert (run / METRICS_FILE).read_bytes() == before  # nothing was appended
    resume(made, run)  # free again once released
    assert not list(run.glob("*.lock")), "the lock is removed when the race ends"


def test_every_run_has_an_id_in_run_json_and_in_each_checkpoint(run):
    run_id = json.loads((run / RUN_FILE).read_text())["run_id"]
    assert isinstance(run_id, str) and len(run_id) >= 16
    for name in PAIR:
        assert torch.load(run / CHECKPOINT_DIR / f"{name}.pt", weights_only=True)["run_id"] == run_id


def test_resume_refuses_a_checkpoint_from_another_run(made, run):
    path = run / CHECKPOINT_DIR / "random.pt"
    saved = torch.load(path, weights_only=True)
    torch.save({**saved, "run_id": "another-run"}, path)
    one_line_refusal("random.pt belongs to another run", resume, made, run)


def test_resume_refuses_a_run_json_from_another_run(made, run):
    info = json.loads((run / RUN_FILE).read_text())
    (run / RUN_FILE).write_text(json.dumps({**info, "run_id": "0123456789abcdef0123456789abcdef"}))
    one_line_refusal("belongs to another run", resume, made, run)


def test_resume_with_metrics_missing_but_checkpoints_present_is_refused(made, run):
    (run / METRICS_FILE).unlink()
    one_line_refusal(f"{METRICS_FILE} is missing", resume, made, run)
    assert not (run / METRICS_FILE).exists()


# --------------------------------------------------------------------------- #
# Items 15/16: an unwritable run directory, a full disk, every contestant diverged
# --------------------------------------------------------------------------- #
def refuse_writes_under(monkeypatch, root: Path, code: int) -> None:
    """Make every os-level create or write under ``root`` fail with ``code`` (works as root, unlike chmod)."""
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path) -> bool:
        return str(os.path.abspath(path)).startswith(str(root))

    def guarded_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    def guarded_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)


def test_a_read_only_run_dir_is_one_line_and_nothing_is_written(made, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERCLONE_CACHE", str(made / "cache"))
    refuse_writes_under(monkeypatch, tmp_path / "ro", errno.EROFS)
    message = one_line_refusal("cannot write", race, str(made / "source"), data=str(made / "corpus.txt"),
                               contestants=PAIR, run_dir=tmp_path / "ro" / "run", **SETTINGS)
    assert "Read-only file system" in message and "Errno" not in message
    assert not (tmp_path / "ro").exists()


def test_a_read_only_runs_dir_is_one_line_in_the_dashboard_race_queue(made, tmp_path, monkeypatch):
    import time

    from hyperclone.teach.classroom import RaceQueue

    monkeypatch.setenv("HYPERCLONE_CACHE", str(made / "cache"))
    refuse_writes_under(monkeypatch, tmp_path / "runs", errno.EROFS)
    run_dir = tmp_path / "runs" / "race"
    job = RaceQueue().submit("owner", run_dir, lambda stop: race(
        str(made / "source"), data=str(made / "corpus.txt"), contestants=PAIR, run_dir=run_dir, stop_event=stop,
        **SETTINGS))
    deadline = time.monotonic() + 120  # a hang guard only
    while job.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "failed" and "Read-only file system" in job.error and "HYPERCLONE_RUNS" in job.error
    assert "Errno" not in job.error and "\n" not in job.error


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_records(made, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERCLONE_CACHE", str(made / "cache"))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    message = one_line_refusal("No space left on device", race, str(made / "source"), data=str(made / "corpus.txt"),
                               contestants=PAIR, run_dir=tmp_path / "run", **SETTINGS)
    assert "kept" in message and "--resume" in message
    assert len(load_run(tmp_path / "run").records) >= 3  # both starting points and the first interval
    assert not [p for p in (tmp_path / "run" / CHECKPOINT_DIR).iterdir()], "no half-written checkpoint"


def test_when_every_contestant_diverged_the_read_out_says_no_speed_up_can_be_measured():
    record = dict(event="metrics", flops=0.0, lr=None, train_loss=None, val_accuracy=0.0, symmetry=None,
                  seconds=0.0, data_sha1="")
    records = [{**record, "contestant": "noisy_symmetric", "step": 0, "tokens": 0, "val_loss": 4.0},
               {**record, "contestant": "random", "step": 0, "tokens": 0, "val_loss": 5.7},
               {**record, "contestant": "noisy_symmetric", "step": 2, "tokens": 256, "val_loss": 5.5}]
    events = [{"event": "diverged", "contestant": n, "step": s, "message": f"stopped at step {s}: loss became nan"}
              for n, s in (("random", 1), ("noisy_symmetric", 3))]
    result = RaceResult(config={"contestants": list(PAIR), "batch_size": 4, "seq_len": 32, "steps": 8},
                        info={}, records=records, events=events)
    table = result.table()
    assert "unbounded" not in table and " 0x" not in table and "0.00x" not in table
    assert "no speed-up can be measured: every contestant diverged" in table
    assert result.speedups() == [] and result.readouts() == []
