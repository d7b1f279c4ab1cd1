"""Plotly figures of a race, shared by the CLI (HTML report), the dashboard and the notebooks.

Every race function takes a ``RaceResult`` or a plain list of metric records
(what a live ``callback`` has collected so far) and returns a
``plotly.graph_objects.Figure``; nothing here trains or reads files. At the
end, two figures of the equivalence check (logit scatter, per-layer bars).
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import ContestantSpec
from hyperclone.training.results import RaceResult
from hyperclone.training.speedups import Speedup, pick_baseline, speedup

Records = Union[RaceResult, Sequence[dict]]

# One colour per contestant wherever it is drawn: random init grey, the source black.
COLORS = {
    "noisy_symmetric": "#1f77b4",
    "symmetric": "#2ca02c",
    "noisy_diagonal": "#9467bd",
    "diagonal": "#ff7f0e",
    "random": "#7f7f7f",
    "source": "#111111",
}
DASH = {"random": "dash", "source": "dot"}
EXTRA_COLORS = ("#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39")


def color_of(name: str, names: Sequence[str] = ()) -> str:
    """A contestant's colour: its kind's for the plain name, another per recipe (``noisy_symmetric@lr=3e-4``)."""
    if name in COLORS:
        return COLORS[name]
    extra = [n for n in names if n not in COLORS]
    return EXTRA_COLORS[(extra.index(name) if name in extra else len(extra)) % len(EXTRA_COLORS)]
LABELS = {
    "val_loss": "validation loss (nats/token)",
    "val_accuracy": "next-token accuracy",
    "train_loss": "training loss (mean over the interval)",
    "symmetry": "symmetry (cosine between copies; 1 = identical)",
    "tokens": "training tokens",
    "flops": "estimated training FLOPs",
    "step": "step",
    "seconds": "seconds",
    "lr": "learning rate",
}


def _records(data: Records) -> list[dict]:
    if isinstance(data, RaceResult):
        return list(data.records)
    return [r for r in data if r.get("event", "metrics") == "metrics"]


def _names(data: Records, records: list[dict]) -> list[str]:
    if isinstance(data, RaceResult):
        return data.contestants
    names: list[str] = []
    for r in records:
        if r["contestant"] not in names:
            names.append(r["contestant"])
    return names


def _series(records: Iterable[dict], name: str, metric: str, x: str) -> tuple[list, list]:
    pts = sorted(((r[x], r[metric]) for r in records
                  if r["contestant"] == name and r.get(metric) is not None and r.get(x) is not None),
                 key=lambda p: p[0])
    return [p[0] for p in pts], [p[1] for p in pts]


def _trace(name: str, xs: list, ys: list, showlegend: bool = True, names: Sequence[str] = ()) -> go.Scatter:
    return go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=showlegend,
                      line=dict(color=color_of(name, names), dash=DASH.get(name.partition("@")[0], "solid"),
                                width=2), marker=dict(size=5))


def metric_figure(data: Records, metric: str = "val_loss", x: str = "tokens", log_x: bool = False,
                  title: str | None = None) -> go.Figure:
    """One line per contestant of ``metric`` against ``x`` (tokens, flops, step or seconds)."""
    records = _records(data)
    fig = go.Figure()
    names = _names(data, records)
    for name in names:
        xs, ys = _series(records, name, metric, x)
        if xs:
            fig.add_trace(_trace(name, xs, ys, names=names))
    fig.update_layout(title=title, template="plotly_white", hovermode="x unified",
                      xaxis_title=LABELS.get(x, x), yaxis_title=LABELS.get(metric, metric),
                      legend_title="contestant")
    if log_x:
        fig.update_xaxes(type="log")
    add_growth_markers(fig, records, names, metric, x)
    return fig


def growth_point(records: Sequence[dict], name: str) -> dict | None:
    """The record of a staged contestant's evaluation right after it grew (None: not grown yet, or not staged)."""
    try:
        grow_at = ContestantSpec.parse(name).grow_at
    except HyperCloneError:
        return None
    return next((r for r in records if r["contestant"] == name and r["step"] == grow_at), None)


def add_growth_markers(fig: go.Figure, records: Sequence[dict], names: Sequence[str], metric: str = "val_loss",
                       x: str = "tokens", row: int | None = None, col: int | None = None) -> go.Figure:
    """Mark where each staged contestant grew: a dotted vertical line and a labelled diamond on its curve."""
    kw = {} if row is None else dict(row=row, col=col)
    for name in names:
        point = growth_point(records, name)
        if point is None or point.get(x) is None:
            continue
        color, step = color_of(name, names), point["step"]
        fig.add_vline(x=point[x], line=dict(color=color, width=1, dash="dot"), **kw)
        if point.get(metric) is not None:
            fig.add_trace(go.Scatter(
                x=[point[x]], y=[point[metric]], mode="markers+text", name=f"{name}: grown at step {step}",
                legendgroup=name, showlegend=False, text=[f"grown at step {step}"], textposition="top right",
                textfont=dict(color=color), marker=dict(color=color, size=11, symbol="diamond"),
                hovertemplate=f"{name} grew into the wide model at step {step}<extra></extra>"), **kw)
    return fig


