"""What a sound run directory's files hold: the shape of ``run.json`` and of each ``metrics.jsonl`` event.

Pure checks on parsed JSON (no files): each returns what is wrong, in words, or None. ``runs.py``
refuses a run whose files fail them in one line naming the file and line, so a damaged or hand-edited
run never reaches the readers (results, plots, pages) as a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from hyperclone.core.errors import quoted, shown
from hyperclone.training.results import STATUS_EVENTS

RUN_ID = "run_id"  # run.json's id of the run, repeated in each checkpoint
EVENT_KINDS = ("metrics", *STATUS_EVENTS, "error", "resumed")
CONTESTANT_NUMBERS = ("params", "flop_params", "flop_params_before", "grow_at")  # run.json's sizes per contestant
RECORD_NUMBERS = ("lr", "train_loss", "val_loss", "val_accuracy", "symmetry", "seconds", "time")  # None: not measured


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_number_or_none(value: Any) -> bool:
    return value is None or is_number(value)


def wrong_types(mapping: dict, check: Callable[[Any], bool], keys: Iterable[str], required: bool = False) -> list[str]:
    """The ``keys`` of ``mapping`` whose value fails ``check`` (absent ones too when ``required``)."""
    return [k for k in keys if (k in mapping or required) and not check(mapping.get(k))]


def run_info_problem(info: Any) -> str | None:
    """What is wrong with the content of ``run.json``, or None when readers can use it."""
    if not isinstance(info, dict):
        return "it is not a JSON object"
    config = info.get("config")
    if not isinstance(config, dict):
        return "it has no config object"
    names = config.get("contestants")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "config's contestants is not a list of names"
    bad = wrong_types(config, is_count, ("steps", "batch_size", "seq_len"), required=True)
    bad += wrong_types(config, lambda v: isinstance(v, dict), ("steps_for",))
    bad += wrong_types(config, lambda v: isinstance(v, str), ("source",))
    bad += wrong_types(info, lambda v: isinstance(v, str), ("fairness", "started", RUN_ID))
    bad += wrong_types(info, lambda v: isinstance(v, dict), ("source", "contestants", "hardware", "versions"))
    bad += wrong_types(info, lambda v: isinstance(v, list), ("resumes",))
    if not bad:  # inside the objects now known to be objects
        bad += wrong_types(info.get("source", {}), is_number_or_none, ("train_tokens", "flop_params"))
        for name, sizes in info.get("contestants", {}).items():
            bad += [f"contestants.{name}"] if not isinstance(sizes, dict) else [
                f"contestants.{name}.{k}" for k in wrong_types(sizes, is_number_or_none, CONTESTANT_NUMBERS)]
    return f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not what a run stores" if bad else None


def event_problem(event: Any) -> str | None:
    """What is wrong with one line of ``metrics.jsonl`` as an event, or None when it is sound."""
    if not isinstance(event, dict):
        return f"{shown(json.dumps(event), 40)} is not an event"
    kind = event.get("event")
    if kind not in EVENT_KINDS:
        return f"unknown event {quoted(str(kind), 40)}"
    if kind == "resumed":
        steps = event.get("from_steps")
        sound = isinstance(steps, dict) and all(is_count(v) for v in steps.values())
        return None if sound else "a resumed event without its from_steps"
    if kind == "error":
        return None if isinstance(event.get("message"), str) else "an error event without its message"
    if not isinstance(event.get("contestant"), str) or not is_count(event.get("step", 0)):
        return f"a {kind} event without its contestant or step"
    if kind != "metrics":
        return None if isinstance(event.get("message", ""), str) else f"a {kind} event whose message is not text"
    bad = wrong_types(event, is_count, ("step",), required=True)
    bad += wrong_types(event, is_number, ("tokens", "flops"), required=True)
    bad += wrong_types(event, is_number_or_none, RECORD_NUMBERS)
    bad += wrong_types(event, lambda v: isinstance(v, str), ("data_sha1",))
    return f"a metrics record whose {', '.join(bad)} is missing or of the wrong type" if bad else None
