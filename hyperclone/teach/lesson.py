"""What the guided lesson shows that the explorer does not: a hidden vector beside its clone's,
the quick race a lecture can afford, and how long that race will take on this machine.

Everything else the lesson draws (block heatmaps, the logit scatter, per-layer bars, loss and
symmetry curves) comes from ``heatmaps.py`` and ``plots.py``, as in the explorer.
"""

from __future__ import annotations

import time

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


TIMED_TOKENS = 1024  # the estimate times steps of at most this many tokens, and scales them to the race's batch


def step_seconds(source, growth: Growth, batch_size: int, seq_len: int) -> float:
    """Seconds of one training step (forward, backward, AdamW) of ``source`` grown by ``growth`` on batches of
    ``batch_size`` x ``seq_len`` tokens, estimated here from timed steps of a small batch (at most
    ``TIMED_TOKENS`` tokens; the time scales with the batch). A size a race refuses (tokens per step, memory) is
    refused here too, in one line, before anything is built."""
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
    timings = []
    for _ in range(3):  # the first steps pay for allocation and kernel selection: keep the fastest
        t0 = time.perf_counter()
        wide(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - t0)
    return min(timings) * batch_size / timed


def race_seconds(step_s: float, n_contestants: int, steps: int, eval_every: int) -> float:
    """Seconds a race takes at ``step_s`` per wide training step.

    Each contestant costs about one wide step per step (the source costs less; it is counted as a
    wide one, so the estimate errs long), and each evaluation about as much as two steps.
    """
    evaluations = steps // max(1, eval_every) + 1
    return step_s * n_contestants * (steps + 2 * evaluations)


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min``, ``1.5 h``: rounded the way a person says it."""
    if seconds < 90:
        return f"{max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60):.0f} min"
    return f"{seconds / 3600:.1f} h"
