"""What a race produced: its records, their status and fairness, and the speed-ups read off its curves.

Kept apart from ``train.py`` so that reading a finished run (``runs.load_run``), the plots and the
dashboard never need the training machinery. The arithmetic on curves lives in ``speedups.py``, the
run directory on disk in ``runs.py``, the text tables in ``report.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperclone.training.report import curves_table, results_table
from hyperclone.training.speedups import (BASELINE, HorizonPoint, Readout, Speedup, pick_baseline, readout, speedup,
                       speedup_vs_horizon)

STATUS_EVENTS = ("finished", "diverged", "stopped")


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
        return sorted((record for record in self.records if record["contestant"] == name),
                      key=lambda record: record["step"])

    def curve(self, name: str, metric: str = "val_loss", x: str = "tokens") -> list[tuple[float, float]]:
        """(x, metric) pairs of one contestant where the metric was measured."""
        return [(record[x], record[metric]) for record in self.history(name) if record.get(metric) is not None]

    def final(self, name: str) -> dict | None:
        """The last metric record of a contestant (None before its first evaluation)."""
        history = self.history(name)
        return history[-1] if history else None

    def status(self, name: str) -> tuple[str, str]:
        """(status, message): ``finished``, ``diverged``, ``stopped``, ``failed`` or ``running`` (incomplete)."""
        last = None
        for event in self.events:
            if event.get("contestant") == name and event["event"] in STATUS_EVENTS:
                last = event
        if last is not None:
            return last["event"], last.get("message", "")
        errors = [event["message"] for event in self.events if event["event"] == "error"]
        if errors:
            return "failed", errors[0]
        return "running", "no final event: the run is in progress or was killed"

    @property
    def all_diverged(self) -> bool:
        """True when every contestant diverged: no curve reached an end, so no speed-up can be measured."""
        return all(self.status(n)[0] == "diverged" for n in self.contestants)

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
        for record in self.records:
            if record.get("data_sha1"):
                by_step.setdefault(record["step"], set()).add(record["data_sha1"])
        return all(len(v) == 1 for v in by_step.values())

    # -- speed-ups ---------------------------------------------------------- #
    def source_flops(self) -> float | None:
        """FLOPs the source model's own training cost (6·N·tokens), or None if unknown."""
        tokens, n = (self.info.get("source", {}).get(k) for k in ("train_tokens", "flop_params"))
        return 6.0 * n * tokens if tokens is not None and n is not None else None

    @property
    def baseline(self) -> str | None:
        """The random-init contestant the others are measured against (the best one when several race)."""
        return pick_baseline(self.contestants, {n: self.curve(n) for n in self.contestants})

    def readouts(self) -> list[Readout]:
        """Every other contestant against the baseline at the tokens both have trained (none if all diverged)."""
        base = self.baseline
        if self.all_diverged:
            return []
        return [readout(self.curve(n), self.curve(base), (n, base)) for n in self.contestants if n != base and base]

    def horizon(self, name: str, definition: str = "a") -> list[HorizonPoint]:
        """``speedup_vs_horizon`` of contestant ``name`` over the baseline (x: tokens per wide parameter)."""
        base = self.baseline
        params = self.info.get("contestants", {}).get(base or "", {}).get("params")
        if base is None or not params:
            return []
        return speedup_vs_horizon(self.curve(name), self.curve(base), params, definition)

    def speedups(self, baseline: str | None = None) -> list[Speedup]:
        """Speed-ups (a) and (b) of every other contestant over ``baseline`` (default: the best random init);
        none when every contestant diverged."""
        baseline = baseline or self.baseline
        if baseline not in self.contestants or self.all_diverged:
            return []
        params = self.info.get("contestants", {})
        out = []
        for name in self.contestants:
            if name == baseline:
                continue
            flop_params = (params.get(name, {}).get("flop_params"), params.get(baseline, {}).get("flop_params"))
            at = params.get(name, {}).get("grow_at")  # staged: its first tokens cost the small model's FLOPs
            grown = (at * self.config["batch_size"] * self.config["seq_len"],
                     params[name]["flop_params_before"]) if at is not None else None
            for definition in ("a", "b"):
                out.append(speedup(self.curve(name), self.curve(baseline), definition, names=(name, baseline),
                                   flop_params=flop_params if None not in flop_params else None,
                                   source_flops=None if name.partition("@")[0] == BASELINE else self.source_flops(),
                                   grown=grown))
        return out

    # -- text --------------------------------------------------------------- #
    def table(self) -> str:
        """Final figures per contestant, then both speed-ups, as plain text."""
        return results_table(self)

    def curves_table(self, metric: str = "val_loss") -> str:
        """One row per evaluation step with a value, one column per contestant (plain text)."""
        return curves_table(self, metric)
