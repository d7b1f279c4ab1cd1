"""``hyperclone race``: the training race from the command line.

Kept out of ``cli.py`` (which only registers it) so the race's many options
live next to each other. Under ``accelerate launch`` (or torchrun) every
process runs this command; only the first prints and writes files.

    hyperclone race --source tiny-gpt2-stdlib --factor 2 \\
        --contestants noisy_symmetric,symmetric,random,source --steps 300 --run-dir runs/demo
    hyperclone race --run-dir runs/demo --resume        # continue a stopped or killed run
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from pathlib import Path

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import flag_options
from hyperclone.training.config import RaceConfig, race_config  # no torch: --help answers at once
from hyperclone.training.runs import METRICS_FILE, is_run_dir, run_config, write_failure
from hyperclone.training.trackers import TRACKERS, tracker_hints, tracker_names


def add_race_parser(sub) -> None:
    """Register ``race`` on the ``hyperclone`` sub-command parser."""
    p = sub.add_parser("race", help="train clones vs random init (vs the source) on identical data",
                       description="Race HyperCloned models against random initialisation on identical batches; "
                                   "prints a table with both speed-ups and saves an HTML chart next to the run log.")
    for flag, options in flag_options(RaceConfig, given_only=True):  # one flag per setting, declared there
        p.add_argument(flag, **options)
    a = p.add_argument  # the run arguments (RUN_ARGUMENTS) and how to show the race: not settings
    a("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    a("--trust-remote-code", action="store_true", help="allow custom model code from the source checkpoint")
    a("--run-dir", default=None, help="where run.json, metrics.jsonl, checkpoints and race.html go "
                                      "(default runs/race-<time>)")
    a("--resume", action="store_true", help="continue the run in --run-dir with its stored settings")
    a("--log-with", default=None, help=f"also log to experiment trackers, one run per contestant: "
      f"{', '.join(TRACKERS)}, several with commas, or all (those installed); offline by default")
    a("--log-x", action="store_true", help="log-scale token axis in the HTML chart")
    a("--no-progress", action="store_true", help="no progress bars (one line per evaluation instead)")
    p.set_defaults(func=cmd_race)


RUN_FLAGS = ("device", "trust_remote_code", "log_with")  # run arguments (RUN_ARGUMENTS) the command passes on


def _race_settings(args) -> RaceConfig:
    """The race's settings: the flags given, over the stored settings when resuming (else over the defaults)."""
    stored = None
    if args.resume:
        if not args.run_dir:
            raise HyperCloneError("--resume needs --run-dir of the run to continue")
        if not is_run_dir(args.run_dir):
            raise HyperCloneError(f"nothing to resume in {args.run_dir} (no run log); start it without --resume")
        stored = run_config(args.run_dir)
        if stored.source.startswith("<"):
            raise HyperCloneError("this run's source was a model object, not a name; resume it from Python "
                                  "with race(model, ..., resume=True)")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RaceConfig) if hasattr(args, f.name)}
    return race_config(stored, **given)


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
    cfg = _race_settings(args)
    run = {key: getattr(args, key) for key in RUN_FLAGS if getattr(args, key)}
    run_dir = args.run_dir or "auto"
    trackers = tracker_names(run.get("log_with"), run_dir)  # a missing tracker: one line, before torch loads
    from hyperclone.views.plots import race_report_html
    from hyperclone.training.loop import race

    main = int(os.environ.get("RANK", "0")) == 0
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
        result = race(cfg.source, cfg, run_dir=run_dir, callback=callback, stop_event=stop, resume=args.resume,
                      **run)
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
