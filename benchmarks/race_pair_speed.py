"""Two of ``hyperclone reproduce``'s runs at once, as its two workers run them, on two source trees: tokens/s each.

    python benchmarks/race_pair_speed.py --before /tmp/before --after . [--steps 400] [--repeats 2]

Each tree (a checkout of HyperClone, e.g. ``git worktree add /tmp/before REV``) runs the same pair of
single-contestant races side by side, one thread each, exactly the command lines ``reproduce`` starts
(``PlannedRun.command``: random init and the noisy_symmetric clone at lr 1e-2, seed 0, the default report's
settings but ``--steps`` steps), alternating trees on every repeat so that both see the same machine. Printed:
each run's training tokens per second of its own clock (the ``seconds`` of its last metrics record: training
and evaluation, not process start), the pair's wall time, and after/before. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hyperclone.training.reproduce import PlannedRun, ReproduceConfig

PAIR = (PlannedRun(20.0, "random", 1e-2, 0), PlannedRun(20.0, "noisy_symmetric", 1e-2, 0))


def run_pair(tree: Path, steps: int) -> tuple[list[float], float]:
    """Tokens/s of each run of the pair (trained in ``tree``'s code), and the pair's wall seconds."""
    cfg = ReproduceConfig()  # the report's settings; --steps replaces the budget below
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        t0 = time.perf_counter()
        for run in PAIR:
            command = run.command(cfg, Path(tmp) / run.name, resume=False)
            command[command.index("--steps") + 1] = str(steps)
            procs.append(subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL))
        if any(p.wait() for p in procs):
            sys.exit(f"a race failed in {tree}")
        wall = time.perf_counter() - t0
        speeds = []
        for run in PAIR:
            lines = (Path(tmp) / run.name / "metrics.jsonl").read_text().splitlines()
            last = [r for r in map(json.loads, lines) if r.get("event") == "metrics"][-1]
            speeds.append(last["tokens"] / last["seconds"])
    return speeds, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the tree to compare against")
    parser.add_argument("--after", type=Path, default=Path("."), help="the tree measured (default: this one)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; pair: {', '.join(r.name for r in PAIR)}, {args.steps} steps x 16 x 128")
    speeds: dict[str, list[float]] = {"before": [], "after": []}
    for repeat in range(args.repeats):
        for label in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            pair, wall = run_pair(getattr(args, label).resolve(), args.steps)
            speeds[label] += pair
            print(f"  repeat {repeat + 1} {label:6s}: " + ", ".join(f"{s:,.0f}" for s in pair)
                  + f" tokens/s; pair wall {wall:.1f} s", flush=True)
    before, after = (statistics.median(speeds[k]) for k in ("before", "after"))
    print(f"median tokens/s per run: before {before:,.0f}, after {after:,.0f}: after/before {after / before:.3f}x")


if __name__ == "__main__":
    main()
