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
  exactly (written to a temporary file and renamed), with the run's id.
* ``race.lock``: present while a race holds the run (``hold_run_dir``): one
  race at a time per run directory.

The keys of ``run.json`` are those of the first release, so every run log
written since loads unchanged (``tests/data/race_run_v0_1``); since then it
also holds ``run_id``, which each checkpoint repeats, so a resumed run uses
only its own checkpoints. A damaged run (``run.json`` or a line of
``metrics.jsonl`` not shaped as written here) is refused in one line naming
the file and line; listings leave it out and say so (``list_runs``). A run
directory that cannot be written ends the race in one line, keeping the
records already written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from hyperclone.io.atomic import write_atomic
from hyperclone.core.errors import HyperCloneError, first_line
from hyperclone.training.config import RaceConfig
from hyperclone.training.results import STATUS_EVENTS, RaceResult
from hyperclone.training.run_checks import RUN_ID, event_problem, run_info_problem

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = "race.lock"


# --------------------------------------------------------------------------- #
# Writing durably, and saying why a write failed
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


def write_failure(run_dir: Path, error: OSError, path: Path | None = None) -> str:
    """One line for ``error``, raised while writing ``path`` of the run in ``run_dir``: what failed, what to do."""
    where = error.filename or path or run_dir
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = "free some disk space, then continue the run with --resume (resume=True)"
    else:
        todo = "choose a run directory you can write to (--run-dir; the dashboard's is $HYPERCLONE_RUNS)"
    kept = "; the records written so far are kept" if (Path(run_dir) / METRICS_FILE).exists() else ""
    return f"cannot write {where} ({error.strerror or type(error).__name__}); {todo}{kept}"


@contextlib.contextmanager
def writing(run_dir: Path, path: Path | None = None) -> Iterator[None]:
    """An ``OSError`` while writing (a read-only or full disk) becomes one line (``write_failure``)."""
    try:
        yield
    except HyperCloneError:
        raise
    except OSError as e:
        raise HyperCloneError(write_failure(run_dir, e, path)) from None


