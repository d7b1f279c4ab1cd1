"""What a race produced: its records, the speed-ups read off its curves, its run log on disk.

Kept apart from ``train.py`` so that reading a finished run (``load_run``), the
plots and the dashboard never need the training machinery, and so the speed-up
arithmetic can be checked on made-up curves.

A run directory holds two files:

* ``run.json``: the configuration, library versions, hardware and the
  contestants' sizes, written once at the start (atomically).
* ``metrics.jsonl``: one JSON object per line, appended, flushed and fsynced
  as each is produced, so a run killed at any moment keeps every record
  written before. Each line has an ``event``: ``metrics`` (an evaluation),
  ``finished``, ``diverged``, ``stopped``, ``error`` or ``resumed``. A resumed
  run appends ``resumed`` with the step each contestant restarts from; records
  after that step are superseded (``load_run`` drops them; the file is never
  rewritten).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import HyperCloneError

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
STATUS_EVENTS = ("finished", "diverged", "stopped")
BASELINE = "random"

Curve = Sequence[tuple[float, float]]  # (tokens, validation loss), in training order


# --------------------------------------------------------------------------- #
# Speed-up arithmetic
# --------------------------------------------------------------------------- #
def tokens_to_reach(curve: Curve, target: float) -> float | None:
    """Tokens at which ``curve`` first gets down to ``target`` (linear between points), or None.

    The first evaluation at or below the target is interpolated with the one
    before it; a curve that starts at or below the target needs its first
    point's tokens (0 for an evaluation before training).
    """
    prev: tuple[float, float] | None = None
    for tokens, loss in curve:
        if loss is not None and math.isfinite(loss) and loss <= target:
            if prev is None or prev[1] == loss:
                return float(tokens)
            t0, l0 = prev
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        if loss is not None and math.isfinite(loss):
            prev = (tokens, loss)
    return None


def _fmt_tokens(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


@dataclass
class Speedup:
    """How many times fewer tokens a contestant needs than the baseline, one way round.

    ``kind`` "a": tokens the baseline needs to reach the contestant's final
    validation loss ÷ tokens the contestant used. ``kind`` "b": tokens the
    baseline used ÷ tokens the contestant needs to reach the baseline's final
    loss. ``value`` is None when it cannot be measured within the run;
    ``bound`` then says what the run does show (e.g. ``(">", 1.0)``) and
    ``message`` says why, in words. ``value_with_source`` counts FLOPs instead
    of tokens, with the source model's own training added to the contestant's
    side (None when that cost is unknown).
    """

    contestant: str
    baseline: str
    kind: str
    target_loss: float
    value: float | None
    tokens_contestant: float | None
    tokens_baseline: float | None
    bound: tuple[str, float] | None = None
    value_with_source: float | None = None
    message: str = ""
    bound_with_source: tuple[str, float] | None = None

    def describe(self) -> str:
        """One line for tables and logs."""
        return f"({self.kind}) {_head(self.value, self.bound, self.tokens_contestant == 0.0)}: {self.message}"

    def describe_with_source(self) -> str:
        """The FLOPs figure counting the source's training, as a number, a bound, or n/a."""
        return _head(self.value_with_source, self.bound_with_source, False)


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.2g}x"  # never print a real ratio as 0.00x


def _head(value: float | None, bound: tuple[str, float] | None, unbounded: bool) -> str:
    if value is not None:
        return _ratio(value)
    if bound is not None:
        return f"{bound[0]}{_ratio(bound[1])}"
    return "unbounded" if unbounded else "n/a"


