"""Ship a finished ``hyperclone reproduce`` report with the package: its report, plan and run logs (no checkpoints).

    python benchmarks/ship_report.py /work/reports/micro-gpt2 [--name paper-micro-gpt2]

Copies ``report.json``, ``reproduce.json`` and each run's ``run.json`` and ``metrics.jsonl`` into
``hyperclone/assets/runs/NAME`` (written to a temporary folder, then renamed; an existing NAME is never
overwritten: move it away first), then prints its size: the dashboard, the lesson's chapter 4 and notebook 3 read it
(``paper_report.shipped_reports``); tests/test_reproduce.py checks it against its run logs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from hyperclone.io.atomic import atomic_dir, move_into_place
from hyperclone.training.paper_report import PLAN_FILE, load_report
from hyperclone.training.recorded import RUNS_DIR
from hyperclone.training.reproduce import REPORT_FILE, RUNS_DIR as REPORT_RUNS
from hyperclone.training.runs import METRICS_FILE, RUN_FILE

RUN_FILES = (RUN_FILE, METRICS_FILE)


def ship(report_dir: Path, target: Path) -> int:
    report = load_report(report_dir)  # a finished, readable report, or one line saying why not
    if target.exists():
        raise SystemExit(f"error: {target} exists; move it away first (it is never overwritten)")
    with atomic_dir(target, publish=move_into_place) as tmp:
        for name in (REPORT_FILE, PLAN_FILE):
            shutil.copyfile(report_dir / name, tmp / name)
        for run in report["runs"]:
            (tmp / REPORT_RUNS / run).mkdir(parents=True)
            for name in RUN_FILES:
                shutil.copyfile(report_dir / REPORT_RUNS / run / name, tmp / REPORT_RUNS / run / name)
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="the report directory (hyperclone reproduce --out)")
    parser.add_argument("--name", default="paper-micro-gpt2", help="its folder under hyperclone/assets/runs")
    args = parser.parse_args(argv)
    size = ship(args.report, RUNS_DIR / args.name)
    print(f"shipped {RUNS_DIR / args.name}: {size / 2**20:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
