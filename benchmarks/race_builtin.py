"""The paper's claim on a built-in model, the honest way: the adopted clone recipe, equal budgets.

    python benchmarks/race_builtin.py [--source tiny-gpt2-stdlib] [--steps 200] [--batch-size 8] [--seq-len 128]

Contestants, on identical batches with the same budget and schedule shape
(warm-up, cosine to 0.1 x peak over the budget; the dashboard's default race):
``noisy_symmetric@gentle`` (the clone with the recipe ``benchmarks/recipe_sweep.py``
adopted), ``noisy_symmetric`` (the paper's recipe: the clone shares random init's
learning rate), ``random`` (the same wide model from transformers' default init,
at its best learning rate in the sweep, ``--lr``) and ``source@gentle`` (the
small model trained on).

Prints the validation-loss curves, the table with both speed-ups (in tokens, and
in FLOPs counting the source's own training from its model card), each clone's
step-0 and final loss and whether it keeps its head start (never more than 0.05
nats above its start, ending within 0.01 of it or below, below random init at
equal tokens), and the wall time. About 3 minutes on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from hyperclone.io.sources import builtin_dir
from hyperclone.training.loop import race

CONTESTANTS = ("noisy_symmetric@gentle", "noisy_symmetric", "random", "source@gentle")


def main(argv: list[str] | None = None) -> int:
    from hyperclone.training.recipe_stats import keeps_head_start, rise_of

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default="tiny-gpt2-stdlib")
    p.add_argument("--steps", type=int, default=200, help="steps of every contestant (equal budgets)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="the shared lr: random init's best in the recipe sweep")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--snr-db", type=float, default=10.0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--attn", default="eager", help="eager is ~2x faster than sdpa for GPT-2 on CPU")
    p.add_argument("--run-dir", default=None, help="keep the run log (default: a temporary directory)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if not (builtin_dir(args.source) / "model.safetensors").exists():
        print(f"{args.source} is not built yet; run `python -m hyperclone.cli.build_assets` first")
        return 1
    import tempfile

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="race-builtin-")) / "run"
    print(f"race: {args.source} x2, {', '.join(CONTESTANTS)}; {args.steps} steps each x {args.batch_size} x "
          f"{args.seq_len} tokens; shared lr {args.lr:g}, warm-up {args.warmup}, {args.schedule}; SNR {args.snr_db:g} "
          f"dB; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    t0 = time.perf_counter()

    def progress(event: dict) -> None:
        if event["event"] == "metrics":
            print(f"  {time.perf_counter() - t0:6.0f}s  {event['contestant']:<24} step {event['step']:4d}  "
                  f"val {event['val_loss']:.4f}", flush=True)

    result = race(args.source, contestants=CONTESTANTS, steps=args.steps, batch_size=args.batch_size,
                  seq_len=args.seq_len, lr=args.lr, warmup=args.warmup, schedule=args.schedule, snr_db=args.snr_db,
                  eval_every=args.eval_every, eval_windows=args.eval_windows, attn_implementation=args.attn,
                  device="cpu", run_dir=run_dir, callback=progress)
    wall = time.perf_counter() - t0

    print("\nvalidation loss (nats/token) by step:")
    print(result.curves_table("val_loss"))
    print()
    print(result.table())
    print()
    print(result.fairness)
    print()
    for name in CONTESTANTS[:2]:
        r = rise_of(result.curve(name))
        problems = keeps_head_start(result.curve(name), result.curve("random"))
        speedups = " ".join(s.describe().split(":")[0] for s in result.speedups() if s.contestant == name)
        print(f"{name}: step 0 {r.start:.4f}, highest {r.peak:.4f} ({r.rise:+.4f}), final {r.final:.4f} "
              f"({r.final_change:+.4f}); {speedups}; keeps its head start: "
              + ("yes" if not problems else "NO: " + "; ".join(problems)))
    for r in result.readouts():
        print(f"read-out: {r.words}")
    print(f"wall time {wall:.0f} s; run log {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
