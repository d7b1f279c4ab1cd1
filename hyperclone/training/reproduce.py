"""``hyperclone reproduce``: the paper's comparison at micro scale, as one resumable command.

The paper (arXiv 2409.12903) trains a 2x clone and the same wide model from random init with every
hyperparameter shared, for a fixed budget, and reports speed-up (b): random init's total tokens ÷ the
tokens the clone needs to reach random init's final loss. This module plans and runs that comparison on a
micro source, so that random init really catches up within the budget and (b) is measured, not bounded:

1. **Sweep** at ``sweep_horizon`` tokens per wide parameter: random init and the clone, each at every lr
   of the grid (a grid whose winner sits at an edge grows by one point that way, at most twice).
2. **Horizons**: every budget in ``horizons`` is its own complete cosine schedule (warm-up, decay to
   ``min_lr_ratio``), like the paper's runs; not a point in the middle of a longer run. Random init runs
   at the sweep's winner W and its better neighbour N (the baseline is the better of the two); the clone
   runs with the paper's recipe (lr W, shared) and with its own sweep winner C. At horizons longer than
   the sweep's, N and C run only with ``thorough`` (they are the costliest runs).
3. **Seeds** at the sweep horizon: random init at W and the paper-recipe clone with each seed.
4. **Variants** at the sweep horizon: every clone variant with the paper's recipe, seed 0.

Each run is a ``hyperclone race`` with one contestant in its own process (one thread each, ``workers``
at once), in ``OUT/runs/NAME``; batches depend only on (seed, step), so runs with the same seed see the
same data. A finished run is never run again; an unfinished one resumes from its last checkpoint.
``report.py`` (this layer) turns the finished runs into the report's numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from hyperclone.core.errors import HyperCloneError, quoted
from hyperclone.core.growth import VARIANTS
from hyperclone.training.config import format_lr
from hyperclone.training.runs import METRICS_FILE, RUN_FILE

CLONE_VARIANT = "noisy_symmetric"  # the clone of the sweeps, horizons and seeds: noise breaks the copies' symmetry
REPORT_FILE = "report.json"
RUNS_DIR = "runs"
DEFAULT_SOURCE = "micro-gpt2-stdlib"


@dataclass(frozen=True)
class ReproduceConfig:
    """What ``reproduce`` compares, and at which budgets (tokens per wide parameter)."""

    source: str = DEFAULT_SOURCE
    factor: int = 2
    data: str = "builtin-large"
    clone: str = CLONE_VARIANT
    horizons: tuple[float, ...] = (5.0, 20.0, 50.0)
    sweep_horizon: float = 20.0
    # Centred where the first recorded report's sweep found both winners (1e-2, after growing 1e-3..1e-2 to 3e-2),
    # so the default no longer pays for a known-losing edge; a winner at an edge still grows the grid.
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = VARIANTS
    batch_size: int = 16
    seq_len: int = 128
    warmup: int = 100
    min_lr_ratio: float = 0.1
    eval_every: int = 50
    eval_windows: int = 64
    checkpoint_every: int = 500
    thorough: bool = False
    wide_params: int = 0  # the wide model's parameters (filled in by ``with_wide_params``)

    def validate(self) -> "ReproduceConfig":
        """This config, or a one-line error naming the first thing that cannot work."""
        if self.sweep_horizon not in self.horizons:
            raise HyperCloneError(f"the sweep horizon {self.sweep_horizon:g} must be one of the horizons "
                                  f"({', '.join(f'{h:g}' for h in self.horizons)})")
        if any(not (isinstance(h, (int, float)) and 0 < h <= 1000) for h in self.horizons):
            raise HyperCloneError("horizons are tokens per wide parameter, each above 0 and at most 1000")
        if len(self.lrs) < 3 or any(not (isinstance(v, (int, float)) and 0 < v < 1) for v in self.lrs):
            raise HyperCloneError("the lr grid needs at least 3 learning rates, each between 0 and 1")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise HyperCloneError("seeds must be distinct whole numbers >= 0, e.g. 0,1,2")
        unknown = [v for v in (self.clone, *self.variants) if v not in VARIANTS]
        if unknown:
            raise HyperCloneError(f"unknown clone variant {quoted(unknown[0])}; choose from {', '.join(VARIANTS)}")
        for name in ("batch_size", "seq_len", "eval_every", "eval_windows", "checkpoint_every", "factor"):
            if getattr(self, name) < 1:
                raise HyperCloneError(f"{name} must be a whole number >= 1, got {getattr(self, name)}")
        return self

    def steps_at(self, horizon: float) -> int:
        """Training steps that give ``horizon`` tokens per wide parameter (at least 1)."""
        return max(1, round(horizon * self.wide_params / (self.batch_size * self.seq_len)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlannedRun:
    """One single-contestant race of the report: what it trains, at which budget, and why."""

    horizon: float
    kind: str  # "random" or a clone variant
    lr: float
    seed: int
    parts: tuple[str, ...] = ("sweep",)  # the report's sections that read it

    @property
    def name(self) -> str:
        return f"h{self.horizon:g}-{self.kind}-lr{format_lr(self.lr)}-seed{self.seed}"

    def race_settings(self, cfg: ReproduceConfig) -> dict:
        """The ``race`` settings of this run (what its ``run.json`` must hold)."""
        return dict(source=cfg.source, factor=cfg.factor, contestants=(self.kind,), data=cfg.data,
                    steps=cfg.steps_at(self.horizon), batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                    lr=self.lr, min_lr_ratio=cfg.min_lr_ratio, warmup=cfg.warmup, schedule="cosine",
                    eval_every=cfg.eval_every, eval_windows=cfg.eval_windows, seed=self.seed,
                    precision="fp32", checkpoint_every=cfg.checkpoint_every)

    def command(self, cfg: ReproduceConfig, run_dir: Path, resume: bool) -> list[str]:
        """The ``hyperclone race`` command line that makes (or resumes) this run."""
        if resume:
            return [sys.executable, "-m", "hyperclone", "-q", "race", "--run-dir", str(run_dir), "--resume",
                    "--no-progress", "--device", "cpu"]
        args = [sys.executable, "-m", "hyperclone", "-q", "race", "--run-dir", str(run_dir), "--no-progress",
                "--device", "cpu"]
        for key, value in self.race_settings(cfg).items():
            text = ",".join(value) if isinstance(value, tuple) else format_lr(value) if isinstance(value, float) \
                else str(value)
            args += [f"--{key.replace('_', '-')}", text]
        return args


# --------------------------------------------------------------------------- #
# The plan: which runs, given what has finished
# --------------------------------------------------------------------------- #
Finals = dict[str, float]  # run name -> final validation loss (inf when it diverged)


def sweep_runs(cfg: ReproduceConfig, grid: dict[str, tuple[float, ...]]) -> list[PlannedRun]:
    """The sweep at the sweep horizon: random init and the clone at every lr of their grids, seed 0."""
    return [PlannedRun(cfg.sweep_horizon, kind, lr, cfg.seeds[0]) for kind in ("random", cfg.clone)
            for lr in grid[kind]]


def grown_grid(grid: tuple[float, ...], finals: list[float | None]) -> tuple[float, ...] | None:
    """The grid with one more point past an edge that won (None: the winner is inside, or not known yet)."""
    if any(f is None for f in finals):
        return None
    best = min(range(len(grid)), key=lambda i: finals[i])
    if 0 < best < len(grid) - 1:
        return None
    ordered = sorted(grid)
    return tuple(sorted((*grid, next_lr(ordered[0], up=False) if grid[best] == ordered[0]
                         else next_lr(ordered[-1], up=True))))


def next_lr(lr: float, up: bool) -> float:
    """The next learning rate past ``lr`` on the 1-3-10 ladder (1e-3, 3e-3, 1e-2, ...); x3 off the ladder."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = round(lr / 10**exponent, 6)
    if mantissa == 1:
        return float(f"{3 if up else 3}e{exponent if up else exponent - 1}")
    if mantissa == 3:
        return float(f"1e{exponent + 1 if up else exponent}")
    return float(f"{lr * 3 if up else lr / 3:.3g}")


