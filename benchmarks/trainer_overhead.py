"""Throughput of ``race`` (with evaluations, symmetry, run log and a callback) vs a bare torch loop.

    python benchmarks/trainer_overhead.py [--steps 100] [--repeats 2]
    python benchmarks/trainer_overhead.py --source micro-gpt2-stdlib --data builtin-large --eval-every 50 \
        --eval-windows 64 --steps 300 --threads 1 --compile     # issue 24: the micro clone, and torch.compile
    ... --activation gelu_new     # the same, with the GELU kernel micro-gpt2-stdlib trained with (Python ops)

Both train the same x2 noisy-symmetric clone of the built-in GPT-2 (or, if the
built-in model is not built yet, a GPT-2 of the same shape with random
weights; the overhead does not depend on the weights) on the same batches
with the same AdamW, schedule and clipping, in the same process, alternating
bare / race so that a busy machine slows both alike. The bare loop is what
nanoGPT would write: no evaluation, no metrics, no logging. The race's time is
its whole ``race()`` call (cloning, step-0 and periodic evaluation, symmetry,
fsynced run log, callback). Target: race >= 95% of the bare loop's tokens/s.

On a machine shared with other work, wall time swings by +-15% from one run
to the next, more than the overhead being measured; so each run's process
CPU time is measured too (with one torch thread it is the compute this
process did, whatever else runs), and both ratios are printed.

``--compile`` adds the bare loop with ``torch.compile(model)``: its tokens/s after
its first steps (which compile), the compile time, and its loss after the last
step beside the eager loop's (same batches, same weights): faster only counts
where it is also the same training.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hyperclone import clone
from hyperclone.training.data import load_corpus
from hyperclone.training.contestants import make_optimizer
from hyperclone.training.loop import RaceConfig, lr_at, race

SOURCE = "tiny-gpt2-stdlib"


def source_model(name: str = SOURCE):
    """A built-in model and its tokenizer, or a tiny-gpt2-shaped random stand-in (and which one it is)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from hyperclone.io.sources import builtin_dir, load_source

    if (builtin_dir(name) / "model.safetensors").exists():
        model, tok = load_source(name, device="cpu")
        return model, tok, name
    tok = AutoTokenizer.from_pretrained(Path(__file__).resolve().parents[1] / "hyperclone" / "assets" / "tokenizer")
    config = AutoConfig.for_model("gpt2", vocab_size=len(tok), n_embd=64, n_layer=4, n_head=4, n_positions=256,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), tok, "random GPT-2 of the built-in shape (not built yet)"


