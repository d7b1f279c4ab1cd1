"""The numbers of ``hyperclone reproduce``'s report, from its finished runs: pure arithmetic on loss curves.

Per horizon (tokens per wide parameter): random init's final loss at W and its neighbour (the baseline is
the better), the clone's with the paper's recipe and with its own best lr, speed-ups (a) and (b) of each
(``speedups.speedup``: measured, or a bound when the target was not reached), both also in FLOPs with the
source's own training counted; (b) over seeds as mean ± spread; the four variants; the dip after cloning;
and one summary sentence made from these numbers, beside the paper's claim.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from pathlib import Path

from hyperclone.core.errors import HyperCloneError, quoted
from hyperclone.io.atomic import write_atomic
from hyperclone.training.reproduce import (DEFAULT_SOURCE, REPORT_FILE, RUNS_DIR, PlannedRun, Progress,
                                           ReproduceConfig, RunState, finals_of, full_plan_estimate, run_plan,
                                           sweep_grids, winners)
from hyperclone.training.speedups import Speedup, format_tokens, speedup, tokens_to_reach

PAPER_B = (2.2, 4.0)  # the paper's speed-up (b): OPT ~2.2x, Pythia ~3x, OLMo ~4x
PAPER_HORIZON = "~100-200 tokens per parameter"
CLAIM = 2.0  # the claim tested here: (b) >= 2x


def run_curve(runs_dir: Path, run: PlannedRun) -> dict:
    """One run's (tokens, val loss) curve, final loss, status and sizes, from its run directory."""
    from hyperclone.training.runs import load_run

    result = load_run(runs_dir / run.name)
    info = result.info
    curve = [(float(t), float(v)) for t, v in result.curve(run.kind) if v is not None and math.isfinite(v)]
    status = result.status(run.kind)[0]
    return {"name": run.name, "kind": run.kind, "lr": run.lr, "seed": run.seed, "horizon": run.horizon,
            "status": status, "curve": curve,
            "final": curve[-1][1] if curve and status == "finished" else math.inf,
            "start": curve[0][1] if curve else math.nan,
            "params": info["contestants"][run.kind]["params"],
            "flop_params": info["contestants"][run.kind]["flop_params"], "source": info.get("source", {})}


def speedup_entry(s: Speedup) -> dict:
    """A speed-up as the report stores it: the value when measured, else the bound, and why."""
    return {"value": s.value, "measured": s.value is not None, "bound": list(s.bound) if s.bound else None,
            "with_source": s.value_with_source,
            "with_source_bound": list(s.bound_with_source) if s.bound_with_source else None,
            "target_loss": s.target_loss, "tokens_clone": s.tokens_contestant, "tokens_random": s.tokens_baseline,
            "message": s.message}


def not_finished(run: dict) -> dict:
    """The speed-up entry of a clone run that diverged (or stopped): no value, no bound."""
    return {"value": None, "measured": False, "bound": None, "with_source": None, "with_source_bound": None,
            "target_loss": None, "tokens_clone": None, "tokens_random": None, "status": run["status"],
            "message": f"{run['name']} {run['status']}: no speed-up"}


def compare(clone: dict, baseline: dict, per_param: float) -> dict:
    """(a) and (b) of a clone run against a random-init run, with the source's training FLOPs counted too."""
    src = clone["source"]
    source_flops = (6.0 * src["flop_params"] * src["train_tokens"]
                    if src.get("train_tokens") and src.get("flop_params") else None)
    kw = dict(names=(clone["name"], baseline["name"]), flop_params=(clone["flop_params"], baseline["flop_params"]),
              source_flops=source_flops)
    b, a = (speedup_entry(speedup(clone["curve"], baseline["curve"], d, **kw)) if clone["status"] == "finished"
            else not_finished(clone) for d in ("b", "a"))
    return {"b": b, "a": a, "clone_final": clone["final"],
            "random_final": baseline["final"], "clone_start": clone["start"],
            "random_ends_below_clone_start": baseline["final"] < clone["start"], "dip": dip(clone, per_param)}