def speedup(
    contestant: Curve,
    baseline: Curve,
    kind: str = "a",
    *,
    names: tuple[str, str] = ("clone", BASELINE),
    flop_params: tuple[int, int] | None = None,
    source_flops: float | None = None,
) -> Speedup:
    """Speed-up of ``contestant`` over ``baseline`` from two (tokens, val loss) curves.

    ``flop_params`` (contestant, baseline) and ``source_flops`` give the
    FLOPs-based figure counting the source's pretraining (6·N·tokens each).
    Nothing is extrapolated: a target not reached within the run gives
    ``value=None`` with a bound and a message.
    """
    if kind not in ("a", "b"):
        raise HyperCloneError(f"speed-up kind must be 'a' or 'b', got {kind!r}")
    cname, bname = names
    c_pts = [(t, l) for t, l in contestant if l is not None and math.isfinite(l)]
    b_pts = [(t, l) for t, l in baseline if l is not None and math.isfinite(l)]
    if not c_pts or not b_pts:
        missing = cname if not c_pts else bname
        return Speedup(cname, bname, kind, float("nan"), None, None, None, message=f"{missing} has no evaluations")
    c_total, b_total = float(c_pts[-1][0]), float(b_pts[-1][0])

    def with_source(c_tokens: float, b_tokens: float) -> float | None:
        if flop_params is None or source_flops is None:
            return None
        c_flops = 6.0 * flop_params[0] * c_tokens + source_flops
        return 6.0 * flop_params[1] * b_tokens / c_flops if c_flops > 0 else None

    if kind == "a":
        target = c_pts[-1][1]
        if c_total <= 0:
            return Speedup(cname, bname, kind, target, None, c_total, None, message=f"{cname} has not trained yet")
        needed = tokens_to_reach(b_pts, target)
        if needed is None:
            best = min(l for _, l in b_pts)
            return Speedup(
                cname, bname, kind, target, None, c_total, None, bound=(">", b_total / c_total),
                bound_with_source=_bound(">", with_source(c_total, b_total)),
                message=(f"not reached within the run: {bname} did not get down to {cname}'s final val loss "
                         f"{target:.4f} in {_fmt_tokens(b_total)} tokens (its best: {best:.4f}), so it needs "
                         f"more than {b_total / c_total:.2f}x {cname}'s {_fmt_tokens(c_total)} tokens"),
            )
        return Speedup(
            cname, bname, kind, target, needed / c_total, c_total, needed,
            value_with_source=with_source(c_total, needed),
            message=(f"{bname} needs {_fmt_tokens(needed)} tokens to reach {cname}'s final val loss "
                     f"{target:.4f}; {cname} used {_fmt_tokens(c_total)}"),
        )

    target = b_pts[-1][1]
    needed = tokens_to_reach(c_pts, target)
    if needed is None:
        best = min(l for _, l in c_pts)
        return Speedup(
            cname, bname, kind, target, None, None, b_total, bound=("<", b_total / c_total) if c_total else None,
            bound_with_source=_bound("<", with_source(c_total, b_total)),
            message=(f"not reached within the run: {cname} did not get down to {bname}'s final val loss "
                     f"{target:.4f} in its {_fmt_tokens(c_total)} tokens (its best: {best:.4f})"),
        )
    if needed <= 0:
        return Speedup(
            cname, bname, kind, target, None, 0.0, b_total, bound=None,
            value_with_source=with_source(0.0, b_total),
            message=(f"{cname} was already at or below {bname}'s final val loss {target:.4f} before training "
                     f"(0 tokens); {bname} used {_fmt_tokens(b_total)} tokens"),
        )
    return Speedup(
        cname, bname, kind, target, b_total / needed, needed, b_total,
        value_with_source=with_source(needed, b_total),
        message=(f"{cname} needs {_fmt_tokens(needed)} tokens to reach {bname}'s final val loss {target:.4f}; "
                 f"{bname} used {_fmt_tokens(b_total)}"),
    )


def _bound(sign: str, value: float | None) -> tuple[str, float] | None:
    return None if value is None else (sign, value)


