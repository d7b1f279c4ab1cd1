"""``hyperclone reproduce``: the paper's comparison at micro scale, with a time estimate and progress.

    hyperclone reproduce --out reports/micro-gpt2              # the whole report (70-80 min on 2 cores)
    hyperclone reproduce --out reports/micro-gpt2 --resume     # go on after an interruption
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hyperclone.core.errors import HyperCloneError

LIST_FLAGS = {"horizons": float, "lrs": float, "seeds": int}


def add_reproduce_parser(sub) -> None:
    """Register ``reproduce`` on the ``hyperclone`` sub-command parser."""
    p = sub.add_parser("reproduce", help="the paper's experiment at micro scale: horizons, lr sweeps, seeds, "
                                          "variants, speed-up (b); one report",
                       description="Run the paper's comparison (a 2x clone against random init with shared "
                                   "hyperparameters) at several budgets in tokens per wide parameter, with lr "
                                   "sweeps, seeds and the four variants; writes report.json, report.html and the "
                                   "run logs under --out. Finished runs are kept: --resume goes on.")
    a = p.add_argument
    a("--source", default="micro-gpt2-stdlib", help="source model (default micro-gpt2-stdlib)")
    a("--out", default="reproduce", help="report directory (default ./reproduce)")
    a("--resume", action="store_true", help="continue the report in --out with the same settings")
    a("--workers", type=int, default=2, help="runs at once, one CPU thread each (default 2)")
    a("--horizons", default=None, help="budgets in tokens per wide parameter, e.g. 5,20,50 (default)")
    a("--sweep-horizon", type=float, default=None, help="the horizon of the lr sweeps and seeds (default 20)")
    a("--lrs", default=None, help="the lr grid of the sweeps, e.g. 3e-3,1e-2,3e-2 (default)")
    a("--seeds", default=None, help="seeds at the sweep horizon, e.g. 0,1,2 (default)")
    a("--variants", default=None, help="clone variants compared at the sweep horizon (default: all four)")
    a("--thorough", action="store_true", help="also random init's better neighbour and the clone's own best lr "
                                              "at horizons past the sweep's (the costliest runs)")
    for name, kind, help_text in (("batch-size", int, "sequences per step (default 16)"),
                                  ("seq-len", int, "tokens per sequence (default 128)"),
                                  ("warmup", int, "warm-up steps of every run (default 100)"),
                                  ("eval-every", int, "steps between evaluations (default 50)"),
                                  ("eval-windows", int, "validation windows (default 64)")):
        a(f"--{name}", type=kind, default=None, help=help_text)
    a("--data", default=None, help="training data (default builtin-large)")
    a("--yes", action="store_true", help="start without the 5-second pause after the estimate")
    p.set_defaults(func=cmd_reproduce)


def settings_from(args) -> dict:
    """The ``ReproduceConfig`` fields the flags give (lists parsed; a bad one is a one-line error)."""
    settings = {}
    for name, kind in LIST_FLAGS.items():
        text = getattr(args, name)
        if text is not None:
            try:
                settings[name] = tuple(kind(p) for p in text.split(",") if p.strip())
            except ValueError:
                raise HyperCloneError(f"--{name}: expected numbers with commas, e.g. "
                                      f"{'0,1,2' if kind is int else '5,20,50'}; got {text!r}") from None
    if args.variants is not None:
        settings["variants"] = tuple(p.strip() for p in args.variants.split(",") if p.strip())
    for name in ("sweep_horizon", "batch_size", "seq_len", "warmup", "eval_every", "eval_windows", "data"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.thorough:
        settings["thorough"] = True
    return settings


def cmd_reproduce(args) -> int:
    from hyperclone.training.paper_report import check_report_dir, estimate, reproduce
    from hyperclone.views.paper_figure import write_report_html

    settings = settings_from(args)
    check_report_dir(Path(args.out), args.resume)  # before the estimate times anything
    guess = estimate(args.source, args.workers, **settings)
    print(guess["text"], flush=True)
    if not args.yes and sys.stdout.isatty():
        time.sleep(5)
    started = time.time()
    report = reproduce(args.source, args.out, resume=args.resume, workers=args.workers,
                       progress=ProgressLine(guess, started), command="hyperclone " + " ".join(sys.argv[1:]),
                       **settings)
    html = write_report_html(report, Path(args.out))
    print(f"\n{report['summary']}\nreport: {Path(args.out) / 'report.json'}, {html} "
          f"({(time.time() - started) / 60:.1f} min)")
    return 0


class ProgressLine:
    """Prints how far the report is (runs, tokens, time left) every 30 s, or in place on a terminal."""

    def __init__(self, guess: dict, started: float):
        self.guess, self.started, self.last = guess, started, 0.0
        self.first: int | None = None  # steps already done when this call began (a resumed report)

    def __call__(self, state: dict) -> None:
        now = time.time()
        tty = sys.stdout.isatty()
        if now - self.last < (2 if tty else 30):
            return
        self.last = now
        steps, total, done = state["steps_done"], self.guess["steps"], state["runs_done"]
        self.first = steps if self.first is None else self.first
        share = min(1.0, steps / total) if total else 1.0
        elapsed, now_share = now - self.started, (steps - self.first) / total if total else 0.0
        left = (f"about {elapsed / now_share * (1 - share) / 60:.0f} min left" if now_share > 0.02
                else "timing the pace")
        bar = "#" * int(share * 30)
        line = (f"[{bar:<30}] {share:4.0%} {done}/{self.guess['runs']} runs done, {len(state['running'])} running, "
                f"{elapsed / 60:.0f} min in, {left}")
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