def dip(run: dict, per_param: float) -> dict:
    """How far the loss rose above its start after cloning (nats), and the tokens per wide parameter until
    it was back at its start (None: never within the run)."""
    curve = run["curve"]
    start = curve[0][1]
    rest = curve[1:]
    back = tokens_to_reach(rest, start)
    peak, highest = max(((t, loss) for t, loss in rest if back is None or t < back), key=lambda p: p[1],
                        default=(0.0, start))
    depth = max(0.0, highest - start)
    peak = peak if depth > 0 else 0.0
    return {"depth": round(depth, 4), "peak_at": peak / per_param,
            "back_at": (back / per_param if back is not None else None) if depth > 0 else 0.0}


def horizon_section(cfg: ReproduceConfig, h: float, lrs: dict, curves: dict) -> dict:
    """One horizon: random init at W (and N where run), the baseline, and the clone's two recipes."""
    def get(kind: str, lr: float) -> dict | None:
        return curves.get(PlannedRun(h, kind, lr, cfg.seeds[0]).name)

    randoms = {lr: get("random", lr) for lr in dict.fromkeys((lrs["W"], lrs["N"])) if get("random", lr)}
    baseline = min(randoms.values(), key=lambda r: r["final"])
    per_param = baseline["params"]
    recipes = [("paper", lrs["W"]), ("best", lrs["C"])]
    out = []
    for recipe, lr in recipes:
        clone = get(cfg.clone, lr)
        if clone is not None:
            out.append({"recipe": recipe, "lr": lr, **compare(clone, baseline, per_param)})
    paper = get(cfg.clone, lrs["W"])
    return {"horizon": h, "tokens": baseline["curve"][-1][0], "steps": cfg.steps_at(h),
            "curves": {"random": thinned(baseline["curve"]), "clone": thinned(paper["curve"]) if paper else []},
            "random": {"lr": baseline["lr"], "final": baseline["final"],
                       "checked": {str(lr): r["final"] for lr, r in randoms.items()}},
            "recipes": out}


def thinned(curve: list, most: int = 120) -> list:
    """At most ``most`` points of a curve for the report's figure (first and last kept), rounded."""
    step = max(1, math.ceil(len(curve) / most))
    keep = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    return [[int(t), round(loss, 4)] for t, loss in keep]


def seeds_section(cfg: ReproduceConfig, lrs: dict, curves: dict) -> dict:
    """(b) and the final losses per seed at the sweep horizon, with the paper's recipe; mean ± spread."""
    rows = []
    for seed in cfg.seeds:
        clone = curves[PlannedRun(cfg.sweep_horizon, cfg.clone, lrs["W"], seed).name]
        rand = curves[PlannedRun(cfg.sweep_horizon, "random", lrs["W"], seed).name]
        rows.append({"seed": seed, **compare(clone, rand, rand["params"])})
    values = [r["b"]["value"] for r in rows]
    measured = all(v is not None for v in values)
    return {"horizon": cfg.sweep_horizon, "rows": rows, "all_measured": measured,
            "b_mean": statistics.fmean(values) if measured else None,
            "b_sd": statistics.stdev(values) if measured and len(values) > 1 else None,
            "b_range": [min(values), max(values)] if measured else None}


def variants_section(cfg: ReproduceConfig, lrs: dict, curves: dict) -> list[dict]:
    """Every clone variant at the sweep horizon with the paper's recipe, seed 0, against random init at W."""
    rand = curves[PlannedRun(cfg.sweep_horizon, "random", lrs["W"], cfg.seeds[0]).name]
    return [{"variant": v, **compare(curves[PlannedRun(cfg.sweep_horizon, v, lrs["W"], cfg.seeds[0]).name], rand,
                                      rand["params"])}
            for v in dict.fromkeys((cfg.clone, *cfg.variants))]


def sweep_section(cfg: ReproduceConfig, grids: dict, lrs: dict, curves: dict) -> dict:
    return {"horizon": cfg.sweep_horizon, "grids": {k: list(g) for k, g in grids.items()},
            "finals": {kind: {str(lr): curves[PlannedRun(cfg.sweep_horizon, kind, lr, cfg.seeds[0]).name]["final"]
                              for lr in grid} for kind, grid in grids.items()},
            "winners": {"random": lrs["W"], "random_neighbour": lrs["N"], "clone": lrs["C"]}}


