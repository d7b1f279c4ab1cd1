"""``hyperclone race``: the training race from the command line.

Kept out of ``cli.py`` (which only registers it) so the race's many options
live next to each other. Under ``accelerate launch`` (or torchrun) every
process runs this command; only the first prints and writes files.

    hyperclone race --source tiny-gpt2-stdlib --factor 2 \\
        --contestants noisy_symmetric,symmetric,random,source --steps 300 --run-dir runs/demo
    hyperclone race --run-dir runs/demo --resume        # continue a stopped or killed run
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from .errors import HyperCloneError, quoted
from .race_config import (CONTESTANT_CHOICES, PRECISIONS, RECIPE_HELP, SCHEDULES,  # no torch: --help answers at once
                          RaceConfig)
from .runs import METRICS_FILE, is_run_dir, write_failure
from .trackers import TRACKERS, tracker_hints, tracker_names

DEFAULTS = RaceConfig()  # shown in --help


def _steps_for(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")  # a name may hold "=" itself: random@lr=3e-3=1200
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=STEPS[,NAME=STEPS], got {quoted(part)}")
        out[name.strip()] = int(value)
    return out


def _contestants(text: str) -> tuple[str, ...]:
    return tuple(filter(None, (p.strip() for p in text.split(","))))


def add_race_parser(sub) -> None:
    """Register ``race`` on the ``hyperclone`` sub-command parser."""
    p = sub.add_parser("race", help="train clones vs random init (vs the source) on identical data",
                       description="Race HyperCloned models against random initialisation on identical batches; "
                                   "prints a table with both speed-ups and saves an HTML chart next to the run log.")
    a = p.add_argument
    a("--source", default=None, help=f"built-in name, checkpoint directory or hub id (default {DEFAULTS.source})")
    a("--factor", type=int, default=None, help=f"width multiplier (default {DEFAULTS.factor})")
    a("--ffn-factor", type=int, default=None, help="FFN multiplier (default: --factor)")
    a("--contestants", type=_contestants, default=None,
      help=f"comma-separated, from {', '.join(CONTESTANT_CHOICES)}, each with an optional recipe: {RECIPE_HELP}; "
           f"e.g. noisy_symmetric,noisy_symmetric@lr=3e-4,random@lr=3e-3 (default {','.join(DEFAULTS.contestants)})")
    a("--data", default=None, help="builtin, a .txt/.jsonl file, a directory, or hf:NAME[:CONFIG] (default builtin)")
    a("--steps", type=int, default=None, help=f"training steps per contestant (default {DEFAULTS.steps})")
    a("--steps-for", type=_steps_for, default=None,
      help="other budgets for some contestants, e.g. random=1200 (to measure speed-up (a))")
    a("--batch-size", type=int, default=None, help=f"global batch, in sequences (default {DEFAULTS.batch_size})")
    a("--seq-len", type=int, default=None, help=f"tokens per sequence (default {DEFAULTS.seq_len})")
    a("--lr", type=float, default=None, help=f"peak learning rate (default {DEFAULTS.lr:g})")
    a("--min-lr-ratio", type=float, default=None,
      help=f"final lr / peak for decaying schedules (default {DEFAULTS.min_lr_ratio})")
    a("--warmup", type=int, default=None, help=f"linear warm-up steps (default {DEFAULTS.warmup})")
    a("--schedule", choices=SCHEDULES, default=None, help=f"after warm-up (default {DEFAULTS.schedule})")
    a("--weight-decay", type=float, default=None,
      help=f"AdamW weight decay on matrices (default {DEFAULTS.weight_decay})")
    a("--grad-clip", type=float, default=None, help=f"gradient norm clipping, 0 = off (default {DEFAULTS.grad_clip})")
    a("--eval-every", type=int, default=None, help=f"steps between evaluations (default {DEFAULTS.eval_every})")
    a("--eval-windows", type=int, default=None, help=f"fixed validation windows (default {DEFAULTS.eval_windows})")
    a("--seed", type=int, default=None, help=f"data order, random init and clone noise (default {DEFAULTS.seed})")
    a("--snr-db", type=float, default=None, help=f"noise of the noisy variants, in dB (default {DEFAULTS.snr_db:g})")
    a("--attn", dest="attn_implementation", default=None, help="attention kernel, e.g. eager or sdpa (default: the model's)")
    a("--source-train-tokens", type=int, default=None,
      help="tokens the source was trained on, for the FLOPs comparison (built-in models: read from their card)")
    a("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    a("--trust-remote-code", action="store_true", help="allow custom model code from the source checkpoint")
    a("--precision", choices=PRECISIONS, default=None, help="fp32, or bf16 (default: bf16 on GPUs, else fp32)")
    a("--run-dir", default=None, help="where run.json, metrics.jsonl, checkpoints and race.html go "
                                      "(default runs/race-<time>)")
    a("--checkpoint-every", type=int, default=None, help="save resumable checkpoints every N steps")
    a("--resume", action="store_true", help="continue the run in --run-dir with its stored settings")
    a("--log-with", default=None, help=f"also log to experiment trackers, one run per contestant: "
      f"{', '.join(TRACKERS)}, several with commas, or all (those installed); offline by default")
    a("--log-x", action="store_true", help="log-scale token axis in the HTML chart")
    a("--no-progress", action="store_true", help="no progress bars (one line per evaluation instead)")
    p.set_defaults(func=cmd_race)


# Settings that are not part of RaceConfig but race() arguments.
RUNTIME = ("device", "precision", "trust_remote_code", "log_with")


def _race_kwargs(args) -> dict:
    """race() keyword arguments: the stored settings when resuming, overridden by what was given."""
    kwargs: dict = {}
    if args.resume:
        if not args.run_dir:
            raise HyperCloneError("--resume needs --run-dir of the run to continue")
        if not is_run_dir(args.run_dir):
            raise HyperCloneError(f"nothing to resume in {args.run_dir} (no run log); start it without --resume")
        stored = RaceConfig.from_run(args.run_dir)
        if stored.source.startswith("<"):
            raise HyperCloneError("this run's source was a model object, not a name; resume it from Python "
                                  "with race(model, ..., resume=True)")
        kwargs = {"source": stored.source, **stored.race_arguments()}
    options = [key for key in vars(DEFAULTS) if key != "source_sha1"] + list(RUNTIME)
    for key in options:
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
    return kwargs


def _progress(names: list[str], budgets: dict[str, int], enabled: bool, main: bool):
    """A callback drawing one tqdm bar per contestant (or printing one line per evaluation)."""
    if not main:
        return None, lambda: None
    if not enabled:
        def printer(event: dict) -> None:
            if event["event"] == "metrics":
                sym = f"  symmetry {event['symmetry']:.4f}" if event.get("symmetry") is not None else ""
                print(f"[{event['contestant']}] step {event['step']:5d}  val loss {event['val_loss']:.4f}  "
                      f"acc {event['val_accuracy']:.4f}{sym}", flush=True)
            elif event["event"] != "resumed":
                print(f"[{event.get('contestant', 'race')}] {event['event']}: {event.get('message', '')}", flush=True)
        return printer, lambda: None

    from tqdm.auto import tqdm

    width = max(len(n) for n in names)
    bars = {n: tqdm(total=budgets[n], desc=n.ljust(width), position=i, unit="step", dynamic_ncols=True, leave=True)
            for i, n in enumerate(names)}

    def update(event: dict) -> None:
        bar = bars.get(event.get("contestant"))
        if bar is None:
            return
        if event["event"] == "metrics":
            bar.update(event["step"] - bar.n)
            post = {"val": f"{event['val_loss']:.3f}"}
            if event.get("symmetry") is not None:
                post["sym"] = f"{event['symmetry']:.3f}"
            bar.set_postfix(post, refresh=True)
        elif event["event"] in ("diverged", "stopped"):
            bar.set_description(f"{event['contestant'].ljust(width)} ({event['event']})")

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return update, close


def cmd_race(args) -> int:
    kwargs = _race_kwargs(args)
    source = kwargs.pop("source", DEFAULTS.source)
    run_dir = args.run_dir or "auto"
    trackers = tracker_names(kwargs.get("log_with"), run_dir)  # a missing tracker: one line, before torch loads
    from .plots import race_report_html
    from .train import race

    main = int(os.environ.get("RANK", "0")) == 0
    cfg = RaceConfig(contestants=tuple(kwargs.get("contestants", DEFAULTS.contestants)),
                     steps=kwargs.get("steps", DEFAULTS.steps), steps_for=kwargs.get("steps_for", {}))
    cfg.validate()
    budgets = {n: cfg.budget(n) for n in cfg.contestants}

    # First Ctrl-C: stop cleanly after the current step (with checkpoints if enabled); second: abort.
    stop = threading.Event()

    def on_sigint(signum, frame):
        if stop.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        stop.set()
        if main:
            print("\nstopping after the current step (Ctrl-C again to abort)", flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    callback, close = _progress(list(cfg.contestants), budgets, not args.no_progress, main)
    try:
        result = race(source, run_dir=run_dir, callback=callback, stop_event=stop, resume=args.resume, **kwargs)
    finally:
        close()
        signal.signal(signal.SIGINT, previous)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # a clean exit for every process of a data-parallel launch
    if not main:
        return 0
    print()
    print(result.table())
    print()
    print(result.fairness)
    for w in result.warnings:
        print(f"note: {w}")
    html = Path(result.run_dir) / "race.html"
    try:
        html.write_text(race_report_html(result, log_x=args.log_x), encoding="utf-8")
    except OSError as e:  # a full or read-only disk: the run log is kept, only the chart is missing
        html = f"not written: {write_failure(result.run_dir, e, html)}"
    print(f"\nrun log: {Path(result.run_dir) / METRICS_FILE}\nchart:   {html}")
    for hint in tracker_hints(trackers, result.run_dir):  # where the trackers' runs are, and how to see them
        print(hint)
    if not result.complete:
        print(f"the run stopped before the end; continue it with: hyperclone race --run-dir {result.run_dir} "
              "--resume")
    return 0
