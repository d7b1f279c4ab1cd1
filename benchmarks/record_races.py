"""Record the long races shipped under hyperclone/assets/runs/ (one per built-in source, trained side by side).

    python benchmarks/record_races.py --contestants noisy_symmetric,noisy_symmetric@lr=3e-4@warmup=30,random,source \
        [--sources tiny-gpt2-stdlib,tiny-llama-stdlib] [--steps 1000] [--batch-size 16] [--seq-len 128] [--lr 3e-3]

Every contestant of a race gets the same budget and batches; the schedule is
constant after warm-up, so every evaluation is a fair horizon for the
speed-up-vs-horizon figure. Each race is written to a temporary directory
beside its destination and renamed into place when it has finished, with a
``recorded.json`` giving this exact command, the machine and the date; an
existing recording of the same name is replaced only with ``--replace``.
Prints each race's table and its speed-up against horizon.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return (f"{gpu}" if gpu else f"CPU {platform.machine()}, {os.cpu_count()} cores") + \
        f", torch {torch.__version__}, {platform.system()}"


def record_one(job: dict) -> str:
    """Train one race into a temporary directory, then rename it to its destination; return its report."""
    import torch

    torch.set_num_threads(job.pop("threads"))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the figures
    from hyperclone.training.recorded import write_record
    from hyperclone.training.loop import race

    dest, command, title = Path(job.pop("dest")), job.pop("command"), job.pop("title")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)) / "run"
    t0 = time.perf_counter()
    result = race(job.pop("source"), run_dir=tmp, **job)
    wall = time.perf_counter() - t0
    summary = "; ".join(f"{r.contestant}: {r.words}" for r in result.readouts() if r.tokens > 0)
    write_record(tmp, title, command, f"{machine()}; {wall / 60:.0f} min",
                 time.strftime("%Y-%m-%d", time.gmtime()), summary)
    if dest.exists():
        shutil.rmtree(dest)  # only reached with --replace, and dest is a recording this script wrote
    tmp.rename(dest)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return report(result, wall)


def report(result, wall: float) -> str:
    lines = [f"\n{result.config['source']}: {wall:.0f} s", result.table(), result.fairness,
             "speed-up vs horizon (* the clone was not below its own start there: head start, not evidence):"]
    for name in result.contestants:
        if name.partition("@")[0] in ("random", "source"):
            continue
        points = [p for p in result.horizon(name) if p.value is not None or p.bound is not None]
        lines.append(f"  {name}: " + ", ".join(
            f"{p.tokens_per_param:.2f} tok/param {p.value:.2f}x{'*' if p.above_start else ''}" if p.value is not None else
            f"{p.tokens_per_param:.2f} tok/param {p.bound[0]}{p.bound[1]:.2f}x" for p in points[:: max(1, len(points) // 8)]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hyperclone.training.recorded import RUNS_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", default="tiny-gpt2-stdlib,tiny-llama-stdlib")
    p.add_argument("--contestants", required=True, help="the race's contestants, as for `hyperclone race`")
    p.add_argument("--data", default="builtin-large",
                   help="the race's corpus (default builtin-large: what the built-in sources trained on)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="the shared (paper recipe) learning rate")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per race (default: the cores shared among the sources)")
    p.add_argument("--out", type=Path, default=RUNS_DIR)
    p.add_argument("--replace", action="store_true", help="replace an earlier recording of the same name")
    args = p.parse_args(argv)
    command = "python benchmarks/record_races.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    sources = [s.strip() for s in args.sources.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for source in sources:
        dest = args.out / f"{source}-x2-{args.steps}-steps"
        if dest.exists() and not (args.replace and (dest / "recorded.json").is_file()):
            print(f"{dest} exists; " + ("pass --replace to record it again" if (dest / "recorded.json").is_file()
                                        else "it is not a recording; move it away"))
            return 2
        jobs.append(dict(source=source, dest=str(dest), command=command, threads=args.threads or max(1, (os.cpu_count() or 1) // len(sources)),
                         title=f"{source} x2, {args.steps} steps x {args.batch_size} x {args.seq_len} tokens of {args.data}",
                         contestants=tuple(args.contestants.split(",")), data=args.data, steps=args.steps, batch_size=args.batch_size,
                         seq_len=args.seq_len, lr=args.lr, warmup=args.warmup, schedule="constant",
                         eval_every=args.eval_every, eval_windows=args.eval_windows, device=args.device,
                         attn_implementation="eager"))
    print(f"$ {command}\n# {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    with ProcessPoolExecutor(max_workers=len(jobs)) as pool:
        for text in pool.map(record_one, jobs):
            print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