def report_numbers(cfg: ReproduceConfig, runs_dir: Path, states: dict[str, RunState]) -> dict:
    """Every section of the report from the finished runs in ``runs_dir``."""
    grids, _ = sweep_grids(cfg, finals_of(states))
    lrs = winners(cfg, grids, finals_of(states))
    curves = {name: run_curve(runs_dir, s.run) for name, s in states.items()}
    report = {"sweep": sweep_section(cfg, grids, lrs, curves),
              "horizons": [horizon_section(cfg, h, lrs, curves) for h in sorted(cfg.horizons)],
              "seeds": seeds_section(cfg, lrs, curves),
              "variants": variants_section(cfg, lrs, curves),
              "runs": {name: {k: c[k] for k in ("kind", "lr", "seed", "horizon", "status", "final", "start")}
                       for name, c in curves.items()}}
    any_run = next(iter(curves.values()))
    report["wide_params"], report["source"] = any_run["params"], any_run["source"]
    report["claim"] = claim(report)
    report["summary"] = summary_sentence(cfg, report)
    return report


def paper_b(section: dict) -> dict:
    """The paper recipe's (b) entry of a horizon section."""
    return next(r for r in section["recipes"] if r["recipe"] == "paper")["b"]


def claim(report: dict) -> dict:
    """The paper's claim, (b) >= 2x, tested at the sweep horizon (seed mean) and at the longest horizon."""
    seeds = report["seeds"]
    longest = report["horizons"][-1]
    at_sweep = seeds["b_mean"]
    b_long = paper_b(longest)
    return {"threshold": CLAIM,
            "at_sweep": {"horizon": seeds["horizon"], "b": at_sweep, "met": at_sweep is not None and at_sweep >= CLAIM},
            "at_longest": {"horizon": longest["horizon"], "b": b_long["value"], "bound": b_long["bound"],
                           "met": b_long["value"] is not None and b_long["value"] >= CLAIM},
            "measured_at": [s["horizon"] for s in report["horizons"] if paper_b(s)["measured"]]}


def b_text(entry: dict) -> str:
    """(b) as words: the value, or the bound with its sign."""
    if entry["value"] is not None:
        return f"{entry['value']:.2f}x"
    if entry["tokens_clone"] == 0.0:
        return "unbounded (the clone started below random init's final loss)"
    if entry.get("status"):  # a clone run that diverged or stopped
        return entry["status"]
    return f"{entry['bound'][0]} {entry['bound'][1]:.2f}x (a bound)" if entry["bound"] else "not measurable"


def seeds_text(seeds: dict) -> str:
    """(b) over the seeds in words: mean ± sd, or each seed's when one was not measured."""
    if seeds.get("b_mean") is None:
        return "not measured on every seed (" + ", ".join(b_text(r["b"]) for r in seeds["rows"]) + ")"
    if seeds.get("b_sd") is None:
        return f"{seeds['b_mean']:.2f}x"
    return f"{seeds['b_mean']:.2f}x ± {seeds['b_sd']:.2g} (mean ± sd of {len(seeds['rows'])} seeds)"


def summary_sentence(cfg: ReproduceConfig, report: dict) -> str:
    """How much of the paper's claim holds at this scale, in one sentence made from the numbers."""
    seeds, c = report["seeds"], report["claim"]
    at_sweep = seeds_text(seeds)
    longest = report["horizons"][-1]
    verdict = ("holds at both" if c["at_sweep"]["met"] and c["at_longest"]["met"] else
               "holds at neither" if not c["at_sweep"]["met"] and not c["at_longest"]["met"] else
               f"holds at {c['at_sweep']['horizon']:g} only" if c["at_sweep"]["met"] else
               f"holds at {longest['horizon']:g} only")
    return (f"With the paper's recipe, speed-up (b) of the {cfg.factor}x clone of {cfg.source} over random init "
            f"is {at_sweep} at {seeds['horizon']:g} tokens per wide parameter and "
            f"{b_text(paper_b(longest))} at {longest['horizon']:g} (paper: {PAPER_B[0]}-{PAPER_B[1]:g}x at "
            f"{PAPER_HORIZON}); its claim, (b) >= {CLAIM:g}x, {verdict}.")