def loss_figure(data: Records, x: str = "tokens", log_x: bool = False, speedups: Sequence[Speedup] | None = None,
                title: str | None = "Validation loss") -> go.Figure:
    """Validation loss per contestant; with ``speedups``, each one drawn as an arrow between the curves.

    On a log x axis the first evaluation (0 tokens) cannot be drawn; plotly
    leaves it out.
    """
    fig = metric_figure(data, "val_loss", x, log_x, title)
    for s in speedups or ():
        add_speedup(fig, s)
    return fig


def symmetry_figure(data: Records, x: str = "tokens", log_x: bool = False,
                    title: str | None = "Symmetry between the clone's copies") -> go.Figure:
    """Symmetry of each cloned contestant: 1.0 while its copies are identical (it trains like the small model)."""
    fig = metric_figure(data, "symmetry", x, log_x, title)
    fig.add_hline(y=1.0, line=dict(color="#bbbbbb", width=1, dash="dot"))
    return fig


def add_speedup(fig: go.Figure, s: Speedup, row: int | None = None, col: int | None = None) -> go.Figure:
    """Mark a measured speed-up: a horizontal arrow at the target loss from the faster to the slower curve.

    Only for a measured value (x axis in tokens); a speed-up that was not
    reached is left to the text, since there is nothing to point at.
    """
    if s.value is None or s.tokens_contestant is None or s.tokens_baseline is None:
        return fig
    fast, slow = (s.tokens_contestant, s.tokens_baseline)
    kw = {} if row is None else dict(row=row, col=col)
    xref, yref = "x", "y"
    if row is not None:
        sub = fig.get_subplot(row, col)
        xref = sub.xaxis.plotly_name.replace("axis", "")
        yref = sub.yaxis.plotly_name.replace("axis", "")
    color = color_of(s.contestant)
    fig.add_annotation(x=slow, y=s.target_loss, ax=fast, ay=s.target_loss, axref=xref, ayref=yref,
                       showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=1.5, arrowcolor=color, text="", **kw)
    fig.add_annotation(x=(fast + slow) / 2, y=s.target_loss, yshift=10, showarrow=False,
                       text=f"{s.contestant}: {s.value:.2f}x ({s.definition})",
                       font=dict(color=color, size=12), **kw)
    return fig


def live_speedups(records: Sequence[dict], baseline: str | None = None) -> list[Speedup]:
    """Speed-ups computed from records collected so far (no RaceResult needed; no source FLOPs)."""
    recs = _records(records)
    names = _names(records, recs)
    curves = {n: list(zip(*_series(recs, n, "val_loss", "tokens"))) for n in names}
    baseline = baseline or pick_baseline(names, curves)
    if baseline not in names:
        return []
    base = curves[baseline]
    out = []
    for name in names:
        if name != baseline:
            curve = list(zip(*_series(recs, name, "val_loss", "tokens")))
            out += [speedup(curve, base, k, names=(name, baseline)) for k in ("a", "b")]
    return out


def race_figure(result: Records, log_x: bool = False) -> go.Figure:
    """The report figure: validation loss (with speed-ups), accuracy, symmetry and training loss."""
    records = _records(result)
    names = _names(result, records)
    sp = result.speedups() if isinstance(result, RaceResult) else live_speedups(records)
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.08, vertical_spacing=0.12,
                        subplot_titles=("Validation loss", "Next-token accuracy", "Symmetry (clones)",
                                        "Training loss"))
    panels = [("val_loss", 1, 1), ("val_accuracy", 1, 2), ("symmetry", 2, 1), ("train_loss", 2, 2)]
    for i, (metric, row, col) in enumerate(panels):
        for name in names:
            xs, ys = _series(records, name, metric, "tokens")
            if xs:
                fig.add_trace(_trace(name, xs, ys, showlegend=(i == 0), names=names), row=row, col=col)
        fig.update_xaxes(title_text=LABELS["tokens"], type="log" if log_x else None, row=row, col=col)
        add_growth_markers(fig, records, names, metric, "tokens", row=row, col=col)
    for s in sp:
        if s.definition == "a":
            add_speedup(fig, s, row=1, col=1)
    title = "HyperClone race"
    if isinstance(result, RaceResult):
        title += f": {result.config.get('source')} x{result.config.get('factor')}"
    fig.update_layout(title=title, template="plotly_white", height=800, legend_title="contestant")
    return fig


ABOVE_START = "(open: the clone was not below its own start here; head start, not faster learning)"


