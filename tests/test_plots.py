"""Race figures: one line per contestant, symmetry for clones only, a speed-up drawn where it was measured."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from hyperclone.views import plots
from hyperclone.training.results import RaceResult
from hyperclone.training.speedups import speedup

RANDOM = [(0, 8.0), (100, 6.0), (200, 5.0), (300, 4.5)]
CLONE = [(0, 5.0), (100, 4.6), (200, 4.4), (300, 4.3)]


def records():
    out = []
    for name, curve in (("noisy_symmetric", CLONE), ("random", RANDOM)):
        for step, (tokens, loss) in enumerate(curve):
            out.append(dict(event="metrics", contestant=name, step=step, tokens=tokens, flops=6 * tokens,
                            val_loss=loss, val_accuracy=0.1 * step, train_loss=loss + 0.1 if step else None,
                            symmetry=1.0 - 0.05 * step if name != "random" else None))
    return out


def test_loss_figure_has_a_line_per_contestant_and_a_log_axis_option():
    fig = plots.loss_figure(records(), log_x=True)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["noisy_symmetric", "random"]
    assert list(fig.data[1].y) == [l for _, l in RANDOM]
    assert fig.layout.xaxis.type == "log"


def test_symmetry_figure_draws_only_the_clones():
    fig = plots.symmetry_figure(records())
    assert [t.name for t in fig.data] == ["noisy_symmetric"]


def test_a_measured_speedup_is_annotated_and_an_unmeasured_one_is_not():
    s = speedup(CLONE[:2], RANDOM, "a", names=("noisy_symmetric", "random"))  # random needs 280 tokens vs 100
    fig = plots.add_speedup(plots.loss_figure(records()), s)
    assert any("2.80x" in (a.text or "") for a in fig.layout.annotations)
    missing = speedup(CLONE, RANDOM, "a", names=("noisy_symmetric", "random"))  # 4.3: random never gets there
    assert missing.value is None
    assert len(plots.add_speedup(plots.loss_figure(records()), missing).layout.annotations) == 0


def test_race_figure_from_a_result_or_live_records():
    result = RaceResult(config={"contestants": ["noisy_symmetric", "random"], "source": "tiny", "factor": 2},
                        info={}, records=records())
    fig = plots.race_figure(result)
    assert len({t.name for t in fig.data}) == 2
    assert sum(bool(t.showlegend) for t in fig.data) == 2  # one legend entry per contestant
    live = plots.race_figure(records()[:5])  # mid-race: what a callback has collected so far
    assert isinstance(live, go.Figure)


def test_speedup_against_horizon_draws_both_definitions_and_bounds_as_open_triangles():
    result = RaceResult(config={"contestants": ["noisy_symmetric", "random"], "source": "tiny", "factor": 2},
                        info={"contestants": {"random": {"params": 100}}}, records=records())
    fig = plots.horizon_figure(result)
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert set(lines) == {"noisy_symmetric (a)", "noisy_symmetric (b)"}
    # (a): random reaches the clone's 4.6 at 280 tokens (clone: 100); 4.4 and 4.3 never in its 300 (bounds)
    assert list(lines["noisy_symmetric (a)"].x) == [1.0]
    assert list(lines["noisy_symmetric (a)"].y) == [pytest.approx(2.8)]
    bounds = [t for t in fig.data if t.mode == "markers"]
    assert len(bounds) == 1 and list(bounds[0].marker.symbol) == ["triangle-up-open"] * 2
    assert list(bounds[0].x) == [2.0, 3.0] and list(bounds[0].y) == [pytest.approx(1.5), pytest.approx(1.0)]
    # (b): random's 6.0 at 100 and 5.0 at 200: the clone was there before training (no number);
    # 4.5 at 300: the clone reached it at 150 tokens
    assert list(lines["noisy_symmetric (b)"].x) == [3.0]
    assert list(lines["noisy_symmetric (b)"].y) == [pytest.approx(300 / 150)]
    html = plots.race_report_html(result)
    assert html.count("plotly-graph-div") >= 2 and "at equal tokens" in html


def test_speedup_against_horizon_draws_points_above_the_clones_start_open():
    rising = [(0, 4.8), (100, 5.0), (200, 4.6)]  # a re-warming rise, then below its start
    recs = [dict(event="metrics", contestant=name, step=step, tokens=tokens, val_loss=loss)
            for name, curve in (("noisy_symmetric", rising), ("random", RANDOM)) for step, (tokens, loss) in enumerate(curve)]
    result = RaceResult(config={"contestants": ["noisy_symmetric", "random"], "source": "tiny", "factor": 2},
                        info={"contestants": {"random": {"params": 100}}}, records=recs)
    (a,) = [t for t in plots.horizon_figure(result).data if t.name == "noisy_symmetric (a)"]
    assert list(a.marker.symbol) == ["circle-open", "circle"] and list(a.text) == [plots.ABOVE_START, ""]


def test_recipes_get_colours_of_their_own():
    names = ["noisy_symmetric", "noisy_symmetric@lr=3e-4", "random@lr=3e-3"]
    colours = [plots.color_of(n, names) for n in names]
    assert len(set(colours)) == 3 and colours[0] == plots.COLORS["noisy_symmetric"]


def test_every_contestant_is_in_the_horizon_legend_and_bounds_are_labelled_bounds():
    """A contestant with bounds only (random never reaches its loss) still has a legend entry, named a bound; the
    figure says under its title that open triangles are bounds; one trace alone still shows its legend."""
    flat = [(0, 4.0), (100, 3.9), (200, 3.8), (300, 3.7)]  # always below random's best (4.5): (a) only bounds
    recs = [dict(event="metrics", contestant=name, step=step, tokens=tokens, val_loss=loss)
            for name, curve in (("symmetric", flat), ("noisy_symmetric", CLONE), ("random", RANDOM))
            for step, (tokens, loss) in enumerate(curve)]
    result = RaceResult(config={"contestants": ["symmetric", "noisy_symmetric", "random"], "source": "tiny",
                                "factor": 2}, info={"contestants": {"random": {"params": 100}}}, records=recs)
    fig = plots.horizon_figure(result)
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert "symmetric (a): bound (not reached)" in legend and "noisy_symmetric (a)" in legend
    assert {t.legendgroup for t in fig.data} == {"symmetric", "noisy_symmetric"}
    assert fig.layout.showlegend is True and "bounds, not measurements" in fig.layout.title.text
    assert "not a shrinking speed-up" in fig.layout.title.text
    short = RaceResult(config={"contestants": ["noisy_symmetric", "random"], "source": "tiny", "factor": 2},
                       info={"contestants": {"random": {"params": 100}}},
                       records=[r for r in recs if r["contestant"] != "symmetric" and r["step"] == 0])
    fig = plots.horizon_figure(short)  # before any horizon: the contestant named all the same
    assert [t.name for t in fig.data] == ["noisy_symmetric: no horizon yet"] and fig.layout.showlegend is True


def test_no_negative_tokens_before_the_first_evaluation_or_at_it():
    empty = plots.loss_figure([])
    assert tuple(empty.layout.xaxis.range) == (0, 1) and "no evaluation yet" in empty.layout.annotations[0].text
    first = plots.loss_figure([r for r in records() if r["step"] == 0])  # every point at 0 tokens
    assert first.layout.xaxis.range[0] > -0.5 and list(first.layout.xaxis.tickvals) == [0]
    assert plots.loss_figure(records()).layout.xaxis.rangemode == "nonnegative"


def test_log_axes_write_powers_of_ten_not_si_prefixes():
    from types import SimpleNamespace as NS

    layers = [NS(layer=i, max_rel_diff=d, max_abs_diff=d, passed=True) for i, d in enumerate((0.0, 1e-9, 1e-7))]
    fig = plots.layer_diff_bars(NS(layers=layers, tolerance=1e-5))
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.exponentformat == "power"


def test_a_clone_and_its_source_differ_in_colour_whatever_their_recipes():
    names = ["noisy_symmetric@gentle", "noisy_symmetric", "random", "source@gentle"]  # the shipped race
    colours = {n: plots.color_of(n, names) for n in names}
    assert len(set(colours.values())) == 4
    assert colours["source@gentle"] == plots.COLORS["source"] and colours["noisy_symmetric"] == plots.COLORS[
        "noisy_symmetric"]
    quick = ["symmetric@gentle", "noisy_symmetric@gentle", "random"]  # one of each kind: the kind's colour
    assert [plots.color_of(n, quick) for n in quick] == [plots.COLORS[k] for k in ("symmetric", "noisy_symmetric",
                                                                                    "random")]
    assert plots.COLORS["symmetric"] != plots.COLORS["noisy_symmetric"]
