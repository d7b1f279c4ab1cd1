"""The paper's figure at micro scale, from a ``hyperclone reproduce`` report: loss against tokens per wide
parameter for the clone and random init at each horizon, and speed-up (b) against horizon, each point marked
measured or bound; plus the report's tables as text and the HTML page that holds both.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hyperclone.io.atomic import write_atomic
from hyperclone.training.paper_report import CLAIM, PAPER_B, b_text, paper_b

HORIZON_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")  # Okabe-Ito


def loss_traces(report: dict) -> list[go.Scatter]:
    """Clone (solid) and random init (dashed) at each horizon, x in tokens per wide parameter."""
    per_param = report["wide_params"]
    traces = []
    for i, section in enumerate(report["horizons"]):
        color = HORIZON_COLORS[i % len(HORIZON_COLORS)]
        for who, dash in (("clone", "solid"), ("random", "dash")):
            curve = section["curves"][who]
            label = f"{'clone (paper recipe)' if who == 'clone' else 'random init'}, {section['horizon']:g} tok/param"
            traces.append(go.Scatter(x=[t / per_param for t, _ in curve], y=[v for _, v in curve], mode="lines",
                                     name=label, legendgroup=f"h{i}", line=dict(color=color, dash=dash, width=2),
                                     hovertemplate="%{x:.2f} tokens/param: loss %{y:.3f}<extra>" + label + "</extra>"))
    return traces


def b_traces(report: dict) -> list[go.Scatter]:
    """(b) of the paper's recipe and of the clone's best lr at each horizon: filled measured, open bounds."""
    traces = []
    for recipe, color in (("paper", "#0072B2"), ("best", "#D55E00")):
        rows = [(s["horizon"], r["b"]) for s in report["horizons"] for r in s["recipes"] if r["recipe"] == recipe]
        measured = [(h, b["value"]) for h, b in rows if b["measured"]]
        bounds = [(h, b["bound"]) for h, b in rows if not b["measured"] and b["bound"]]
        name = "clone, paper recipe" if recipe == "paper" else "clone, its own best lr"
        if measured:
            traces.append(go.Scatter(x=[h for h, _ in measured], y=[v for _, v in measured], mode="lines+markers",
                                     name=f"(b) {name}: measured", line=dict(color=color), marker=dict(size=9),
                                     hovertemplate="%{x:g} tokens/param: (b) = %{y:.2f}x, measured<extra></extra>"))
        if bounds:
            traces.append(go.Scatter(
                x=[h for h, _ in bounds], y=[b[1] for _, b in bounds], mode="markers",
                name=f"(b) {name}: bound, not measured", marker=dict(color=color, size=11, symbol=[
                    "triangle-up-open" if b[0] == ">" else "triangle-down-open" for _, b in bounds]),
                hovertemplate="%{x:g} tokens/param: (b) %{text}<extra></extra>",
                text=[f"{b[0]} {b[1]:.2f}x, a bound: the target loss was not reached" for _, b in bounds]))
    return traces


def paper_figure(report: dict) -> go.Figure:
    """Left: loss against tokens per wide parameter at each horizon. Right: (b) against horizon."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1, subplot_titles=(
        "Validation loss: clone (solid) vs random init (dashed)", "Speed-up (b) against horizon"))
    for trace in loss_traces(report):
        fig.add_trace(trace, row=1, col=1)
    for trace in b_traces(report):
        fig.add_trace(trace, row=1, col=2)
    fig.add_hrect(y0=PAPER_B[0], y1=PAPER_B[1], row=1, col=2, fillcolor="#999999", opacity=0.2, line_width=0,
                  annotation_text=f"paper: {PAPER_B[0]}-{PAPER_B[1]:g}x", annotation_position="top left")
    fig.add_hline(y=1.0, row=1, col=2, line=dict(color="black", dash="dot", width=1))
    fig.update_xaxes(title_text="tokens per wide parameter", row=1, col=1)
    fig.update_xaxes(title_text="horizon (tokens per wide parameter)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="validation loss (nats/token)", row=1, col=1)
    fig.update_yaxes(title_text="(b): random's tokens ÷ clone's tokens to its final loss", rangemode="tozero",
                     row=1, col=2)
    fig.update_layout(height=460, margin=dict(l=20, r=20, t=60, b=20), legend=dict(font=dict(size=10)),
                      title=report["summary"][:160] + ("…" if len(report["summary"]) > 160 else ""),
                      title_font=dict(size=12))
    return fig


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def horizon_rows(report: dict) -> list[str]:
    """The table: horizon x recipe, final losses, (b) and (a) (measured or bound), with the source counted."""
    rows = ["| horizon (tok/param) | clone recipe | lr | clone final | random final (lr) | (b) | (a) | "
            "(b) with source FLOPs | dip (nats, back at tok/param) |", "|---|---|---|---|---|---|---|---|---|"]
    for s in report["horizons"]:
        for r in s["recipes"]:
            back = r["dip"]["back_at"]
            rows.append(
                f"| {s['horizon']:g} | {r['recipe']} | {r['lr']:g} | {fmt(r['clone_final'])} | "
                f"{fmt(s['random']['final'])} ({s['random']['lr']:g}) | {b_text(r['b'])} | {b_text(r['a'])} | "
                f"{fmt(r['b']['with_source'], 2) if r['b']['measured'] and r['b']['with_source'] else 'n/a'} | "
                f"{r['dip']['depth']:.3f}, {'never' if back is None else f'{back:.2f}'} |")
    return rows


def report_text(report: dict) -> str:
    """Every table of the report as Markdown: horizons, sweep, seeds, variants, the claim and the summary."""
    sweep, seeds = report["sweep"], report["seeds"]
    lrs = sorted({lr for finals in sweep["finals"].values() for lr in finals}, key=float)
    lines = ["## Horizons", *horizon_rows(report), "", f"## Sweep at {sweep['horizon']:g} tokens per wide parameter",
             "| contestant | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for kind, finals in sweep["finals"].items():
        lines.append(f"| {kind} | " + " | ".join(fmt(finals[lr]) if lr in finals else "" for lr in lrs) + " |")
    w = sweep["winners"]
    lines += [f"Winners: random init {w['random']:g} (better neighbour {w['random_neighbour']:g}), clone {w['clone']:g}.",
              "", f"## Seeds at {seeds['horizon']:g} (paper recipe)", "| seed | clone final | random final | (b) |",
              "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {fmt(r['clone_final'])} | {fmt(r['random_final'])} | {b_text(r['b'])} |"
              for r in seeds["rows"]]
    if seeds["b_mean"] is not None:
        lines.append(f"(b) mean {seeds['b_mean']:.3f}x, sd {'n/a' if seeds['b_sd'] is None else format(seeds['b_sd'], '.2g')}, range "
                     f"{seeds['b_range'][0]:.3f}-{seeds['b_range'][1]:.3f}x")
    lines += ["", "## Variants (paper recipe, seed 0)", "| variant | final | (b) | (a) | dip |", "|---|---|---|---|---|"]
    lines += [f"| {v['variant']} | {fmt(v['clone_final'])} | {b_text(v['b'])} | {b_text(v['a'])} | "
              f"{v['dip']['depth']:.3f} |" for v in report["variants"]]
    c = report["claim"]
    lines += ["", f"Claim (b) >= {CLAIM:g}x: at {c['at_sweep']['horizon']:g} {'met' if c['at_sweep']['met'] else 'missed'}, "
              f"at {c['at_longest']['horizon']:g} {'met' if c['at_longest']['met'] else 'missed'}; (b) measured at "
              f"{', '.join(f'{h:g}' for h in c['measured_at']) or 'no horizon'}.", "", report["summary"]]
    return "\n".join(lines)


def write_report_html(report: dict, out: Path) -> Path:
    """``out/report.html``: the figure, then the tables (written atomically)."""
    figure = paper_figure(report).to_html(full_html=False, include_plotlyjs=True)
    facts = html.escape(f"command: {report.get('command')}; started {report.get('started')}, finished "
                        f"{report.get('finished')}; machine: {report.get('machine')}")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>HyperClone: the paper at micro scale</title>"
            f"</head><body><h1>The paper's experiment at micro scale</h1><p>{html.escape(report['summary'])}</p>"
            f"{figure}<pre style='white-space:pre-wrap'>{html.escape(report_text(report))}</pre>"
            f"<p><small>{facts}</small></p></body></html>")
    path = Path(out) / "report.html"
    write_atomic(path, page)
    return path