def sweep_grids(cfg: ReproduceConfig, finals: Finals, max_growth: int = 2) -> tuple[dict, bool]:
    """Each kind's lr grid (grown where an edge won) and whether every grid is settled."""
    grids, settled = grid_states(cfg, finals, max_growth)
    return grids, all(settled.values())


def grid_states(cfg: ReproduceConfig, finals: Finals, max_growth: int = 2) -> tuple[dict, dict]:
    """Each kind's lr grid (grown where an edge won) and, per kind, whether its grid is settled."""
    grids, settled = {}, {}
    for kind in ("random", cfg.clone):
        grid = tuple(sorted(cfg.lrs))
        for _ in range(max_growth):
            runs = [PlannedRun(cfg.sweep_horizon, kind, lr, cfg.seeds[0]) for lr in grid]
            grown = grown_grid(grid, [finals.get(r.name) for r in runs])
            if grown is None:
                break
            grid = grown
        runs = [PlannedRun(cfg.sweep_horizon, kind, lr, cfg.seeds[0]) for lr in grid]
        settled[kind] = all(r.name in finals for r in runs)
        grids[kind] = grid
    return grids, settled


def winners(cfg: ReproduceConfig, grids: dict, finals: Finals, clone_settled: bool = True) -> dict:
    """W (random's best lr), N (its better neighbour) and C (the clone's best lr; None while the clone's sweep
    is not settled), from the sweep."""
    def final(kind: str, lr: float) -> float:
        return finals[PlannedRun(cfg.sweep_horizon, kind, lr, cfg.seeds[0]).name]

    rgrid = grids["random"]
    w = min(rgrid, key=lambda lr: final("random", lr))
    i = rgrid.index(w)
    neighbours = [rgrid[j] for j in (i - 1, i + 1) if 0 <= j < len(rgrid)]
    n = min(neighbours, key=lambda lr: final("random", lr))
    c = min(grids[cfg.clone], key=lambda lr: final(cfg.clone, lr)) if clone_settled else None
    return {"W": w, "N": n, "C": c}