def bare_loop(source, corpus, cfg: RaceConfig, compiled: bool = False, timed_from: int = 0) -> tuple[float, float, float]:
    """(wall, CPU) seconds for ``cfg.steps`` plain training steps of a fresh clone (cloning included), and the last
    loss; ``compiled``: through ``torch.compile``; ``timed_from``: the clock starts at that step (after compiling)."""
    t0, c0 = time.perf_counter(), time.process_time()
    model = clone(source, cfg.factor, variant="noisy_symmetric", snr_db=cfg.snr_db, seed=cfg.seed).float()
    optimizer = make_optimizer(model, cfg)
    model.train()
    forward = torch.compile(model) if compiled else model
    for step in range(cfg.steps):
        if step == timed_from and step:
            t0, c0 = time.perf_counter(), time.process_time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg)
        x, y = corpus.get_batch("train", cfg.batch_size, cfg.seq_len, step=step, seed=cfg.seed)
        logits = forward(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    last = loss.item()
    return time.perf_counter() - t0, time.process_time() - c0, last


def race_run(source, tok, corpus, cfg: RaceConfig, run_dir: Path) -> tuple[float, float, int]:
    """(wall, CPU) seconds for the whole race() call, and how many events its callback received."""
    events = []
    t0, c0 = time.perf_counter(), time.process_time()
    race(source, tokenizer=tok, data=corpus, contestants=("noisy_symmetric",), steps=cfg.steps, precision="fp32",
         batch_size=cfg.batch_size, seq_len=cfg.seq_len, lr=cfg.lr, warmup=cfg.warmup, eval_every=cfg.eval_every,
         eval_windows=cfg.eval_windows, seed=cfg.seed, device="cpu", run_dir=run_dir, callback=events.append)
    return time.perf_counter() - t0, time.process_time() - c0, len(events)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--source", default=SOURCE, help=f"built-in source (default {SOURCE})")
    parser.add_argument("--data", default="builtin", help="corpus (default builtin)")
    parser.add_argument("--eval-every", type=int, default=RaceConfig.eval_every)
    parser.add_argument("--eval-windows", type=int, default=RaceConfig.eval_windows)
    parser.add_argument("--compile", action="store_true", help="also the bare loop through torch.compile")
    parser.add_argument("--activation", default=None,
                        help="a GPT-2 source's activation_function for this run, e.g. gelu_new (the Python-ops "
                             "formula micro-gpt2-stdlib trained with) against its shipped gelu_pytorch_tanh")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    source, tok, what = source_model(args.source)
    if args.activation:
        source.config.activation_function = args.activation  # the clone copies the config: its MLPs use it
        what += f" with activation {args.activation}"
    cfg = RaceConfig(steps=args.steps, eval_every=args.eval_every, eval_windows=args.eval_windows)  # batch 16 x 128
    corpus = load_corpus(args.data, tok, cfg.seq_len)
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    print(f"source: {what}; clone x2 noisy_symmetric; {cfg.steps} steps x {cfg.batch_size} x {cfg.seq_len} tokens; "
          f"race evaluates every {cfg.eval_every} steps on {cfg.eval_windows} windows; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    wall, cpu = {"bare": [], "race": []}, {"bare": [], "race": []}
    with tempfile.TemporaryDirectory() as tmp:
        bare_loop(source, corpus, RaceConfig(steps=3))  # warm-up: first-call allocations, lazy imports
        for i in range(args.repeats):
            bw, bc, _ = bare_loop(source, corpus, cfg)
            rw, rc, n_events = race_run(source, tok, corpus, cfg, Path(tmp) / f"run{i}")
            wall["bare"].append(bw), wall["race"].append(rw), cpu["bare"].append(bc), cpu["race"].append(rc)
            print(f"  repeat {i + 1}: bare loop {bw:5.1f} s wall {bc:5.1f} s CPU | race {rw:5.1f} s wall {rc:5.1f} s "
                  f"CPU ({n_events} callback events) | race/bare tokens/s: wall {bw / rw:.3f}, CPU {bc / rc:.3f}",
                  flush=True)
    print("\n| measured (median of {n}) | bare torch loop | race (metrics + callback + run log) | race / bare |"
          .format(n=args.repeats))
    print("|---|---|---|---|")
    ratios = {}
    for label, times in (("tokens per wall second", wall), ("tokens per CPU second", cpu)):
        b, r = statistics.median(times["bare"]), statistics.median(times["race"])
        ratios[label] = b / r
        print(f"| {label} | {tokens / b:.0f} | {tokens / r:.0f} | {b / r:.1%} |")
    if args.compile:
        compiled_figures(source, corpus, cfg, statistics.median(wall["bare"]), statistics.median(cpu["bare"]))
    cpu_ratio = ratios["tokens per CPU second"]
    print(f"target >= 95%: {'met' if cpu_ratio >= 0.95 else 'NOT met'} by CPU time ({cpu_ratio:.1%}); "
          f"wall time {ratios['tokens per wall second']:.1%} (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")

COMPILE_STEPS = 5  # the compiled loop's first steps (they compile) are timed apart


def compiled_figures(source, corpus, cfg: RaceConfig, bare_wall: float, bare_cpu: float) -> None:
    """The bare loop through ``torch.compile``: compile time, tokens/s after it, and its last loss beside eager's."""
    t0 = time.perf_counter()
    bare_loop(source, corpus, dataclasses.replace(cfg, steps=COMPILE_STEPS), compiled=True)
    first = time.perf_counter() - t0
    wall, cpu, loss = bare_loop(source, corpus, cfg, compiled=True, timed_from=COMPILE_STEPS)
    _, _, eager = bare_loop(source, corpus, cfg)
    timed = (cfg.steps - COMPILE_STEPS) * cfg.batch_size * cfg.seq_len
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    print(f"| torch.compile(model), bare loop, after its first {COMPILE_STEPS} steps | {timed / wall:.0f} wall, "
          f"{timed / cpu:.0f} CPU | | {tokens / bare_wall / (timed / wall):.1%} of compiled (bare eager / compiled, "
          f"wall) |")
    print(f"compiled: first {COMPILE_STEPS} steps took {first:.1f} s (compiling); speed-up over the eager bare loop "
          f"{(timed / wall) / (tokens / bare_wall):.2f}x wall, {(timed / cpu) / (tokens / bare_cpu):.2f}x CPU; "
          f"loss after {cfg.steps} steps: eager {eager:.6f}, compiled {loss:.6f} (|diff| {abs(eager - loss):.2e})")


if __name__ == "__main__":
    sys.exit(main())
