"""A race as plain text: the final-figures table with both speed-ups, and the curves side by side.

Only formatting lives here; every figure comes from the ``RaceResult`` passed
in (``result.final``, ``result.status``, ``result.speedups``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperclone.training.speedups import format_tokens

if TYPE_CHECKING:  # for the annotations only: results.py imports this module
    from hyperclone.training.results import RaceResult

FINAL_COLUMNS = ("contestant", "params", "steps", "tokens", "val loss", "best", "accuracy", "symmetry", "seconds",
                 "status")


def align(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines of columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def _figure(record: dict, key: str, fmt: str = ".4f") -> str:
    value = record.get(key)
    return format(value, fmt) if value is not None else "-"


def final_row(result: RaceResult, name: str) -> tuple[str, ...]:
    """One contestant's row of the final-figures table."""
    last = result.final(name) or {}
    best = min((r["val_loss"] for r in result.history(name) if r.get("val_loss") is not None), default=None)
    params = result.info.get("contestants", {}).get(name, {}).get("params")
    return (
        name,
        f"{params / 1e6:.2f}M" if params else "?",
        str(last.get("step", "-")),
        format_tokens(last["tokens"]) if last else "-",
        _figure(last, "val_loss"),
        f"{best:.4f}" if best is not None else "-",
        _figure(last, "val_accuracy"),
        _figure(last, "symmetry"),
        _figure(last, "seconds", ".0f"),
        result.status(name)[0],
    )


def recipe_lines(result: RaceResult) -> list[str]:
    """Each contestant's learning rate (peak, warm-up, schedule) and how it was chosen."""
    from hyperclone.training.config import RaceConfig, Schedule, recipe_words

    cfg = RaceConfig.from_dict(result.config)
    lines = ["", "learning rate per contestant (peak, warm-up, schedule after it) [how it was chosen]:"]
    for name in result.contestants:
        stored = result.info.get("contestants", {}).get(name, {}).get("recipe")
        keys = ("lr", "warmup", "schedule", "min_lr_ratio", "recipe", "chosen")
        schedule = Schedule(**{k: stored[k] for k in keys}) if stored else cfg.schedule_for(name)
        divided = f"; lr/k on {stored['lr_divided_weights']} weights" if stored and stored["lr_divided_weights"] else ""
        lines.append(f"  {recipe_words(name, schedule)}{divided}")
    if result.config.get("auto_recipe"):
        lines.append(f"  {result.config['auto_recipe']}")
    return lines


ALL_DIVERGED = "no speed-up can be measured: every contestant diverged (why: above)"


def result_sentence(result: RaceResult) -> str | None:
    """What a race shows, in one sentence made from its numbers: the clone that ended lowest against the baseline,
    at equal tokens (None before the first evaluation past 0 tokens, or without a clone and a baseline)."""
    readouts = [r for r in result.readouts()
                if r.tokens > 0 and r.loss is not None and not r.contestant.startswith("source")]
    if not readouts:
        return None
    best = min(readouts, key=lambda r: r.loss)
    return f"What this race shows: {best.words}."


def readout_lines(result: RaceResult) -> list[str]:
    """Every contestant against the baseline at the tokens both have trained, in words."""
    if result.all_diverged:
        return ["", ALL_DIVERGED]
    readouts = result.readouts()
    if not readouts:
        return []
    return ["", f"at equal tokens (only the tokens both have trained; baseline {result.baseline}):"] + [
        f"  {r.words}" for r in readouts]


def speedup_lines(result: RaceResult) -> list[str]:
    """Both speed-ups of every contestant over random init, in tokens, then counting the source's training."""
    speedups = result.speedups()
    if not speedups:
        return []
    randoms = [n for n in result.contestants if n.partition("@")[0] == "random"]
    chosen = f" ({result.baseline}: the lowest final loss of {len(randoms)} random-init recipes)" \
        if len(randoms) > 1 else ""
    lines = ["", f"speed-up over random init{chosen} (tokens; linear interpolation between evaluations):"]
    lines += [f"  {s.contestant:<16} {s.describe()}" for s in speedups]
    source_flops = result.source_flops()
    if source_flops is None:
        lines.append("  counting the source's own training: unknown (no record of its training tokens)")
        return lines
    tokens = result.info.get("source", {})["train_tokens"]
    lines.append(f"counting the source's own training too ({format_tokens(tokens)} tokens, "
                 f"{source_flops:.3g} FLOPs; speed-up in FLOPs, 6·N·tokens):")
    lines += [f"  {s.contestant:<16} ({s.definition}) {s.describe_with_source()}" for s in speedups]
    return lines


def results_table(result: RaceResult) -> str:
    """Final figures per contestant, why any did not finish, then both speed-ups, as plain text."""
    lines = align([FINAL_COLUMNS, *(final_row(result, name) for name in result.contestants)])
    for name in result.contestants:
        status, message = result.status(name)
        if status != "finished" and message:
            lines.append(f"  {name}: {message}")
    return "\n".join(lines + recipe_lines(result) + readout_lines(result) + speedup_lines(result))


def curves_table(result: RaceResult, metric: str = "val_loss") -> str:
    """One row per evaluation step with a value, one column per contestant (plain text)."""
    steps = sorted({r["step"] for r in result.records})
    by_cell: dict[tuple[str, int], dict] = {(r["contestant"], r["step"]): r for r in result.records}
    rows = [("step", "tokens", *result.contestants)]
    for step in steps:
        tokens = next(r["tokens"] for r in result.records if r["step"] == step)
        values = []
        for name in result.contestants:
            record = by_cell.get((name, step))
            value = record.get(metric) if record else None
            values.append(f"{value:.4f}" if isinstance(value, (int, float)) else "")
        if any(values):  # e.g. symmetry while only random init is still training
            rows.append((str(step), format_tokens(tokens), *values))
    return "\n".join(align(rows))