def later_runs(cfg: ReproduceConfig, lrs: dict) -> list[PlannedRun]:
    """Horizons, seeds and variants, once the sweep's winners are known; longest first, so the short runs fill the
    last gaps of the workers instead of one long run ending alone (C None: the runs of the clone's own best lr wait
    for its sweep)."""
    w, n, c, h0, s0 = lrs["W"], lrs["N"], lrs["C"], cfg.sweep_horizon, cfg.seeds[0]
    runs = [PlannedRun(h0, cfg.clone, w, s0, ("horizon",))]  # the paper's clone (a sweep run unless W grew past it)
    for h in sorted(cfg.horizons, reverse=True):
        if h == h0:
            continue
        extra = h < h0 or cfg.thorough  # the neighbour and the clone's own winner past the sweep: thorough only
        runs += [PlannedRun(h, "random", w, s0, ("horizon",)), PlannedRun(h, cfg.clone, w, s0, ("horizon",))]
        runs += [PlannedRun(h, "random", n, s0, ("horizon",))] if extra else []
        runs += [PlannedRun(h, cfg.clone, c, s0, ("horizon",))] if extra and c is not None and c != w else []
    for seed in cfg.seeds[1:]:
        runs += [PlannedRun(h0, "random", w, seed, ("seeds",)), PlannedRun(h0, cfg.clone, w, seed, ("seeds",))]
    runs += [PlannedRun(h0, v, w, s0, ("variants",)) for v in cfg.variants if v != cfg.clone]
    return sorted(runs, key=lambda r: -r.horizon)  # stable: the order above within a horizon


def planned_runs(cfg: ReproduceConfig, finals: Finals) -> tuple[list[PlannedRun], bool]:
    """The runs known to be needed so far, in the order to start them, and whether the plan is complete."""
    grids, settled = grid_states(cfg, finals)
    runs = sweep_runs(cfg, grids)
    if not settled["random"]:  # everything after the sweep races random init's winner
        return runs, False
    later = [r for r in later_runs(cfg, winners(cfg, grids, finals, settled[cfg.clone]))
             if r.name not in {s.name for s in runs}]
    return runs + later, settled[cfg.clone]