def horizon_figure(result: RaceResult, title: str | None = "Speed-up against horizon") -> go.Figure:
    """Speed-ups (a) and (b) at every horizon of the run, x: training tokens per parameter of the wide model.

    (a), solid: at each evaluation of a contestant, tokens the baseline needed for
    the same loss ÷ the contestant's tokens; (b), dashed: at each evaluation of the
    baseline, its tokens ÷ tokens the contestant needed for its loss. Not reached:
    an open triangle at the bound (up: more than, down: less than); nothing extrapolated.
    An open circle on (a): the contestant was not below its own step-0 loss there, so
    the ratio is the source's head start, not faster learning.
    """
    fig = go.Figure()
    base = result.baseline
    for name in (n for n in result.contestants if n != base):
        color = color_of(name, result.contestants)
        for definition, dash in (("a", "solid"), ("b", "dash")):
            points = result.horizon(name, definition)
            measured = [p for p in points if p.value is not None]
            bounds = [p for p in points if p.value is None and p.bound is not None]
            label = f"{name} ({definition})"
            fig.add_trace(go.Scatter(
                x=[p.tokens_per_param for p in measured], y=[p.value for p in measured], mode="lines+markers",
                name=label, legendgroup=label, line=dict(color=color, dash=dash, width=2),
                marker=dict(symbol=["circle-open" if p.above_start else "circle" for p in measured], size=7),
                text=[ABOVE_START if p.above_start else "" for p in measured],
                hovertemplate="%{x:.3g} tokens/param: %{y:.2f}x %{text}<extra>" + label + "</extra>"))
            if bounds:
                fig.add_trace(go.Scatter(
                    x=[p.tokens_per_param for p in bounds], y=[p.bound[1] for p in bounds], mode="markers",
                    name=f"{label}: not reached (bound)", legendgroup=label, showlegend=False,
                    marker=dict(color=color, size=9, symbol=[
                        "triangle-up-open" if p.bound[0] == ">" else "triangle-down-open" for p in bounds]),
                    hovertemplate="%{x:.3g} tokens/param: " + "%{text}<extra>" + label + "</extra>",
                    text=[f"{p.bound[0]}{p.bound[1]:.2f}x (not reached)" for p in bounds]))
    fig.add_hline(y=1.0, line=dict(color="#bbbbbb", width=1, dash="dot"))
    fig.update_layout(title=title, template="plotly_white", legend_title=f"vs {base}",
                      xaxis_title="training tokens per parameter of the wide model",
                      yaxis_title="speed-up over random init (x)")
    return fig


def race_report_html(result: RaceResult, log_x: bool = False) -> str:
    """The CLI's ``race.html``: the race figure, speed-up against horizon, then the table and read-out as text."""
    import html

    parts = [race_figure(result, log_x=log_x).to_html(full_html=False, include_plotlyjs=True)]
    if result.baseline and len(result.contestants) > 1:
        parts.append(horizon_figure(result).to_html(full_html=False, include_plotlyjs=False))
    text = html.escape(result.table() + "\n\n" + result.fairness)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>HyperClone race</title></head><body>"
            + "".join(parts) + f"<pre style='white-space:pre-wrap'>{text}</pre></body></html>")


# --------------------------------------------------------------------------- #
# The equivalence check (numbers from ``verify`` and ``compare.logits_pair``)
# --------------------------------------------------------------------------- #
LOG_FLOOR = 1e-12  # exact zeros are drawn here on log axes (hover shows the true value)


def logit_scatter(source_logits: torch.Tensor, clone_logits: torch.Tensor, max_points: int = 4000,
                  seed: int = 0) -> go.Figure:
    """Every (source, clone) logit pair (a random sample if there are many) against the line y = x."""
    s, c = source_logits.reshape(-1).float(), clone_logits.reshape(-1).float()
    n = s.numel()
    if n > max_points:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
        s, c = s[idx], c[idx]
    lo, hi = float(torch.minimum(s.min(), c.min())), float(torch.maximum(s.max(), c.max()))
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=s.numpy(), y=c.numpy(), mode="markers", name="logits",
                               marker=dict(size=3, opacity=0.5)))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                             line=dict(color="black", dash="dot", width=1)))
    shown = f"{s.numel():,} of {n:,}" if n > max_points else f"all {n:,}"
    fig.update_layout(title=f"Clone vs source logits ({shown} values)", xaxis_title="source logit",
                      yaxis_title="clone logit", height=380, margin=dict(l=20, r=20, t=50, b=20), showlegend=False)
    return fig


def layer_diff_bars(report) -> go.Figure:
    """Per hidden state: max relative difference between the clone and the repeated source (log scale)."""
    layers = report.layers
    names = ["embeddings" if c.layer == 0 else f"layer {c.layer}" for c in layers]
    values = [max(c.max_rel_diff, LOG_FLOOR) for c in layers]
    colours = ["#2ca02c" if c.passed else "#d62728" for c in layers]
    fig = go.Figure(go.Bar(
        x=names, y=values, marker_color=colours,
        customdata=[[c.max_abs_diff, c.max_rel_diff] for c in layers],
        hovertemplate="%{x}<br>max |diff| %{customdata[0]:.3e}<br>relative %{customdata[1]:.3e}<extra></extra>",
    ))
    fig.add_hline(y=report.tolerance, line=dict(color="black", dash="dash", width=1),
                  annotation_text=f"tolerance {report.tolerance:g}", annotation_position="top left")
    fig.update_yaxes(type="log", title="max relative difference")
    fig.update_layout(title="Hidden states: clone vs source repeated (green = within tolerance)", height=340,
                      margin=dict(l=20, r=20, t=50, b=20))
    return fig
