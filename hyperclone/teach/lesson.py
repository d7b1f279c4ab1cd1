"""What the guided lesson shows that the explorer does not: a hidden vector beside its clone's,
the quick race a lecture can afford, and how long that race will take on this machine.

Everything else the lesson draws (block heatmaps, the logit scatter, per-layer bars, loss and
symmetry curves) comes from ``heatmaps.py`` and ``plots.py``, as in the explorer.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from hyperclone.core.clone import clone
from hyperclone.core.growth import Growth
from hyperclone.training.config import RaceConfig, check_tokens_per_step
from hyperclone.training.setup import RACE_HINT
from hyperclone.core.resources import check_fits_in_memory, training_bytes


@torch.no_grad()
def hidden_vectors(source, wide, input_ids: torch.Tensor, layer: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual-stream vector after ``layer`` blocks at the last position: (source's [d], clone's [n*d])."""
    out = []
    for model in (source, wide):
        device = next(model.parameters()).device
        states = model(input_ids=input_ids.to(device), output_hidden_states=True, use_cache=False).hidden_states
        out.append(states[min(layer, len(states) - 1)][0, -1].float().cpu())
    return out[0], out[1]


def vector_figure(x: torch.Tensor, x_wide: torch.Tensor, factor: int) -> go.Figure:
    """The source's vector x above the clone's, drawn as colour strips on one scale, copy boundaries marked."""
    d = x.numel()
    lim = float(max(x.abs().max(), x_wide.abs().max())) or 1.0
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.35, subplot_titles=(
        f"source: x ({d} units)", f"clone: [x × {factor}] ({x_wide.numel()} units)"))
    for row, v in ((1, x), (2, x_wide)):
        fig.add_trace(go.Heatmap(z=[v.tolist()], zmin=-lim, zmax=lim, colorscale="RdBu", showscale=row == 2,
                                 hovertemplate="unit %{x}: %{z:.4f}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(showticklabels=False, row=row, col=1)
    for k in range(1, factor):
        fig.add_vline(x=k * d - 0.5, line=dict(color="black", width=3), row=2, col=1)
    fig.update_xaxes(title_text="unit of the residual stream", row=2, col=1)
    fig.update_layout(height=280, margin=dict(l=20, r=20, t=40, b=40),
                      title="The hidden vector after layer 1: the clone holds copies of the source's")
    return fig


def copies_agree(x: torch.Tensor, x_wide: torch.Tensor, factor: int) -> float:
    """The largest difference between x and any copy of it inside the clone's vector."""
    return float((x_wide.reshape(factor, -1) - x.unsqueeze(0)).abs().max())


# A race a lecture can afford on a CPU: few short steps, evaluated often, on the built-in corpus (the lesson's race
# and the explorer's quick preset): race(source, QUICK, **growth_settings(growth)) grows it as ``growth`` says.
QUICK = RaceConfig(contestants=("symmetric@gentle", "noisy_symmetric@gentle", "random"),  # the adopted recipe
                   steps=60, batch_size=8, seq_len=64, eval_every=6, warmup=6)

# "Reproduce the paper (micro)": the paper's protocol live (clone and random init share every setting) on the micro
# source, 20 tokens per wide parameter, the settings of ``hyperclone reproduce``'s seed-0 runs at random init's
# best lr of its sweep (1e-2 of 3e-3, 1e-2, 3e-2 in the shipped report), so a class watches random init catch
# up and (b) appear.
PAPER_MICRO = RaceConfig(source="micro-gpt2-stdlib", data="builtin-large", contestants=("noisy_symmetric", "random"),
                         steps=4594, batch_size=16, seq_len=128, lr=1e-2, warmup=100, schedule="cosine",
                         min_lr_ratio=0.1, eval_every=50, eval_windows=64, precision="fp32")


TIMED_TOKENS = 1024  # the estimate times steps of at most this many tokens, and scales them to the race's batch
TIMED_STEPS = 5  # steps timed for an estimate, after one untimed warm-up step; their median is the pace
TIMING_CAP_S = 2.0  # ... or fewer once this long went by (a busy machine): an estimate must stay cheap
MIN_TIMED_STEPS = 3  # ... but not fewer than this (on a shared machine one step can take 50x the next one),
# unless three times the cap went by


def train_step(model, optimizer, ids: torch.Tensor) -> float:
    """Seconds of one training step (forward, backward, AdamW) of ``model`` on ``ids``: the step an estimate times."""
    t0 = time.perf_counter()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ids.is_cuda:
        torch.cuda.synchronize(ids.device)  # a GPU's step ends when its kernels do
    return time.perf_counter() - t0


def time_steps(source, growth: Growth, batch_size: int, seq_len: int, steps: int = TIMED_STEPS,
               cap_s: float = TIMING_CAP_S) -> list[float]:
    """Seconds of training steps of ``source`` grown by ``growth`` on batches of ``batch_size`` x ``seq_len``
    tokens, timed now (at the machine's current load): one warm-up step (allocation, kernel selection), then up to
    ``steps`` steps, fewer once ``cap_s`` seconds went by (but at least ``MIN_TIMED_STEPS``, or ``steps`` if
    fewer, unless ``3 * cap_s`` went by). Each is timed on a small batch (at most ``TIMED_TOKENS`` tokens) and
    scaled to the race's. A size a race refuses (tokens per step, memory) is refused here too, in one line, before
    anything is built."""
    check_tokens_per_step(batch_size, seq_len)
    weight = next(source.parameters())
    n, required = training_bytes(source.config, growth, batch_size * seq_len)
    check_fits_in_memory(required, weight.device, f"training the x{growth.factor} clone ({n / 1e6:.1f}M "
                         f"parameters) on batches of {batch_size} x {seq_len}", hint=RACE_HINT)
    timed = max(1, min(batch_size, TIMED_TOKENS // seq_len))
    wide = clone(source, growth=growth).float().train()
    vocab = int(wide.config.vocab_size)
    ids = torch.randint(0, vocab, (timed, seq_len), generator=torch.Generator().manual_seed(0)).to(weight.device)
    optimizer = torch.optim.AdamW(wide.parameters(), lr=1e-4)
    train_step(wide, optimizer, ids)
    timings, t0, least = [], time.perf_counter(), min(MIN_TIMED_STEPS, max(1, steps))
    while len(timings) < max(1, steps):
        limit = cap_s if len(timings) >= least else 3 * cap_s
        if timings and time.perf_counter() - t0 >= limit:
            break
        timings.append(train_step(wide, optimizer, ids) * batch_size / timed)
    return timings


def step_seconds(source, growth: Growth, batch_size: int, seq_len: int) -> float:
    """Seconds of one training step of the wide model now: the median of ``time_steps``."""
    return statistics.median(time_steps(source, growth, batch_size, seq_len))


def race_seconds(step_s: float, n_contestants: int, steps: int, eval_every: int) -> float:
    """Seconds a race takes at ``step_s`` per wide training step.

    Each contestant costs about one wide step per step (the source costs less; it is counted as a
    wide one, so the estimate errs long), and each evaluation about as much as two steps.
    """
    evaluations = steps // max(1, eval_every) + 1
    return step_s * n_contestants * (steps + 2 * evaluations)


@dataclass(frozen=True)
class RaceEstimate:
    """How long a race will take here, from steps timed just now: ``low`` to ``high`` seconds."""

    low: float
    high: float
    timed_steps: int
    step_s: float  # the median timed step, at the race's batch

    def words(self) -> str:
        """``about 3–5 min here now (...)``: the range, and what it assumes."""
        low, high = format_duration(self.low), format_duration(self.high, up=True)
        (a, unit_a), (b, unit_b) = low.split(), high.split()
        span = low if low == high else f"{a}–{high}" if unit_a == unit_b else f"{low}–{high}"
        return (f"about {span} here now (timed just now: {self.timed_steps} training steps of the wide model, "
                f"median {self.step_s:.2g} s; assumes the machine stays as busy as it is now)")


def estimate_race(source, growth: Growth, contestants: int, steps: int, batch_size: int, seq_len: int,
                  eval_every: int) -> RaceEstimate:
    """The time a race of ``contestants`` x ``steps`` steps of ``batch_size`` x ``seq_len`` tokens will take here,
    from steps of the wide model timed now (``time_steps``)."""
    return estimate_from(time_steps(source, growth, batch_size, seq_len), contestants, steps, eval_every)


def estimate_from(timings: list[float], contestants: int, steps: int, eval_every: int) -> RaceEstimate:
    """A race's time from timed steps (seconds each, at the race's batch), as a range: from the fastest step (the
    race's own steps, warmed up, are a little faster than the few timed) to the slowest (the load moves while a
    race runs), and at least a quarter above the median step's."""
    median = statistics.median(timings)
    low = race_seconds(min(timings), contestants, steps, eval_every)
    high = max(race_seconds(max(timings), contestants, steps, eval_every),
               1.25 * race_seconds(median, contestants, steps, eval_every))
    return RaceEstimate(low, high, len(timings), median)


def remaining_seconds(records: list[dict], total_steps: int | dict[str, int], now: float | None = None,
                      done: tuple[str, ...] = ()) -> float | None:
    """Seconds the race of these metrics ``records`` still needs at the pace measured so far; None before any
    contestant has trained a step.

    A contestant's pace is the seconds it spent per step since its step-0 evaluation (training and its
    evaluations: the records' ``seconds``); one with no step yet goes at the others' mean pace. Each still has
    ``total_steps`` (or, a dict, ``total_steps[name]`` for every contestant it names, with records or not yet)
    minus its steps to go; those in ``done`` (finished, diverged, stopped) have none. ``now`` (a ``time.time()``):
    the time since the latest record is taken off.
    """
    latest: dict[str, dict] = {}
    start: dict[str, float] = {}
    for r in records:
        name = r["contestant"]
        if r.get("step") == 0:
            start[name] = float(r.get("seconds") or 0.0)
        if name not in latest or r["step"] >= latest[name]["step"]:
            latest[name] = r
    paces = {name: (float(r["seconds"]) - start.get(name, 0.0)) / r["step"] for name, r in latest.items()
             if r["step"] > 0 and r.get("seconds") is not None}
    if not paces:
        return None
    mean_pace = sum(paces.values()) / len(paces)
    budgets = total_steps if isinstance(total_steps, dict) else {name: total_steps for name in latest}
    left = sum(max(0, budget - latest.get(name, {"step": 0})["step"]) * paces.get(name, mean_pace)
               for name, budget in budgets.items() if name not in done)
    if now is not None:
        left -= max(0.0, now - max(float(r.get("time") or now) for r in latest.values()))
    return max(0.0, left)


def format_duration(seconds: float, up: bool = False) -> str:
    """``45 s``, ``3 min``, ``1.5 h``: rounded the way a person says it (``up``: rounded up, for a range's end)."""
    step = (lambda x: math.ceil(x - 1e-9)) if up else round
    if seconds < 90:
        return f"{max(5, step(seconds / 5) * 5):.0f} s"
    if seconds < 90 * 60:
        return f"{step(seconds / 60):.0f} min"
    return f"{(math.ceil(seconds / 360) / 10 if up else seconds / 3600):.1f} h"


def race_remaining(result, now: float | None = None) -> float | None:
    """``remaining_seconds`` of a race read back from its run directory (a ``RaceResult``, possibly running): the
    budgets from its settings, the contestants that stopped training from its events."""
    steps = int(result.config.get("steps") or 0)
    steps_for = result.config.get("steps_for") or {}
    budgets = {name: int(steps_for.get(name, steps)) for name in result.contestants}
    done = tuple(name for name in result.contestants if result.status(name)[0] != "running")
    return remaining_seconds(result.records, budgets, now, done)


def remaining_words(result, now: float | None = None) -> str:
    """The remaining time of a running race in words, from the pace measured so far (evaluations included)."""
    left = race_remaining(result, now)
    if left is None:
        return "time left: measuring the pace (after every contestant's first steps)"
    return f"about {format_duration(left)} left at the pace measured so far (training and evaluations)"
