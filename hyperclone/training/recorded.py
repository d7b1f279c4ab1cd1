"""Recorded races: long runs shipped with the package, so a class sees the whole story without training.

Each lives in ``hyperclone/assets/runs/<name>/`` as an ordinary run log
(``run.json`` + ``metrics.jsonl``, read by ``load_run``) and a
``recorded.json`` saying how it was made: the exact command, the machine, the
date and a one-line summary. ``benchmarks/record_races.py`` writes them.
Recorded, not live: the app, the lesson and notebook 3 label them so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hyperclone.assets import ASSETS_DIR
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.runs import Listing, is_run_dir, list_entries, load_run
from hyperclone.training.results import RaceResult

RUNS_DIR = ASSETS_DIR / "runs"
RECORD_FILE = "recorded.json"
RECORD_KEYS = ("title", "command", "machine", "date", "summary")


@dataclass(frozen=True)
class RecordedRace:
    """A shipped run log and how it was made."""

    name: str
    path: Path
    title: str
    command: str
    machine: str
    date: str
    summary: str

    def load(self) -> RaceResult:
        """The race, as ``load_run`` reads it."""
        return load_run(self.path)

    @property
    def label(self) -> str:
        """One line for a list: what it is, and that it was recorded (not live)."""
        return f"recorded · {self.title} · {self.date}"


def read_record(path: Path) -> RecordedRace:
    """The ``RecordedRace`` in ``path``; a one-line error when its run log or record is missing, incomplete or
    damaged (the run log is read whole, as ``load_run`` reads it)."""
    record_file = path / RECORD_FILE
    if not is_run_dir(path) or not record_file.is_file():
        raise HyperCloneError(f"{path} is not a recorded race: it needs run.json, metrics.jsonl and {RECORD_FILE}")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HyperCloneError(f"{record_file} cannot be read ({e}); rewrite it with benchmarks/record_races.py") from None
    if not isinstance(record, dict):
        raise HyperCloneError(f"{record_file} is not a JSON object; rewrite it with benchmarks/record_races.py")
    load_run(path)
    missing = [k for k in RECORD_KEYS if not isinstance(record.get(k), str) or not record[k]]
    if missing:
        raise HyperCloneError(f"{record_file} lacks {', '.join(missing)}; rewrite it with benchmarks/record_races.py")
    return RecordedRace(path.name, path, *(record[k] for k in RECORD_KEYS))


def recorded_races(root: Path | None = None) -> Listing:
    """The recorded races under ``root`` (default ``RUNS_DIR``), by name; a damaged or incomplete one is left
    out and named, with why, in the listing's ``skipped`` (folders with no run log are no races: not named)."""
    return list_entries(RUNS_DIR if root is None else root,
                        lambda path: read_record(path) if is_run_dir(path) or (path / RECORD_FILE).exists() else None)


def write_record(path: Path, title: str, command: str, machine: str, date: str, summary: str) -> None:
    """Write ``recorded.json`` beside a finished run log in ``path``."""
    values = dict(title=title, command=command, machine=machine, date=date, summary=summary)
    (path / RECORD_FILE).write_text(json.dumps(values, indent=1) + "\n")