# --------------------------------------------------------------------------- #
# The whole report: plan, estimate, run, write
# --------------------------------------------------------------------------- #
PLAN_FILE = "reproduce.json"  # the report's settings, written before the first run (resume reads it)
MAY_DIFFER_ON_RESUME = {"thorough"}  # it only adds runs: a resumed report may turn it on


def with_wide_params(cfg: ReproduceConfig) -> ReproduceConfig:
    """The config with the wide model's parameter count, read from the source's config (no weights loaded)."""
    from dataclasses import replace

    from hyperclone.core.growth import Growth
    from hyperclone.core.resources import wide_parameters
    from hyperclone.io.sources import load_config, resolve_source

    _, where = resolve_source(cfg.source)
    return replace(cfg, wide_params=wide_parameters(load_config(where, cfg.source), Growth(cfg.factor)))


def planned_tokens(cfg: ReproduceConfig) -> int:
    """Training tokens of the whole plan (a sweep whose winners sit inside the grid)."""
    return sum(cfg.steps_at(r.horizon) for r in full_plan_estimate(cfg)) * cfg.batch_size * cfg.seq_len


def check_report_dir(out: Path, resume: bool) -> None:
    """A new report needs an empty or new ``out``; ``resume`` needs one that holds a report's plan."""
    if resume and not (out / PLAN_FILE).is_file():
        raise HyperCloneError(f"nothing to resume in {out} (no {PLAN_FILE}); start it without --resume")
    if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HyperCloneError(f"{out} is not empty; give a new --out, or --resume to continue the report there")


