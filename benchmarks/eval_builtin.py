"""lm-evaluation-harness scores of the built-in sources and their x2 clones on the local 20-item task.

A function-preserving clone must score what its source scores; the last columns give the largest difference
between the two models' log-likelihoods of any choice of any example (float32, CPU), and the smallest margin
between an example's best and second-best choice (a difference below it cannot change the accuracy).

Usage (from the repository root; the task's YAML names its data relative to it):
    .venv/bin/python benchmarks/eval_builtin.py
"""

from __future__ import annotations

import platform
from pathlib import Path

import lm_eval
import torch
import transformers

from hyperclone import clone, evaluate_tasks
from hyperclone.views.harness import prepare_tasks
from hyperclone.io.sources import BUILTIN_NAMES, load_source

TASKS = Path(__file__).resolve().parents[1] / "tests" / "data" / "lm_eval"
TASK = "tiny_mc"


def main() -> None:
    print(f"lm-eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else '?'}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {platform.machine()}, {torch.get_num_threads()} threads")
    task = prepare_tasks(TASK, TASKS)
    rows = []
    for name in BUILTIN_NAMES:
        source, tokenizer = load_source(name, device="cpu")
        scored = evaluate_tasks(source, task, tokenizer, name=name)
        wide = clone(source, factor=2)
        grown = evaluate_tasks(wide, task, tokenizer, name=f"{name} x2")
        src, x2 = (torch.tensor(r.loglikelihoods[TASK], dtype=torch.float64) for r in (scored, grown))
        best_two = src.topk(2, dim=1).values
        margin = (best_two[:, 0] - best_two[:, 1]).min().item()
        for label, model, result, diff in ((name, source, scored, None), (f"{name} x2", wide, grown,
                                                                         (src - x2).abs().max().item())):
            print(f"\n{label}\n{result.table()}")
            rows.append((label, model.num_parameters(), result.metrics[TASK], diff, margin))
    print(f"\n{'model':<24}{'params':>10}{'acc':>8}{'acc_norm':>10}{'max |d loglik|':>16}{'min margin':>12}")
    for label, params, metrics, diff, margin in rows:
        print(f"{label:<24}{params:>10,}{metrics['acc,none']:>8.2f}{metrics['acc_norm,none']:>10.2f}"
              f"{'-' if diff is None else f'{diff:.2e}':>16}{margin:>12.4f}")


if __name__ == "__main__":
    main()
