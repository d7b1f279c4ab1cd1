"""Which learning-rate recipe lets a clone keep (and use) its head start? A sweep at equal budgets.

    python benchmarks/recipe_sweep.py [--sources tiny-gpt2-stdlib,tiny-llama-stdlib] [--steps 200]
        [--batch-size 8] [--seq-len 128] [--jobs 2] [--workdir DIR]

For each built-in source, every recipe below trains as its own one-contestant
race on the same batch sequence (batch of step s fixed by (seed, s); the sha1
chains of the batches are compared across runs), the same budget, schedule
shape (cosine after warm-up) and validation windows:

* clones (noisy_symmetric, x2): lr in {the source's final lr (card), 1e-3, 3e-3}
  x {plain, clone-aware (lr/k on weights divided by k)} x warm-up {0, 30};
  then SNR in {0, 5, 20} dB (10 is the grid's) for the best of those;
* random init of the same wide model: lr in {1e-3, 3e-3, 1e-2} (its own best is the baseline).

Printed per recipe: the largest rise above the step-0 loss, tokens until back
below it, the final loss, speed-up (b) against random init's best recipe, and
the per-token learning speed from equal loss (tokens random init needs from the
moment it reaches the clone's start loss down to the clone's final loss, over
the tokens the clone needed for the same descent). Then the recipe to adopt:
the lowest final loss among recipes that keep the head start (never more than
0.05 nats above the start, ending within 0.01 of it or below, below random init
at equal tokens), or a plain statement that none does.

The defaults are the dashboard's default race (200 steps x 8 x 128 tokens);
runs are kept under --workdir, and a finished run is read back, not retrained.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

GRID_LRS = (None, 1e-3, 3e-3)  # None: the source's final lr, from its card
RANDOM_LRS = (1e-3, 3e-3, 1e-2)
WARMUPS = (0, 30)
SNRS = (0.0, 5.0, 10.0, 20.0)
GRID_SNR = 10.0
CLONE = "noisy_symmetric"
NOT_MEASURED = {"worse": "the clone ended above its start", "random": "random init did not get down to the clone's "
                "start (or its final loss) within its run", "clone": "the clone did not reach the target"}


def clone_specs(final_lr: float) -> list[str]:
    """The clone grid: lr x {plain, clone-aware} x warm-up, as contestant specs."""
    from hyperclone.training.config import format_lr

    specs = []
    for lr in GRID_LRS:
        for aware in (False, True):
            for warmup in WARMUPS:
                recipe = "@clone-aware" if aware else ""
                specs.append(f"{CLONE}{recipe}@lr={format_lr(lr if lr is not None else final_lr)}@warmup={warmup}")
    return specs


def run_one(job: dict) -> str:
    """Train one recipe (its own race) unless its run is already complete; return the run directory."""
    import torch

    torch.set_num_threads(job.pop("threads"))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the figures
    from hyperclone.training.runs import is_run_dir, load_run
    from hyperclone.training.loop import race

    run_dir = Path(job.pop("run_dir"))
    if is_run_dir(run_dir) and load_run(run_dir).complete:
        return str(run_dir)
    race(job.pop("source"), run_dir=run_dir, resume=is_run_dir(run_dir), device="cpu", **job)
    return str(run_dir)


def jobs_for(source: str, specs: list[str], snr: float, args: argparse.Namespace) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    return [dict(source=source, contestants=(spec,), snr_db=snr, steps=args.steps, batch_size=args.batch_size,
                 seq_len=args.seq_len, eval_every=args.eval_every, eval_windows=args.eval_windows,
                 warmup=30, schedule="cosine", attn_implementation="eager", threads=threads,
                 run_dir=str(args.workdir / source / f"{spec}@snr={snr:g}"))
            for spec in specs]


def train_all(jobs: list[dict], n: int) -> list[str]:
    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run_one, jobs))


def row_for(name: str, curve, baseline, snr: float) -> dict:
    from hyperclone.training.recipe_stats import equal_loss_speed, keeps_head_start, rise_of
    from hyperclone.training.speedups import speedup

    r = rise_of(curve)
    b = speedup(curve, baseline, "b", names=(name, "random"))
    speed = equal_loss_speed(curve, baseline)
    return dict(recipe=name, snr=snr, rise=r.rise, back=r.back_below, final=r.final, start=r.start,
                b=b.value, b_text=b.describe().split(":")[0][4:], speed=speed.ratio, speed_why=speed.reason,
                problems=keeps_head_start(curve, baseline))


def fmt_tokens(value) -> str:
    return "never" if value is None else f"{value / 1e3:.0f}k"


def print_table(source: str, rows: list[dict], randoms: list[dict], baseline_name: str) -> None:
    print(f"\n{source}: clone recipes (noisy_symmetric x2) against random init's best ({baseline_name})")
    head = f"{'recipe':<50}{'SNR':>5}{'start':>8}{'max rise':>10}{'back below':>11}{'final':>8}{'(b)':>10}{'per-token':>11}  keeps head start"
    print(head)
    for r in rows:
        speed = f"{r['speed']:.2f}x" if r["speed"] is not None else f"n/a:{r['speed_why']}"
        keeps = "yes" if not r["problems"] else "no: " + "; ".join(r["problems"])
        print(f"{r['recipe']:<50}{r['snr']:>5g}{r['start']:>8.4f}{r['rise']:>+10.4f}{fmt_tokens(r['back']):>11}"
              f"{r['final']:>8.4f}{r['b_text']:>10}{speed:>11}  {keeps}")
    print("random init, same wide model: " + "; ".join(f"{r['recipe']} final {r['final']:.4f}" for r in randoms))
    print("  per-token n/a: " + "; ".join(f"{code}: {why}" for code, why in NOT_MEASURED.items()))


def sweep_source(source: str, args: argparse.Namespace) -> dict:
    from hyperclone.training.config import format_lr
    from hyperclone.training.setup import final_lr_of, source_card
    from hyperclone.training.runs import load_run

    final_lr = final_lr_of(source_card(source))
    randoms = [f"random@lr={format_lr(lr)}" for lr in RANDOM_LRS]
    grid = clone_specs(final_lr)
    dirs = train_all(jobs_for(source, grid + randoms, GRID_SNR, args), args.jobs)
    results = {spec: load_run(d) for spec, d in zip(grid + randoms, dirs)}
    check_same_batches(results)
    curves = {spec: res.curve(res.contestants[0]) for spec, res in results.items()}
    finals = {spec: curves[spec][-1][1] for spec in randoms}
    best_random = min(randoms, key=lambda s: finals[s])
    rows = [row_for(spec, curves[spec], curves[best_random], GRID_SNR) for spec in grid]
    best = min(rows, key=lambda r: (r["final"], r["rise"]))["recipe"]
    snr_specs = [s for s in SNRS if s != GRID_SNR]
    snr_dirs = train_all([j for snr in snr_specs for j in jobs_for(source, [best], snr, args)], args.jobs)
    for snr, d in zip(snr_specs, snr_dirs):
        res = load_run(d)
        check_same_batches({**results, d: res})
        rows.append(row_for(best, res.curve(res.contestants[0]), curves[best_random], snr))
    random_rows = [dict(recipe=s, final=finals[s]) for s in randoms]
    print_table(source, rows, random_rows, best_random)
    keepers = [r for r in rows if not r["problems"]]
    adopt = min(keepers, key=lambda r: r["final"]) if keepers else None
    print(f"adopt for {source}: " + (f"{adopt['recipe']} at SNR {adopt['snr']:g} dB (final {adopt['final']:.4f}, "
                                     f"max rise {adopt['rise']:+.4f})" if adopt else
                                     "none: no recipe keeps the head start at this budget"), flush=True)
    return dict(source=source, adopt=adopt, best_random=best_random, final_lr=final_lr)


def check_same_batches(results: dict) -> None:
    """Every run saw the same batch sequence: ``RaceResult.same_batches`` over all their records at once."""
    from hyperclone.training.results import RaceResult

    merged = RaceResult(config={"contestants": []}, info={}, records=[r for res in results.values() for r in res.records])
    if not merged.same_batches():
        raise SystemExit("runs saw different batches (their sha1 chains differ); delete --workdir and rerun")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sources", default="tiny-gpt2-stdlib,tiny-llama-stdlib")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--jobs", type=int, default=2, help="recipes trained at once (CPU threads are split)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/recipe-sweep"))
    args = p.parse_args(argv)
    import torch

    print(f"recipe sweep: {args.steps} steps x {args.batch_size} x {args.seq_len} tokens per recipe, cosine to 0.1 x "
          f"peak, evaluation every {args.eval_every} steps on {args.eval_windows} windows; {args.jobs} at once; "
          f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    t0 = time.perf_counter()
    for source in args.sources.split(","):
        sweep_source(source.strip(), args)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; runs under {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
