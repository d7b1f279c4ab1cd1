"""The lesson's races: a time estimate against the time the race actually takes, on a quiet or a busy machine.

    python benchmarks/estimate_vs_actual.py [--preset quick|paper] [--busy N] [--quiet-below 1.5] [--wait 1800] [--runs 1]

``--preset quick`` (default): the lesson's quick race (``QUICK`` on tiny-gpt2-stdlib, the lesson's x2 symmetric
growth). ``--preset paper``: "Reproduce the paper (micro)" (``PAPER_MICRO`` on its micro source, as its button
starts it), timed end to end, with the (b) read-out it ends on.

Per run: wait (up to ``--wait`` seconds, polling the 1-minute load average) until the machine is quiet
(load below ``--quiet-below``; ``--busy N``: skip the wait and start N busy loops, ``python3 -c "while True:
pass"``, beside the race, killed after it); time the estimate as the lesson does when Start is pressed
(``estimate_race``: a few small steps of the wide model, their median, at the load of now); then run the quick
race as the lesson does (``race(name, QUICK, ...)`` on the CPU) and print the estimate's range beside the actual
time, and the remaining-time forecast (``remaining_seconds`` from the pace measured so far) at a quarter, half and
three quarters of the race beside the time that really remained. Nothing is cached: every race is trained here.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time


def wait_until_quiet(below: float, wait_s: float) -> float:
    """Poll the 1-minute load average until it is below ``below`` (at most ``wait_s`` seconds); the last reading."""
    deadline = time.time() + wait_s
    while os.getloadavg()[0] >= below and time.time() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def forecasts(marks: list[tuple[float, int, float | None]], end: float, total: int) -> str:
    """The remaining-time forecasts at 25/50/75 % of the steps beside what really remained: ``50%: 41 s vs 38 s``."""
    out = []
    for share in (0.25, 0.5, 0.75):
        mark = next(((t, done, left) for t, done, left in marks if done >= share * total and left is not None), None)
        if mark is not None:
            out.append(f"{share:.0%}: {mark[2]:.0f} vs {end - mark[0]:.0f} s")
    return "; ".join(out) or "none"


def preset(which: str):
    """(source name, race settings, growth, settings the race is given beside them) of a lesson preset."""
    from hyperclone import Growth
    from hyperclone.teach.lesson import PAPER_MICRO, QUICK
    from hyperclone.training.config import growth_settings

    if which == "paper":  # as its button starts it: its own source and x2 clone
        return PAPER_MICRO.source, PAPER_MICRO, PAPER_MICRO.growth(), {}
    growth = Growth(2, None, "symmetric")  # the lesson's own settings
    return "tiny-gpt2-stdlib", QUICK, growth, growth_settings(growth)


def one_run(name: str, source, tokenizer, cfg, growth, extra: dict) -> str:
    from hyperclone.teach.lesson import estimate_race, remaining_seconds
    from hyperclone.training.loop import race

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    estimate = estimate_race(source, growth, len(cfg.contestants), cfg.steps, cfg.batch_size, cfg.seq_len,
                             cfg.eval_every)
    timing_s = time.perf_counter() - t0
    records, marks = [], []
    total = cfg.steps * len(cfg.contestants)

    def on_record(event: dict) -> None:
        if event["event"] == "metrics":
            records.append(event)
            done = sum(max((r["step"] for r in records if r["contestant"] == n), default=0) for n in cfg.contestants)
            marks.append((time.perf_counter(), done, remaining_seconds(records, cfg.steps)))

    start = time.perf_counter()
    result = race(name, cfg, tokenizer=tokenizer, device="cpu", callback=on_record, **extra)
    end = time.perf_counter()
    actual = end - start
    inside = "yes" if estimate.low <= actual <= estimate.high else "no"
    final = "; ".join(r.words for r in result.readouts())  # every clone against the best random init
    return (f"{load_before:>11.1f} {os.getloadavg()[0]:>10.1f} {timing_s:>8.1f} "
            f"{estimate.low:>7.0f}-{estimate.high:<7.0f} {actual:>7.0f} {actual / estimate.low:>12.2f} {inside:>7}  {forecasts(marks, end, total)}  "
            f"[{estimate.words()}]" + (f"\n# read-out at the end: {final}" if final else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="the lesson's quick race, or 'Reproduce the paper (micro)'")
    parser.add_argument("--busy", type=int, default=0, help="busy loops beside the race (0: wait for a quiet machine)")
    parser.add_argument("--quiet-below", type=float, default=1.5)
    parser.add_argument("--wait", type=float, default=1800, help="seconds to wait for a quiet machine at most")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    import torch

    from hyperclone import load_source

    name, cfg, growth, extra = preset(args.preset)
    source, tokenizer = load_source(name, device="cpu")
    condition = f"busy: {args.busy} busy loops beside the race" if args.busy else f"quiet: load < {args.quiet_below}"
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); {condition}; preset {args.preset}: "
          f"{name}, {', '.join(cfg.contestants)}, {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len}")
    print(f"{'load before':>11} {'load after':>10} {'timing':>8} {'estimate (s)':>15} {'actual':>7} "
          f"{'actual / low':>12} {'inside':>7}  remaining-time forecast vs what remained, at a share of the steps")
    for _ in range(args.runs):
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        try:
            if not args.busy:
                load = wait_until_quiet(args.quiet_below, args.wait)
                if load >= args.quiet_below:
                    print(f"# not quiet after {args.wait:.0f} s of waiting (load {load:.1f}); measured anyway")
            else:
                time.sleep(5)  # let the loops start
            print(one_run(name, source, tokenizer, cfg, growth, extra), flush=True)
        finally:
            for p in loops:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
