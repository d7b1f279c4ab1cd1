"""``hyperclone eval``: lm-evaluation-harness tasks on a source, a clone, or a race contestant's checkpoint.

Kept out of ``cli.py`` (which only registers it). The table is lm-eval's own; the JSON result goes inside
a HyperClone output or beside a race's checkpoints, or to ``--out``; a source's directory is never written.

    hyperclone eval clones/x2 --tasks zeroshot10 --download
    hyperclone eval tiny-gpt2-stdlib --include-path tests/data/lm_eval --tasks tiny_mc --out eval.json
    hyperclone eval runs/demo/checkpoints/symmetric.pt --tasks arc_easy,piqa --limit 200
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from hyperclone.cli.options import DTYPES
from hyperclone.core.errors import HyperCloneError, quoted, shown
from hyperclone.views.harness import PRESETS, parse_tasks, result_tag


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {quoted(text, 40)}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {shown(text, 40)}")
    return int(value) if value >= 1 and value == int(value) else value


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="run lm-evaluation-harness tasks on a source, a clone or a race checkpoint")
    p.add_argument("path", help="built-in name, checkpoint directory, hub id, a race's checkpoints/NAME.pt, "
                                "or a race run directory with --contestant")
    p.add_argument("--tasks", required=True,
                   help="lm-eval tasks separated by commas, or a preset: "
                        + "; ".join(f"{k} = {','.join(v)}" for k, v in PRESETS.items())
                        + " (common zero-shot tasks; not confirmed to be the paper's 10)")
    p.add_argument("--include-path", default=None, help="a directory of task YAMLs of your own (as lm-eval names it)")
    p.add_argument("--limit", type=_positive, default=None,
                   help="at most this many examples per task (a fraction below 1: that share); for quick checks")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: each task's own)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--contestant", default=None, help="with a race run directory: which contestant's checkpoint")
    p.add_argument("--out", type=Path, default=None,
                   help="write the JSON result here (default: inside a HyperClone output as eval-TASKS.json, "
                        "or beside a race's checkpoints; a source is not written to)")
    p.add_argument("--download", action="store_true",
                   help="fetch task data missing from the local cache from the Hugging Face hub (default: cache only)")
    p.add_argument("--seed", type=int, default=0, help="lm-eval's random seeds (few-shot sampling)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="load dtype (default float32)")
    p.add_argument("--device", default=None, help="cuda, mps, cpu or auto (default: the best available)")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; they can run code")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    tasks = parse_tasks(args.tasks)  # before anything heavy is imported
    if args.batch_size < 1:
        raise HyperCloneError(f"--batch-size must be at least 1, got {args.batch_size}")
    from hyperclone.views.harness import (default_result_path, evaluate_tasks, load_for_eval, prepare_tasks, race_target,
                          write_result)
    from hyperclone.io.sources import check_device

    check_device(args.device)
    race_target(args.path, args.contestant)  # a run without --contestant, or --contestant without a run: one line
    prepared = prepare_tasks(tasks, args.include_path, args.download)  # unknown tasks, missing data: before loading
    out = args.out or default_result_path(args.path, result_tag(args.tasks), args.contestant)
    model, tokenizer = load_for_eval(args.path, args.contestant, device=args.device, dtype=args.dtype,
                                     allow_pickle=args.allow_pickle)
    name = f"{args.path}" + (f" ({args.contestant})" if args.contestant else "")
    print(f"evaluating {name}: {model.num_parameters() / 1e6:.2f}M params on {next(model.parameters()).device}, "
          f"tasks {', '.join(tasks)}", flush=True)
    result = evaluate_tasks(model, prepared, tokenizer, limit=args.limit, num_fewshot=args.num_fewshot,
                            batch_size=args.batch_size, seed=args.seed, name=name)
    print(result.table())
    if out is None:
        print("not saved: pass --out FILE to write the JSON result (a source's directory is left untouched)")
        return 0
    command = "hyperclone " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["eval"] else None
    print(f"saved {write_result(result, out, {'command': command})}")
    return 0
