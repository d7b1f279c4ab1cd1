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

# One colour per contestant wherever it is drawn, from the Okabe–Ito palette (told apart with any colour vision and
# on a washed-out projector): random init grey and dashed, the source black and dotted.
COLORS = {
    "noisy_symmetric": "#0072B2",  # blue
    "symmetric": "#D55E00",  # vermillion
    "noisy_diagonal": "#CC79A7",  # reddish purple
    "diagonal": "#E69F00",  # orange
    "random": "#7F7F7F",
    "source": "#000000",
}
DASH = {"random": "dash", "source": "dot"}
# Further recipes of a kind already drawn: the rest of Okabe–Ito, then Paul Tol's colour-blind-safe muted set.
EXTRA_COLORS = ("#009E73", "#56B4E9", "#882255", "#117733", "#332288", "#AA4499", "#44AA99", "#999933")


def _has_kind_colour(name: str, names: Sequence[str]) -> bool:
    """Whether ``name`` is drawn in its kind's colour: the plain name, else the first of its kind listed."""
    kind = name.partition("@")[0]
    if kind not in COLORS:
        return False
    same = [n for n in names if n.partition("@")[0] == kind]
    return name == kind or not same or (kind not in same and same[0] == name)


def color_of(name: str, names: Sequence[str] = ()) -> str:
    """A contestant's colour: its kind's (``symmetric@gentle``: symmetric's) unless another contestant of the same
    kind has it already (the plain name first, else the first listed); each further recipe gets one of its own."""
    if _has_kind_colour(name, names):
        return COLORS[name.partition("@")[0]]
    extra = [n for n in names if not _has_kind_colour(n, names)]
    return EXTRA_COLORS[(extra.index(name) if name in extra else len(extra)) % len(EXTRA_COLORS)]


LABELS = {
    "val_loss": "validation loss (nats/token)",
    "val_accuracy": "next-token accuracy",
    "train_loss": "training loss (mean over the interval)",
    "symmetry": "cosine (1 = identical)",  # short: a presenter-view chart 380 px high has ~200 px for it
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
                      legend_title="contestant", showlegend=True)
    if log_x:
        fig.update_xaxes(type="log")
    add_growth_markers(fig, records, names, metric, x)
    return empty_state(fig, x)


COUNTS = ("tokens", "flops", "step", "seconds")  # x axes that start at 0 and never go below it


def empty_state(fig: go.Figure, x: str = "tokens", message: str = "no evaluation yet") -> go.Figure:
    """No negative counts on the x axis (plotly draws a lone point at 0 tokens on −1…1); with no point at all,
    an empty 0…1 frame without ticks and ``message`` in its middle (before a race's first evaluation)."""
    if x in COUNTS:
        fig.update_xaxes(rangemode="nonnegative")
    xs = [v for t in fig.data if t.x is not None for v in t.x if v is not None]
    if xs and x in COUNTS and max(xs) == 0:  # only the evaluation before training: one tick, at 0, no fractions
        fig.update_xaxes(range=[-0.03, 1], tickvals=[0])
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", text="before training; the curves follow",
                           showarrow=False, font=dict(color="#666666", size=14))
    if xs:
        return fig
    fig.update_xaxes(range=[0, 1], showticklabels=False)
    fig.update_yaxes(range=[0, 1], showticklabels=False)
    fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", text=message, showarrow=False,
                       font=dict(color="#666666", size=14))
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
                    title: str | None = "Symmetry of the clone's copies") -> go.Figure:
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
    color = color_of(s.contestant, [t.legendgroup for t in fig.data if t.legendgroup])
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
        fig.update_xaxes(title_text=LABELS["tokens"], type="log" if log_x else None, rangemode="nonnegative",
                         row=row, col=col)
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


BOUNDS_NOTE = ("△ ▽ open triangles: bounds, not measurements (that loss was not reached before the race ended)"
               "<br>a falling lower bound is not a shrinking speed-up: the race was too short to measure it")