# --------------------------------------------------------------------------- #
# The result
# --------------------------------------------------------------------------- #
@dataclass
class RaceResult:
    """Everything a race measured, rebuilt identically by ``load_run`` from its run directory.

    ``records`` are the ``metrics`` events in the order produced (each has
    ``contestant``, ``step``, ``tokens``, ``flops``, ``lr``, ``train_loss``,
    ``val_loss``, ``val_accuracy``, ``symmetry``, ``seconds``, ``data_sha1``);
    ``events`` the status events. ``models`` holds the trained models after an
    in-process race (not saved; empty after ``load_run``).
    """

    config: dict
    info: dict
    records: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    run_dir: Path | None = None
    models: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    # -- reading the curves ------------------------------------------------- #
    @property
    def contestants(self) -> list[str]:
        return list(self.config["contestants"])

    def history(self, name: str) -> list[dict]:
        """The metric records of one contestant, in step order."""
        return sorted((r for r in self.records if r["contestant"] == name), key=lambda r: r["step"])

    def curve(self, name: str, metric: str = "val_loss", x: str = "tokens") -> list[tuple[float, float]]:
        """(x, metric) pairs of one contestant where the metric was measured."""
        return [(r[x], r[metric]) for r in self.history(name) if r.get(metric) is not None]

    def final(self, name: str) -> dict | None:
        """The last metric record of a contestant (None before its first evaluation)."""
        h = self.history(name)
        return h[-1] if h else None

    def status(self, name: str) -> tuple[str, str]:
        """(status, message): ``finished``, ``diverged``, ``stopped``, ``failed`` or ``running`` (incomplete)."""
        last = None
        for e in self.events:
            if e.get("contestant") == name and e["event"] in STATUS_EVENTS:
                last = e
        if last is not None:
            return last["event"], last.get("message", "")
        if any(e["event"] == "error" for e in self.events):
            return "failed", next(e["message"] for e in self.events if e["event"] == "error")
        return "running", "no final event: the run is in progress or was killed"

    @property
    def complete(self) -> bool:
        """True when every contestant reached a final state (finished or diverged)."""
        return all(self.status(n)[0] in ("finished", "diverged") for n in self.contestants)

    @property
    def fairness(self) -> str:
        """The conditions every contestant shared, and whether identical batches were verified."""
        text = self.info.get("fairness", "")
        ok = self.same_batches()
        check = ("verified: identical batch digests at every shared evaluation step" if ok
                 else "NOT verified: batch digests differ between contestants")
        return f"{text} Data: {check}."

    def same_batches(self) -> bool:
        """Whether every contestant saw identical training batches (sha1 chains agree at each step)."""
        by_step: dict[int, set[str]] = {}
        for r in self.records:
            if r.get("data_sha1"):
                by_step.setdefault(r["step"], set()).add(r["data_sha1"])
        return all(len(v) == 1 for v in by_step.values())

    # -- speed-ups ---------------------------------------------------------- #
    def source_flops(self) -> float | None:
        """FLOPs the source model's own training cost (6·N·tokens), or None if unknown."""
        src = self.info.get("source", {})
        tokens, n = src.get("train_tokens"), src.get("flop_params")
        return 6.0 * n * tokens if tokens is not None and n is not None else None

    def speedups(self, baseline: str = BASELINE) -> list[Speedup]:
        """Speed-ups (a) and (b) of every other contestant over ``baseline`` (default: random init)."""
        if baseline not in self.contestants:
            return []
        params = self.info.get("contestants", {})
        out = []
        for name in self.contestants:
            if name == baseline:
                continue
            fp = (params.get(name, {}).get("flop_params"), params.get(baseline, {}).get("flop_params"))
            for kind in ("a", "b"):
                out.append(speedup(self.curve(name), self.curve(baseline), kind, names=(name, baseline),
                                   flop_params=fp if None not in fp else None, source_flops=self.source_flops()))
        return out

    # -- text --------------------------------------------------------------- #
    def table(self) -> str:
        """Final figures per contestant, then both speed-ups, as plain text."""
        rows = [("contestant", "params", "steps", "tokens", "val loss", "best", "accuracy", "symmetry",
                 "seconds", "status")]
        for name in self.contestants:
            f = self.final(name) or {}
            h = self.history(name)
            best = min((r["val_loss"] for r in h if r.get("val_loss") is not None), default=None)
            p = self.info.get("contestants", {}).get(name, {}).get("params")
            rows.append((
                name,
                f"{p / 1e6:.2f}M" if p else "?",
                str(f.get("step", "-")),
                _fmt_tokens(f["tokens"]) if f else "-",
                f"{f['val_loss']:.4f}" if f.get("val_loss") is not None else "-",
                f"{best:.4f}" if best is not None else "-",
                f"{f['val_accuracy']:.4f}" if f.get("val_accuracy") is not None else "-",
                f"{f['symmetry']:.4f}" if f.get("symmetry") is not None else "-",
                f"{f['seconds']:.0f}" if f.get("seconds") is not None else "-",
                self.status(name)[0],
            ))
        lines = _align(rows)
        for name in self.contestants:
            status, message = self.status(name)
            if status not in ("finished",) and message:
                lines.append(f"  {name}: {message}")
        sp = self.speedups()
        if sp:
            src = self.info.get("source", {})
            lines.append("")
            lines.append("speed-up over random init (tokens; linear interpolation between evaluations):")
            for s in sp:
                lines.append(f"  {s.contestant:<16} {s.describe()}")
            if self.source_flops() is None:
                lines.append("  counting the source's own training: unknown (no record of its training tokens)")
            else:
                lines.append(f"counting the source's own training too ({_fmt_tokens(src['train_tokens'])} tokens, "
                             f"{self.source_flops():.3g} FLOPs; speed-up in FLOPs, 6·N·tokens):")
                for s in sp:
                    lines.append(f"  {s.contestant:<16} ({s.kind}) {s.describe_with_source()}")
        return "\n".join(lines)

    def curves_table(self, metric: str = "val_loss") -> str:
        """One row per evaluation step with a value, one column per contestant (plain text)."""
        steps = sorted({r["step"] for r in self.records})
        cell: dict[tuple[str, int], dict] = {(r["contestant"], r["step"]): r for r in self.records}
        rows = [("step", "tokens", *self.contestants)]
        for s in steps:
            tokens = next(r["tokens"] for r in self.records if r["step"] == s)
            vals = []
            for n in self.contestants:
                r = cell.get((n, s))
                v = r.get(metric) if r else None
                vals.append(f"{v:.4f}" if isinstance(v, (int, float)) else "")
            if any(vals):  # e.g. symmetry while only random init is still training
                rows.append((str(s), _fmt_tokens(tokens), *vals))
        return "\n".join(_align(rows))


