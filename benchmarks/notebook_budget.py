"""The smallest live race for notebook 3 that still makes its claims true, with margin.

    python benchmarks/notebook_budget.py [--steps 40,60,80,120,200] [--threads 2]

Notebook 3 races `noisy_symmetric@gentle`, `random` and `source@gentle` (x2 clone of the built-in GPT-2) on
the `builtin` corpus, 8 x 128 tokens a step, warm-up 30 steps then cosine decay, eval every 10 steps on 32
windows, and asserts that the clone keeps its head start (`keeps_head_start`: it never rises more than 0.05
nats above its start, ends at most 0.01 above it, and is below random init at equal tokens). This script runs
that race at each step budget (the same settings otherwise, one race at a time, `--threads` torch threads)
and prints, per budget, the wall time and each claim's value beside its limit, so the margin is read off a
table rather than guessed. Nothing is cached: every race is trained here.
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def notebook_settings(steps: int) -> dict:
    """Notebook 3's race settings at ``steps`` (warm-up shortened only where the budget is shorter than it)."""
    return dict(steps=steps, batch_size=8, seq_len=128, lr=3e-3, warmup=min(30, steps // 2), schedule="cosine",
                eval_every=10, eval_windows=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="40,60,80,120,200")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from hyperclone import race
    from hyperclone.training.recipe_stats import keeps_head_start, rise_of
    from hyperclone.training.speedups import loss_at, measured

    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({args.threads} threads), load average {os.getloadavg()[0]:.1f}")
    clone, small = "noisy_symmetric@gentle", "source@gentle"
    print(f"{'steps':>5} {'seconds':>8} {'rise (<=0.05)':>14} {'end-start (<=0.01)':>19} "
          f"{'clone-random at equal tokens (<0)':>34} {'symmetry':>9}  problems")
    for steps in (int(s) for s in args.steps.split(",")):
        t0 = time.perf_counter()
        result = race("tiny-gpt2-stdlib", factor=2, contestants=(clone, "random", small), seed=0,
                      attn_implementation="eager", **notebook_settings(steps))
        seconds = time.perf_counter() - t0
        mine, theirs = measured(result.curve(clone)), measured(result.curve("random"))
        common = min(mine[-1][0], theirs[-1][0])
        rise = rise_of(result.curve(clone))
        gap = loss_at(mine, common) - loss_at(theirs, common)
        problems = keeps_head_start(result.curve(clone), result.curve("random"))
        print(f"{steps:>5} {seconds:>8.0f} {rise.rise:>+14.4f} {rise.final_change:>+19.4f} {gap:>+34.4f} "
              f"{result.final(clone)['symmetry']:>9.4f}  {'; '.join(problems) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
