"""The run directory of a race: the one module that knows its files and how they are written.

A run directory holds:

* ``run.json``: the configuration, library versions, hardware and the
  contestants' sizes, written at the start (atomically; rewritten atomically
  when the run is resumed, keeping its start time and adding the resume).
* ``metrics.jsonl``: one JSON object per line, appended, flushed and fsynced
  as each is produced, so a run killed at any moment keeps every record
  written before. Each line has an ``event``: ``metrics`` (an evaluation),
  ``finished``, ``diverged``, ``stopped``, ``error`` or ``resumed``. A resumed
  run appends ``resumed`` with the step each contestant restarts from; records
  after that step are superseded (``load_run`` drops them; the file is never
  rewritten).
* ``checkpoints/<contestant>.pt``: what a contestant needs to continue
  exactly (written to a temporary file and renamed).

The keys of ``run.json`` are those of the first release, so every run log
written since loads unchanged (``tests/data/race_run_v0_1``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

from .atomic import write_atomic
from .errors import HyperCloneError
from .results import STATUS_EVENTS, RaceResult

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


# --------------------------------------------------------------------------- #
# Writing durably
# --------------------------------------------------------------------------- #
def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RunLog:
    """Append-only ``metrics.jsonl``: each event is one line, flushed and fsynced before returning."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A run killed mid-write may have left half a line: start a fresh one.
        ends_clean = True
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                ends_clean = f.read(1) == b"\n"
        self._file = open(self.path, "a", encoding="utf-8")
        if not ends_clean:
            self._file.write("\n")

    def write(self, event: dict) -> None:
        self._file.write(json.dumps(json_safe(event)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# --------------------------------------------------------------------------- #
# Starting, resuming and reading a run
# --------------------------------------------------------------------------- #
def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a race run (its ``run.json``)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """The content of a run directory's ``run.json``, or a one-line error saying what is missing."""
    run_dir = Path(run_dir)
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {RUN_FILE}"
        raise HyperCloneError(f"{run_dir} {what}; give a directory written by race(run_dir=...)")
    try:
        return json.loads(run_file.read_text())
    except json.JSONDecodeError as e:
        raise HyperCloneError(f"{run_file} is not valid JSON ({e.msg}); the run directory is damaged") from None


def write_run_info(run_dir: Path, info: dict) -> None:
    """Write ``run.json`` atomically: readers see the old file or the new one, never half."""
    write_atomic(Path(run_dir) / RUN_FILE, json.dumps(json_safe(info), indent=2) + "\n")


def _refuse_a_file_on_the_way(run_dir: Path) -> None:
    """A run directory (or a folder above it) that exists as a file cannot hold a run."""
    for path in (run_dir, *run_dir.parents):
        if path.exists():
            if not path.is_dir():
                what = f"the run directory {path}" if path == run_dir else f"{path}, on the way to run directory {run_dir},"
                raise HyperCloneError(f"{what} is a file; choose a directory (a new one, or one holding a run to "
                                      "resume)")
            return


def open_run_dir(run_dir: Path | None, resume: bool) -> dict | None:
    """The stored ``run.json`` when resuming; refuse to mix a new run into an old directory.

    Nothing is created here: the directory appears with the run's first file.
    """
    if run_dir is None:
        return None
    _refuse_a_file_on_the_way(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise HyperCloneError(f"nothing to resume in {run_dir} (no {RUN_FILE}); start it without resume")
        return read_run_info(run_dir)
    if (run_dir / RUN_FILE).exists() or (run_dir / METRICS_FILE).exists():
        raise HyperCloneError(f"{run_dir} already holds a run; continue it with resume=True (--resume) "
                              "or choose another run directory")
    return None


def resumed_run_info(run_info: dict, stored: dict) -> dict:
    """``run_info`` of a resumed run: the original start time and one more entry in ``resumes``."""
    resumed_at = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": run_info["hardware"]}
    return {**run_info, "started": stored.get("started", run_info["started"]),
            "resumes": stored.get("resumes", []) + [resumed_at]}


def read_events(run_dir: Path) -> tuple[list[dict], list[str]]:
    """All events of ``metrics.jsonl`` with superseded ones dropped, and warnings about bad lines."""
    path = Path(run_dir) / METRICS_FILE
    events: list[dict] = []
    warnings: list[str] = []
    if not path.exists():
        return events, warnings
    lines = path.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            where = "the last line" if lineno >= len(lines) - 1 else f"line {lineno}"
            warnings.append(f"{path}: skipped {where}, which is incomplete (the run was killed while writing it)")
            continue
        if event.get("event") == "resumed":
            events = supersede(events, event.get("from_steps", {}))
        events.append(event)
    return events, warnings


def supersede(events: list[dict], from_steps: dict[str, int]) -> list[dict]:
    """Drop what a resumed contestant will redo: records after its restart step, and stop events."""
    kept = []
    for e in events:
        name = e.get("contestant")
        if name in from_steps:
            if e["event"] == "metrics" and e["step"] > from_steps[name]:
                continue
            if e["event"] in STATUS_EVENTS and (e["event"] == "stopped" or e.get("step", 0) > from_steps[name]):
                continue
        if e["event"] == "error":
            continue  # a resumed run starts over from its failure
        kept.append(e)
    return kept


def load_run(run_dir: str | os.PathLike) -> RaceResult:
    """Rebuild the ``RaceResult`` of a run directory (finished, stopped, or killed mid-run)."""
    run_info = read_run_info(run_dir)
    events, warnings = read_events(Path(run_dir))
    return result_from_events(run_info, events, Path(run_dir), warnings)


def result_from_events(run_info: dict, events: Iterable[dict], run_dir: Path | None,
                       warnings: list[str]) -> RaceResult:
    """A ``RaceResult`` from the content of run.json and the (superseded-filtered) events."""
    events = list(events)
    return RaceResult(
        config=run_info["config"],
        info={k: v for k, v in run_info.items() if k != "config"},
        records=[e for e in events if e.get("event") == "metrics"],
        events=[e for e in events if e.get("event") != "metrics"],
        run_dir=run_dir,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def checkpoint_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.pt"


def write_checkpoint(run_dir: Path, name: str, state: dict) -> None:
    """Save ``state`` as contestant ``name``'s checkpoint; a kill mid-write leaves the previous one."""
    import torch

    write_atomic(checkpoint_path(run_dir, name), lambda f: torch.save(state, f))


def read_checkpoint(run_dir: Path, name: str) -> dict | None:
    """Contestant ``name``'s checkpoint (tensors on the CPU), or None when it has none."""
    import torch

    path = checkpoint_path(run_dir, name)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: say which one
        raise HyperCloneError(f"cannot read checkpoint {path} ({type(e).__name__}); delete it to restart "
                              f"{name} from step 0") from None