class RunLog:
    """Append-only ``metrics.jsonl``: each event is one line, flushed and fsynced before returning."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        with writing(self.run_dir, self.path):
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
        with writing(self.run_dir, self.path):
            self._file.write(json.dumps(json_safe(event)) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with contextlib.suppress(OSError):  # every line was flushed when written; a failed one was reported
            self._file.close()


def damaged(path: str | os.PathLike, what: str, line: int | None = None) -> HyperCloneError:
    """The one-line error for a run file (``line`` of it) that is not as a race writes it: ``what`` is wrong."""
    at = f" line {line}" if line is not None else ""
    return HyperCloneError(f"{path}{at} is damaged ({what}); repair or remove it, or the whole run directory")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise HyperCloneError(f"cannot read {path} ({e.strerror or type(e).__name__}); check its permissions") from None


# --------------------------------------------------------------------------- #
# Starting, resuming and reading a run
# --------------------------------------------------------------------------- #
def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a race run (its ``run.json``)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """The content of a run directory's ``run.json``, or a one-line error saying what is missing or damaged."""
    run_dir = Path(run_dir)
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        what = "does not exist" if not run_dir.exists() else f"has no {RUN_FILE}"
        raise HyperCloneError(f"{run_dir} {what}; give a directory written by race(run_dir=...)")
    try:
        info = json.loads(read_bytes(run_file).decode("utf-8"))
    except UnicodeDecodeError:
        raise damaged(run_file, "it is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise damaged(run_file, f"not valid JSON: {e.msg}") from None
    problem = run_info_problem(info)
    if problem:
        raise damaged(run_file, problem)
    return info


def run_config(run_dir: str | os.PathLike) -> RaceConfig:
    """The settings the run in ``run_dir`` was started with, as ``race()`` takes them (damage: one line).

    What the race measured rather than was told is left out: the source's weights fingerprint, and its
    training tokens unless they were given (a built-in source's are read again from its model card).
    ``race(cfg.source, run_dir=run_dir, resume=True, **cfg.race_arguments())`` continues the run.
    """
    run_info = read_run_info(run_dir)  # its shape is checked there, its values here
    try:
        (cfg := RaceConfig.from_dict(run_info["config"])).validate()
    except (TypeError, ValueError) as e:  # HyperCloneError included
        raise damaged(os.path.join(run_dir, RUN_FILE), f"its settings cannot be used: {first_line(e)}") from None
    cfg.source_sha1 = cfg.source_final_lr = None
    if run_info.get("source", {}).get("train_tokens_from") != "given":
        cfg.source_train_tokens = None
    return cfg


def write_run_info(run_dir: Path, info: dict) -> None:
    """Write ``run.json`` atomically: readers see the old file or the new one, never half."""
    with writing(run_dir, Path(run_dir) / RUN_FILE):
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


@dataclass
class StoredRun:
    """What a run directory holds when it is resumed: ``run.json``, its still-valid events, notes on skipped lines."""

    info: dict
    events: list[dict]
    warnings: list[str]


def open_run_dir(run_dir: Path | None, resume: bool) -> StoredRun | None:
    """The stored run when resuming (checked whole before any work); refuse to mix a new run into an old directory.

    Nothing is created here (``hold_run_dir`` makes the directory).
    """
    if run_dir is None:
        return None
    _refuse_a_file_on_the_way(run_dir)
    if resume:
        if not is_run_dir(run_dir):
            raise HyperCloneError(f"nothing to resume in {run_dir} (no {RUN_FILE}); start it without resume")
        info = read_run_info(run_dir)
        if not (run_dir / METRICS_FILE).exists() and any((run_dir / CHECKPOINT_DIR).glob("*.pt")):
            raise HyperCloneError(f"cannot resume {run_dir}: its {METRICS_FILE} is missing but checkpoints are "
                                  f"there, so the run's history is gone; restore {METRICS_FILE}, or start a new run "
                                  "in another directory")
        return StoredRun(info, *read_events(run_dir))
    if (run_dir / RUN_FILE).exists() or (run_dir / METRICS_FILE).exists():
        raise HyperCloneError(f"{run_dir} already holds a run; continue it with resume=True (--resume) "
                              "or choose another run directory")
    return None


def run_info_for(run_info: dict, stored: StoredRun | None) -> dict:
    """``run_info`` as ``run.json`` stores it: a new run gets a new id; a resumed one keeps its id and start time
    and adds an entry to ``resumes``."""
    if stored is None:
        return {**run_info, RUN_ID: uuid.uuid4().hex}
    old = stored.info
    resumed_at = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": run_info["hardware"]}
    return {**run_info, **({RUN_ID: old[RUN_ID]} if RUN_ID in old else {}),
            "started": old.get("started", run_info["started"]), "resumes": old.get("resumes", []) + [resumed_at]}


def read_events(run_dir: Path) -> tuple[list[dict], list[str]]:
    """All events of ``metrics.jsonl`` with superseded ones dropped, and notes about incomplete lines.

    A line cut short (a run killed while writing it) is skipped with a note; a line that is not
    UTF-8, or is JSON but not an event as a race writes it, is damage: a one-line error naming it.
    """
    path = Path(run_dir) / METRICS_FILE
    events: list[dict] = []
    warnings: list[str] = []
    if not path.exists():
        return events, warnings
    lines = read_bytes(path).split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise damaged(path, "not UTF-8 text", lineno) from None
        except json.JSONDecodeError:
            where = "the last line" if lineno >= len(lines) - 1 else f"line {lineno}"
            warnings.append(f"{path}: skipped {where}, which is incomplete (the run was killed while writing it)")
            continue
        problem = event_problem(event)
        if problem:
            raise damaged(path, problem, lineno)
        if event["event"] == "resumed":
            events = supersede(events, event["from_steps"])
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
    """Rebuild the ``RaceResult`` of a run directory (finished, stopped, or killed mid-run); damage is one line."""
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


class Listing(list):
    """What a listing found (a list), and ``skipped``: one line per entry left out, saying why."""

    def __init__(self, found: Iterable = (), skipped: Iterable[str] = ()):
        super().__init__(found)
        self.skipped = list(skipped)


def list_entries(root: Path, read: Any) -> Listing:
    """``read(path)`` of every entry under ``root`` (by name) that is not None; one that raises a
    ``HyperCloneError`` (damage) is left out and named in ``skipped``, with why. Never raises."""
    listing = Listing()
    try:
        entries = sorted(Path(root).iterdir()) if Path(root).is_dir() else []
    except OSError as e:
        listing.skipped.append(f"{root}: cannot be listed ({e.strerror or type(e).__name__})")
        return listing
    for path in entries:
        try:
            found = read(path)
        except HyperCloneError as e:
            listing.skipped.append(f"{path.name}: {e}")
        except OSError as e:
            listing.skipped.append(f"{path.name}: cannot be read ({e.strerror or type(e).__name__})")
        else:
            if found is not None:
                listing.append(found)
    return listing


def list_runs(root: str | os.PathLike, load: Callable[[Path], Any] = load_run) -> Listing:
    """The run directories under ``root`` that load, by name; damaged ones are left out and named in ``skipped``.
    ``load``: how a run is read (a page refreshing every second passes a cached one)."""
    return list_entries(Path(root), lambda path: path if is_run_dir(path) and load(path) else None)


# --------------------------------------------------------------------------- #
# One race at a time per run directory
# --------------------------------------------------------------------------- #
def holder_of(lock: Path) -> str:
    """The pid written in a held lock file ("unknown" while it is being written)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = lock.read_text().strip()
        if text.isdigit():
            return text
    return "unknown"


def lock_file(lock: Path) -> int:
    """An open descriptor holding an exclusive ``flock`` on ``lock``; a one-line error when another race holds it.

    A lock file is removed by the race releasing it, so a descriptor of a removed file does not count:
    it is opened again."""
    import fcntl

    for _ in range(8):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            break
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise HyperCloneError(f"run {lock.parent} is in use by another race (pid {holder_of(lock)}); wait for it to "
                          "end or stop it, or choose another run directory")


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and the folders above it that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike | None, is_main_process: bool = True) -> Iterator[None]:
    """Hold ``run_dir`` for one race: a second race on it is refused in one line naming the first one's pid.

    The main process takes an exclusive lock on ``race.lock`` in the directory (creating the directory),
    and removes the lock file, and the folders it created if the race left them empty, when it ends.
    Where ``fcntl`` does not exist (Windows), nothing is locked.
    """
    if run_dir is None or not is_main_process or os.name != "posix":
        yield
        return
    run_dir = Path(run_dir)
    _refuse_a_file_on_the_way(run_dir)
    made = missing_dirs(run_dir)
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = lock_file(run_dir / LOCK_FILE)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (run_dir / LOCK_FILE).unlink()  # while still holding it: see lock_file
        os.close(fd)
        for folder in made:
            try:
                folder.rmdir()  # only an empty folder this race made
            except OSError:
                break


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def checkpoint_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.pt"


def write_checkpoint(run_dir: Path, name: str, state: dict, run_id: str | None = None) -> None:
    """Save ``state`` (and the run's id) as contestant ``name``'s checkpoint; a kill mid-write leaves the previous
    one, a failed write (full disk) one line."""
    import torch

    path = checkpoint_path(run_dir, name)
    with writing(run_dir, path):
        write_atomic(path, lambda f: torch.save({**state, RUN_ID: run_id}, f))


ANY_RUN = "*"  # read_checkpoint's run_id to read a checkpoint whatever run it belongs to (to inspect it)


def read_checkpoint(run_dir: Path, name: str, run_id: str | None = ANY_RUN) -> dict | None:
    """Contestant ``name``'s checkpoint (tensors on the CPU), or None when it has none; one of another run
    (its id is not ``run_id``; None: a run from before ids) is refused."""
    import torch

    path = checkpoint_path(run_dir, name)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: say which one
        raise HyperCloneError(f"cannot read checkpoint {path} ({type(e).__name__}); delete it to restart "
                              f"{name} from step 0") from None
    theirs = saved.get(RUN_ID) if isinstance(saved, dict) else None
    if run_id != ANY_RUN and theirs != run_id:
        raise HyperCloneError(f"checkpoint {path} belongs to another run (run id {theirs}, this run's is {run_id}); "
                              f"move it away to restart {name} from step 0, or resume the run it came from")
    return saved