def full_plan_estimate(cfg: ReproduceConfig) -> list[PlannedRun]:
    """The runs of a sweep whose winners sit inside the grid (W = C = the middle lr): the estimate's plan."""
    grid = tuple(sorted(cfg.lrs))
    mid = grid[len(grid) // 2]
    sweep = sweep_runs(cfg, {"random": grid, cfg.clone: grid})
    return sweep + [r for r in later_runs(cfg, {"W": mid, "N": grid[0], "C": mid})
                    if r.name not in {s.name for s in sweep}]


# --------------------------------------------------------------------------- #
# Running: one process per run, ``workers`` at a time
# --------------------------------------------------------------------------- #
@dataclass
class RunState:
    """What is known of one planned run on disk."""

    run: PlannedRun
    steps_done: int = 0
    final: float | None = None  # set once the run finished (inf: diverged)


def read_progress(run_dir: Path) -> tuple[int, float | None, bool]:
    """(last evaluated step, its val loss, finished) of a run directory, from its metrics log."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return 0, None, False
    step, loss, finished = 0, None, False
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill: the race's own resume drops it
        if event.get("event") == "metrics":
            step, loss = event["step"], event.get("val_loss")
        elif event.get("event") in ("finished", "diverged"):
            finished = True
            loss = math.inf if event["event"] == "diverged" else loss
    return step, loss, finished


def check_same_settings(run: PlannedRun, cfg: ReproduceConfig, run_dir: Path) -> None:
    """A run directory made with other settings is never reused (or overwritten): one line saying so."""
    from hyperclone.training.runs import run_config

    stored = asdict(run_config(run_dir))
    wanted = run.race_settings(cfg)
    differ = [k for k, v in wanted.items() if (tuple(stored[k]) if isinstance(v, tuple) else stored[k]) != v]
    if differ:
        raise HyperCloneError(f"{run_dir} holds a run with other settings ({', '.join(differ)}); give "
                              "reproduce another --out, or move that run away")


def run_states(cfg: ReproduceConfig, runs_dir: Path, runs: Iterable[PlannedRun],
               finished: dict[str, RunState] | None = None) -> dict[str, RunState]:
    """Each planned run's progress on disk (a directory made with other settings: one-line error); a run in
    ``finished`` (states read before, of runs that had ended) is not read again, and each newly ended run joins it."""
    finished = {} if finished is None else finished
    states = {}
    for run in runs:
        if run.name in finished:
            states[run.name] = finished[run.name]
            continue
        run_dir = runs_dir / run.name
        step, loss, ended = read_progress(run_dir)
        if (run_dir / RUN_FILE).exists():
            check_same_settings(run, cfg, run_dir)
        states[run.name] = RunState(run, step, (loss if loss is not None else math.inf) if ended else None)
        if ended:
            finished[run.name] = states[run.name]
    return states


def finals_of(states: dict[str, RunState]) -> Finals:
    return {name: s.final for name, s in states.items() if s.final is not None}


def current_plan(cfg: ReproduceConfig, runs_dir: Path, finished: dict[str, RunState] | None = None
                 ) -> tuple[list[PlannedRun], bool, dict[str, RunState]]:
    """The runs needed given what has finished on disk, whether that plan is complete, and their states
    (``finished``: see ``run_states``)."""
    finals: Finals = {}
    while True:  # each pass may learn a sweep result that grows the grid or settles the winners
        known, complete = planned_runs(cfg, finals)
        states = run_states(cfg, runs_dir, known, finished)
        if finals_of(states) == finals:
            return known, complete, states
        finals = finals_of(states)


@dataclass
class Workers:
    """The runs in progress: one ``hyperclone race`` process each, one thread each."""

    cfg: ReproduceConfig
    runs_dir: Path
    size: int
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, run: PlannedRun) -> None:
        run_dir = self.runs_dir / run.name
        resume = (run_dir / METRICS_FILE).exists()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        log = open(self.runs_dir / f"{run.name}.log", "ab")
        self.running[run.name] = subprocess.Popen(run.command(self.cfg, run_dir, resume), env=env, stdout=log,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def reap(self) -> None:
        """Forget the processes that ended; a run that failed is a one-line error (the others are stopped)."""
        for name, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[name]
            if proc.returncode != 0:
                self.stop()
                tail = (self.runs_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
                raise HyperCloneError(f"run {name} failed ({tail[-1] if tail else f'exit {proc.returncode}'}); "
                                      "fix that, then run again with --resume to go on")

    def stop(self) -> None:
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.running.clear()


Progress = Callable[[dict], None]


def run_plan(cfg: ReproduceConfig, runs_dir: Path, workers: int = 2, progress: Progress | None = None,
             poll_seconds: float = 2.0) -> dict[str, RunState]:
    """Run every planned run (finished ones are kept, unfinished ones resume) and return their states."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    pool = Workers(cfg, runs_dir, workers)
    finished: dict[str, RunState] = {}  # ended runs never change: read once
    try:
        while True:
            pool.reap()
            known, complete, states = current_plan(cfg, runs_dir, finished)
            todo = [r for r in known if states[r.name].final is None and r.name not in pool.running]
            if complete and not todo and not pool.running:
                return states
            while todo and len(pool.running) < workers:
                pool.start(todo.pop(0))
            if progress is not None:
                progress({"steps_done": sum(cfg.steps_at(s.run.horizon) if s.final is not None else s.steps_done
                                            for s in states.values()),
                          "runs_done": sum(s.final is not None for s in states.values()),
                          "running": sorted(pool.running), "complete_plan": complete})
            time.sleep(poll_seconds)
    except BaseException:
        pool.stop()
        raise