def horizon_figure(result: RaceResult, title: str | None = "Speed-up against horizon") -> go.Figure:
    """Speed-ups (a) and (b) at every horizon of the run, x: training tokens per parameter of the wide model.

    (a), solid: at each evaluation of a contestant, tokens the baseline needed for
    the same loss ÷ the contestant's tokens; (b), dashed: at each evaluation of the
    baseline, its tokens ÷ tokens the contestant needed for its loss. Not reached:
    an open triangle at the bound (up: more than, down: less than), a legend entry of
    its own and a note under the axes; nothing extrapolated. An open circle on (a):
    the contestant was not below its own step-0 loss there, so the ratio is the
    source's head start, not faster learning. Every contestant is in the legend, with
    "no horizon yet" when it has no point.
    """
    fig = go.Figure()
    base = result.baseline
    any_bound = False
    for name in (n for n in result.contestants if n != base):
        drawn = 0
        for definition, dash in (("a", "solid"), ("b", "dash")):
            traces = _horizon_traces(name, definition, dash, result)
            any_bound |= any(t.name.endswith("bound (not reached)") for t in traces)
            drawn += len(traces)
            for trace in traces:
                fig.add_trace(trace)
        if not drawn:  # a legend entry all the same, saying why there is nothing to draw
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{name}: no horizon yet",
                                     legendgroup=name, marker=dict(color=color_of(name, result.contestants))))
    fig.add_hline(y=1.0, line=dict(color="#bbbbbb", width=1, dash="dot"))
    fig.update_layout(title=title, template="plotly_white", legend_title=f"vs {base}", showlegend=True,
                      xaxis_title="training tokens per parameter of the wide model",
                      yaxis_title="speed-up over random init (x)")
    if any_bound:  # under the title, where a presenter view's margins and fonts leave it readable
        fig.update_layout(title=dict(text=f"{title or ''}<br><span style='font-size:14px;color:#444444'>"
                                          f"{BOUNDS_NOTE}</span>"))
    return empty_state(fig, "tokens_per_param", "no horizon yet: it needs evaluations of both contestants")


def _horizon_traces(name: str, definition: str, dash: str, result: RaceResult) -> list[go.Scatter]:
    """The measured line of one speed-up of ``name`` and its bounds (open triangles), each its own legend entry."""
    color = color_of(name, result.contestants)
    points = result.horizon(name, definition)
    measured = [p for p in points if p.value is not None]
    bounds = [p for p in points if p.value is None and p.bound is not None]
    label = f"{name} ({definition})"
    traces = []
    if measured:
        traces.append(go.Scatter(
            x=[p.tokens_per_param for p in measured], y=[p.value for p in measured], mode="lines+markers",
            name=label, legendgroup=name, line=dict(color=color, dash=dash, width=2),
            marker=dict(symbol=["circle-open" if p.above_start else "circle" for p in measured], size=7),
            text=[ABOVE_START if p.above_start else "" for p in measured],
            hovertemplate="%{x:.3g} tokens/param: %{y:.2f}x %{text}<extra>" + label + "</extra>"))
    if bounds:
        traces.append(go.Scatter(
            x=[p.tokens_per_param for p in bounds], y=[p.bound[1] for p in bounds], mode="markers",
            name=f"{label}: bound (not reached)", legendgroup=name,
            marker=dict(color=color, size=9, symbol=[
                "triangle-up-open" if p.bound[0] == ">" else "triangle-down-open" for p in bounds]),
            hovertemplate="%{x:.3g} tokens/param: %{text}<extra>" + label + "</extra>",
            text=[f"a bound, not a measurement: speed-up {p.bound[0]} {p.bound[1]:.2f}x (that loss was not "
                  "reached before the race ended)" for p in bounds]))
    return traces


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
PASS_FAIL = {True: "#009E73", False: "#D55E00"}  # Okabe–Ito bluish green and vermillion


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
    colours = [PASS_FAIL[c.passed] for c in layers]
    fig = go.Figure(go.Bar(
        x=names, y=values, marker_color=colours,
        customdata=[[c.max_abs_diff, c.max_rel_diff] for c in layers],
        hovertemplate="%{x}<br>max |diff| %{customdata[0]:.3e}<br>relative %{customdata[1]:.3e}<extra></extra>",
    ))
    fig.add_hline(y=report.tolerance, line=dict(color="black", dash="dash", width=1),
                  annotation_text=f"tolerance {report.tolerance:g}", annotation_position="top left")
    fig.update_yaxes(type="log", title="max relative difference", exponentformat="power")  # 10⁻¹², not SI's "1p"
    fig.update_layout(title="Hidden states: clone vs source repeated (green = within tolerance)", height=340,
                      margin=dict(l=20, r=20, t=50, b=20))
    return fig
