"""One figure per state of a race's log, shared by every page (issue 26).

A class watching one race must cost the server one figure per new evaluation, not one per page per fragment run:
``shared_figure`` hands every caller the same object until the run's log changes, then builds the new state once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hyperclone.dashboard.common import shared_figure, shared_result
from hyperclone.training.recorded import recorded_races
from hyperclone.views.plots import loss_figure


def points(fig) -> int:
    return sum(len(trace.x or ()) for trace in fig.data)


def test_every_page_gets_the_same_figure_until_the_log_grows_then_one_new_one(tmp_path):
    run = Path(shutil.copytree(recorded_races()[0].path, tmp_path / "run"))
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[: len(lines) // 2]))  # the race half-way
    first = shared_figure(loss_figure, run)
    assert shared_figure(loss_figure, run) is first  # a second page, the next fragment run: nothing rebuilt
    assert shared_result(run) is shared_result(run)
    assert shared_figure(loss_figure, run, log_x=True) is not first  # another view is another figure
    with open(metrics, "a") as f:  # the race logs the rest of its evaluations
        f.writelines(lines[len(lines) // 2:])
    later = shared_figure(loss_figure, run)
    assert later is not first and points(later) > points(first)
    assert shared_figure(loss_figure, run) is later