def open_report_dir(out: Path, cfg: ReproduceConfig, resume: bool) -> None:
    """Create ``out`` for a new report, or check that ``--resume`` continues one with the same settings."""
    stored = out / PLAN_FILE
    check_report_dir(out, resume)
    if resume:
        before = json.loads(stored.read_text())["config"]
        differ = [k for k, v in cfg.to_dict().items() if k in before and k not in MAY_DIFFER_ON_RESUME
                  and json.loads(json.dumps(v)) != before[k]]
        if differ:
            raise HyperCloneError(f"{out} holds a report with other settings ({', '.join(differ)}); resume it "
                                  "with the same ones, or give another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(stored, json.dumps({"config": cfg.to_dict(), "started": now_text()}, indent=1) + "\n")


def record_session(out: Path, t0: float, command: str | None) -> dict:
    """Add this call's wall time to ``reproduce.json`` (a report resumed twice took all three sessions)."""
    plan = json.loads((out / PLAN_FILE).read_text())
    plan.setdefault("sessions", []).append({"command": command, "ended": now_text(),
                                            "seconds": round(time.time() - t0, 1)})
    write_atomic(out / PLAN_FILE, json.dumps(plan, indent=1) + "\n")
    return plan


def now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def machine_facts() -> dict:
    import platform

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def reproduce(source: str = DEFAULT_SOURCE, out: str | os.PathLike = "reproduce", *, resume: bool = False,
              workers: int = 2, progress: Progress | None = None, command: str | None = None,
              **settings) -> dict:
    """Run the paper's comparison on ``source`` (see ``reproduce.py``) and write ``out/report.json``.

    ``settings``: any field of ``ReproduceConfig`` (horizons, lrs, seeds, variants, thorough, ...).
    Returns the report. Finished runs in ``out/runs`` are kept; ``resume`` continues a stopped report.
    """
    unknown = sorted(set(settings) - set(ReproduceConfig.__dataclass_fields__) - {"wide_params"})
    if unknown:
        raise HyperCloneError(f"reproduce has no setting {quoted(unknown[0])}; see ReproduceConfig")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise HyperCloneError(f"workers must be a whole number >= 1, got {workers!r}")
    cfg = with_wide_params(ReproduceConfig(source=source, **settings).validate())
    out = Path(out)
    open_report_dir(out, cfg, resume)
    t0 = time.time()
    try:
        states = run_plan(cfg, out / RUNS_DIR, workers, progress)
    finally:
        plan = record_session(out, t0, command)
    report = {"config": cfg.to_dict(), "command": plan["sessions"][0]["command"],  # the one that started it
              "started": plan["started"], "finished": now_text(),
              "seconds": round(sum(s["seconds"] for s in plan["sessions"]), 1), "sessions": plan["sessions"],
              "workers": workers, "machine": machine_facts(), **report_numbers(cfg, out / RUNS_DIR, states)}
    write_atomic(out / REPORT_FILE, json.dumps(report, indent=1, default=str) + "\n")
    return report


def measure_pace(cfg: ReproduceConfig, steps: int = 6) -> float:
    """Training tokens per second of the wide model on one CPU thread, timed on a few steps here and now.

    The race's own step (``loss_on``, its AdamW, its CPU settings: ``cpu_speed.py``), on random tokens.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from hyperclone.core.clone import make_plan
    from hyperclone.core.growth import Growth
    from hyperclone.io.sources import load_config, resolve_source
    from hyperclone.training.config import RaceConfig
    from hyperclone.training.contestants import make_optimizer
    from hyperclone.training.cpu_speed import denormals_flushed, keep_freed_memory
    from hyperclone.training.loop import loss_on

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    keep_freed_memory()
    try:
        config = make_plan(load_config(resolve_source(cfg.source)[1], cfg.source), Growth(cfg.factor)).wide_config()
        model = AutoModelForCausalLM.from_config(config)
        optimizer = make_optimizer(model, RaceConfig())
        x = torch.randint(0, config.vocab_size, (cfg.batch_size, cfg.seq_len + 1))
        with denormals_flushed(torch.device("cpu")):
            for i in range(steps + 2):
                if i == 2:
                    t0 = time.perf_counter()  # the first steps warm the allocator up
                loss_on(model, x[:, :-1], x[:, 1:]).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return steps * cfg.batch_size * cfg.seq_len / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


EVAL_SHARE = 1.05  # evaluations and process start-up, on top of the training steps


def estimate(source: str = DEFAULT_SOURCE, workers: int = 2, **settings) -> dict:
    """How many runs, steps and tokens the report plans, and how long it should take here (pace measured now)."""
    cfg = with_wide_params(ReproduceConfig(source=source, **settings).validate())
    runs = full_plan_estimate(cfg)
    steps = sum(cfg.steps_at(r.horizon) for r in runs)
    tokens = steps * cfg.batch_size * cfg.seq_len
    pace = measure_pace(cfg)
    seconds = tokens / (pace * min(workers, os.cpu_count() or 1)) * EVAL_SHARE
    low, high = seconds * 0.8, seconds * 1.5  # a busier machine is slower; a sweep edge adds runs
    text = (f"plan: {len(runs)} runs of the {cfg.wide_params:,}-parameter wide model, {format_tokens(tokens)} "
            f"tokens ({', '.join(f'{h:g}' for h in cfg.horizons)} tokens per wide parameter); measured pace "
            f"{pace:,.0f} tokens/s per thread, {workers} at once: about {minutes(low)} to {minutes(high)}")
    return {"runs": len(runs), "steps": steps, "tokens": tokens, "pace": pace, "seconds": seconds, "text": text}


# --------------------------------------------------------------------------- #
# Reading a report back (the shipped one, or one made here)
# --------------------------------------------------------------------------- #
REPORT_KEYS = ("config", "summary", "horizons", "sweep", "seeds", "variants", "claim", "wide_params")


def load_report(path: str | os.PathLike) -> dict:
    """The report in ``path`` (a report directory or its ``report.json``); a one-line error when it is missing,
    damaged or lacks a section."""
    path = Path(path)
    file = path / REPORT_FILE if path.is_dir() else path
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise HyperCloneError(f"{file} is not a readable report ({e.__class__.__name__}); make one with "
                              "hyperclone reproduce") from None
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise HyperCloneError(f"{file} is not a reproduce report: it lacks {', '.join(missing)}")
    return report


def shipped_reports(root: Path | None = None) -> dict[str, Path]:
    """The reports shipped under ``hyperclone/assets/runs`` (``NAME/report.json``), by name."""
    from hyperclone.training.recorded import RUNS_DIR as SHIPPED

    root = SHIPPED if root is None else root
    return {p.parent.name: p.parent for p in sorted(root.glob(f"*/{REPORT_FILE}"))}