def _align(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


# --------------------------------------------------------------------------- #
# The run directory
# --------------------------------------------------------------------------- #
def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a run log is not secret
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(data), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        self._file.write(json.dumps(_clean(event)) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


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
    run_dir = Path(run_dir)
    run_file = run_dir / RUN_FILE
    if not run_file.exists():
        what = "does not exist" if not run_dir.exists() else f"has no {RUN_FILE}"
        raise HyperCloneError(f"{run_dir} {what}; give a directory written by race(run_dir=...)")
    try:
        run = json.loads(run_file.read_text())
    except json.JSONDecodeError as e:
        raise HyperCloneError(f"{run_file} is not valid JSON ({e.msg}); the run directory is damaged") from None
    events, warnings = read_events(run_dir)
    return result_from_events(run, events, run_dir, warnings)


def result_from_events(run: dict, events: Iterable[dict], run_dir: Path | None, warnings: list[str]) -> RaceResult:
    """A ``RaceResult`` from the content of run.json and the (superseded-filtered) events."""
    events = list(events)
    return RaceResult(
        config=run["config"],
        info={k: v for k, v in run.items() if k != "config"},
        records=[e for e in events if e.get("event") == "metrics"],
        events=[e for e in events if e.get("event") != "metrics"],
        run_dir=run_dir,
        warnings=warnings,
    )
