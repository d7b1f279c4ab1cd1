"""The race: a HyperCloned model against the same wide model from random init (and the source).

Read top to bottom:

1. ``train_interval``: the training loop, as nanoGPT would write it, run for
   one contestant (``contestants.py``: the clones, random init, the source;
   one AdamW each) up to its next evaluation; ``evaluate`` scores a model on
   the fixed validation windows.
2. ``race``: gather the settings in a ``RaceConfig`` (``race_config.py``);
   ``run_race``: check and load what the race needs (``race_setup.py``),
   then evaluate everyone before training and go round-robin: each
   contestant trains one evaluation interval, is evaluated, and the record
   is written to the run directory (``runs.py``) and handed to the callback;
   so live curves grow side by side.

Fairness, by construction: the batch of step ``s`` depends only on
``(seed, s)``, so every contestant sees the same batches in the same order (a
sha1 chain over them is recorded and compared); every contestant gets the same
AdamW, clipping, precision and RNG stream (each contestant keeps its own RNG
state, so dropout masks do not depend on who else is racing), and the same
learning-rate schedule unless its recipe says otherwise (``race_config.py``:
``paper`` shares it, ``continue``, ``clone-aware`` and ``gentle`` (the default
clone's) change it, recorded in ``run.json``). Data-parallel runs (``accelerate launch``) split each
global batch into equal shards, so the global batch is the same as on one
process.

A contestant diverges when its loss is not finite, or when it climbs above
``DIVERGENCE_FACTOR`` times the highest loss any contestant had before
training (random init's, about ln(vocabulary)): it stops there with its last
good weights and the others continue.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from hyperclone.training.contestants import (Contestant, build_contestants, grow_staged, load_checkpoint, own_rng, save_checkpoint,
                          set_lr)
from hyperclone.training.cpu_speed import denormals_flushed, keep_freed_memory
from hyperclone.training.data import Corpus
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import RUN_ARGUMENTS, RaceConfig, lr_at, race_config
from hyperclone.training.next_token_loss import head_cross_entropy, mean_cross_entropy, plain_head
from hyperclone.training.setup import (check_batch_splits, check_corpus_fits_model, check_race_fits, describe_run, is_oom,
                         load_race_corpus, load_race_source, make_accelerator, oom_error, resolve_run_dir)
from hyperclone.training.results import RaceResult
from hyperclone.training.runs import (RUN_ID, RunLog, hold_run_dir, open_run_dir, result_from_events, run_info_for, supersede,
                   write_run_info)
from hyperclone.training.trackers import tracker_names, tracking

DIVERGENCE_FACTOR = 2.0  # x the highest loss before training: above it, a contestant has diverged


# --------------------------------------------------------------------------- #
# 1. The training loop
# --------------------------------------------------------------------------- #
def loss_on(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (in float32 whatever the compute precision; ``next_token_loss.py``).

    On the CPU, for a model whose logits are its LM head's output, straight from the hidden states
    (``head_cross_entropy``: the logits are never stored whole); otherwise from the model's logits.
    """
    head = plain_head(model, x)
    if head is not None:
        hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state
        return head_cross_entropy(hidden.flatten(0, 1), head.weight, head.bias, y.flatten())
    logits = model(input_ids=x, use_cache=False).logits
    return mean_cross_entropy(logits.float().flatten(0, 1), y.flatten())


class RaceState:
    """Shared state of one race: settings, accelerator, data, run log, stop signal, what was emitted."""

    def __init__(self, cfg, accelerator, corpus, windows, callback, stop_event, run_dir: Path | None):
        self.cfg, self.accelerator, self.corpus, self.windows = cfg, accelerator, corpus, windows
        self.callback, self.stop_event, self.run_dir = callback, stop_event, run_dir
        self.run_id: str | None = None  # run.json's, repeated in each checkpoint
        self.log: RunLog | None = None
        self.stopping = False
        self.current = ""  # the contestant being trained or evaluated (for error messages)
        self.records: list[dict] = []
        self.events: list[dict] = []
        self.warnings: list[str] = []
        self.divergence_limit = math.inf  # set once every contestant's step-0 loss is known

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bytes]:
        """This process's rows of the global batch of ``step`` (on device), and the batch's bytes."""
        cfg, acc = self.cfg, self.accelerator
        x, y = self.corpus.get_batch("train", cfg.batch_size, cfg.seq_len, step=step, seed=cfg.seed)
        shard = cfg.batch_size // acc.num_processes
        rows = slice(acc.process_index * shard, (acc.process_index + 1) * shard)
        return x[rows].to(acc.device), y[rows].to(acc.device), x.numpy().tobytes()

    def agree(self, bad: bool = False) -> tuple[bool, bool]:
        """(any process saw a bad loss, stop requested anywhere): the same answer on every process."""
        stop = self.stop_event is not None and self.stop_event.is_set()
        if self.accelerator.num_processes > 1:
            flags = torch.tensor([float(bad), float(stop)], device=self.accelerator.device)
            flags = self.accelerator.reduce(flags, "max")
            bad, stop = bool(flags[0]), bool(flags[1])
        return bad, stop

    def emit(self, event: dict) -> None:
        """Write an event to the run log (fsynced) and hand it to the callback, on the main process."""
        (self.records if event["event"] == "metrics" else self.events).append(event)
        if self.accelerator.is_main_process:
            if self.log is not None:
                self.log.write(event)
            if self.callback is not None:
                self.callback(dict(event))

    def replay(self, events: list[dict]) -> None:
        """Take over the still-valid events of a stopped run (handed to the callback, not written again)."""
        for event in events:
            (self.records if event["event"] == "metrics" else self.events).append(event)
            if self.callback is not None and self.accelerator.is_main_process:
                self.callback(dict(event))

    @contextlib.contextmanager
    def logging_to_run_dir(self, run_info: dict) -> Iterator[None]:
        """Write ``run.json`` and keep ``metrics.jsonl`` open for appending (main process, with a run dir)."""
        if self.run_dir is not None and self.accelerator.is_main_process:
            write_run_info(self.run_dir, run_info)
            self.log = RunLog(self.run_dir)
        try:
            yield
        finally:
            if self.log is not None:
                self.log.close()

    @contextlib.contextmanager
    def out_of_memory_explained(self) -> Iterator[None]:
        """Out of memory becomes a one-line error naming the contestant and a smaller batch to try."""
        try:
            yield
        except Exception as e:
            if not is_oom(e):
                raise
            error = oom_error(f"training {self.current}", self.cfg, self.accelerator.device)
            self.emit({"event": "error", "message": str(error), "time": round(time.time(), 3)})
            raise error from None


def divergence(loss_value: float, grad_norm: float, limit: float) -> str | None:
    """What went wrong with a training step, in words, or None when the step is sound."""
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        return f"training loss became {loss_value}"
    if loss_value > limit:
        return (f"training loss became {loss_value:.4g}, more than {DIVERGENCE_FACTOR:g}x the highest loss "
                f"before training, {limit / DIVERGENCE_FACTOR:.4g}")
    return None


def mark_diverged(c: Contestant, reason: str, lr: float | None) -> None:
    at_lr = f" (lr {lr:.3g})" if lr is not None else ""
    c.status = "diverged"
    c.message = (f"stopped at step {c.step}: {reason}{at_lr}; weights kept from step {c.step}, "
                 "the other contestants continue")


def train_interval(c: Contestant, state: RaceState) -> None:
    """Train ``c`` up to its next evaluation step (or its budget), one AdamW step at a time."""
    cfg, acc = state.cfg, state.accelerator
    end = c.interval_end(cfg.eval_every)  # a staged contestant also stops where it grows
    c.model.train()
    t0 = time.perf_counter()
    with own_rng(c), denormals_flushed(acc.device):
        while c.step < end:
            lr = lr_at(c.step, c.budget, c.schedule)
            set_lr(c.optimizer, lr)
            x, y, batch_bytes = state.batch(c.step)

            loss = loss_on(c.model, x, y)
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(c.model.parameters(), cfg.grad_clip or float("inf"))

            loss_value = loss.item()
            problem = divergence(loss_value, float(grad_norm), state.divergence_limit)
            bad, stop = state.agree(problem is not None)
            if bad or stop:
                c.optimizer.zero_grad(set_to_none=True)  # the weights stay those of the last good step
                if bad:
                    mark_diverged(c, problem or "training loss diverged on another process", lr)
                else:
                    state.stopping = True
                break
            c.optimizer.step()
            c.optimizer.zero_grad(set_to_none=True)

            c.step += 1
            c.loss_sum += loss_value
            c.loss_count += 1
            c.data_sha1 = hashlib.sha1(c.data_sha1.encode() + batch_bytes).hexdigest()
    if c.due_to_grow:
        grow_staged(c, cfg, acc)
    if acc.device.type == "cuda":
        torch.cuda.synchronize(acc.device)
    c.seconds += time.perf_counter() - t0


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 16,
             accelerator=None) -> tuple[float, float]:
    """Mean validation loss (nats/token) and next-token accuracy over the fixed windows ``[n, T+1]``.

    With an ``accelerator``, each process scores every ``num_processes``-th
    window and the sums are added across processes, so the figures are those
    of the whole set; without one, the model scores them all on its device.
    """
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator else next(model.parameters()).device
    mine = windows[accelerator.process_index :: accelerator.num_processes] if accelerator else windows
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, tokens
    with accelerator.autocast() if accelerator else contextlib.nullcontext():
        for chunk in mine.split(batch_size):
            chunk = chunk.to(device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            logits = model(input_ids=x, use_cache=False).logits.float()
            sums[0] += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").double()
            sums[1] += (logits.argmax(-1) == y).sum()
            sums[2] += y.numel()
    if accelerator and accelerator.num_processes > 1:
        sums = accelerator.reduce(sums, "sum")
    model.train(was_training)
    loss, correct, count = sums.tolist()
    return loss / count, correct / count


def mean_training_loss(c: Contestant, acc) -> float | None:
    """The training loss averaged since the last evaluation over every process (None before training)."""
    if not c.loss_count:
        return None
    sums = torch.tensor([c.loss_sum, float(c.loss_count)], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        sums = acc.reduce(sums, "sum")
    c.loss_sum, c.loss_count = 0.0, 0
    return float(sums[0] / sums[1])


def evaluate_and_record(c: Contestant, state: RaceState) -> float:
    """Evaluate ``c``, emit its metrics record, and return its validation loss."""
    from hyperclone.core.symmetry import symmetry

    cfg, acc = state.cfg, state.accelerator
    t0 = time.perf_counter()
    val_loss, val_acc = evaluate(c.raw, state.windows, cfg.batch_size, acc)
    train_loss = mean_training_loss(c, acc)
    sym = symmetry(c.raw, cfg.factor, cfg.ffn_factor) if c.origin == "clone" or c.grown else None
    c.seconds += time.perf_counter() - t0
    tokens = c.step * cfg.batch_size * cfg.seq_len
    state.emit({
        "event": "metrics",
        "contestant": c.name,
        "step": c.step,
        "tokens": tokens,
        "flops": c.flops(cfg.batch_size * cfg.seq_len),
        "lr": lr_at(c.step - 1, c.budget, c.schedule) if c.step else None,  # of the last step taken
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "symmetry": sym,
        "seconds": round(c.seconds, 3),
        "time": round(time.time(), 3),
        "data_sha1": c.data_sha1,
    })
    return val_loss


# --------------------------------------------------------------------------- #
# Checkpoints and resuming
# --------------------------------------------------------------------------- #
def maybe_checkpoint(c: Contestant, state: RaceState, force: bool = False) -> None:
    """Checkpoint ``c`` when it crossed a multiple of ``checkpoint_every`` (or ``force``: it stopped)."""
    every = state.cfg.checkpoint_every
    if state.run_dir is None or not every or c.step == c.last_checkpoint:
        return
    if force or c.step // every > c.last_checkpoint // every:
        save_checkpoint(c, state.run_dir, state.accelerator.is_main_process, state.run_id)


def resume_from_checkpoints(state: RaceState, contestants: list[Contestant], logged: list[dict]) -> None:
    """Restore every contestant that has a checkpoint, and take over the ``logged`` events still valid."""
    from_steps = {}
    for c in contestants:
        if not load_checkpoint(c, state.run_dir, state.cfg, state.accelerator, state.run_id):
            state.warnings.append(f"{c.name}: no checkpoint, restarted from step 0")
        from_steps[c.name] = c.step
    state.replay(supersede(logged, from_steps))  # so live views start complete
    state.emit({"event": "resumed", "from_steps": from_steps, "time": round(time.time(), 3)})


# --------------------------------------------------------------------------- #
# 2. The race
# --------------------------------------------------------------------------- #
def race(source: Any = None, config: RaceConfig | None = None, **overrides: Any) -> RaceResult:
    """Race HyperCloned models against random init (and the source) on identical data.

    ``source``: a built-in name, checkpoint directory or hub id (``load_source``), or a transformers model with
    its ``tokenizer`` (None: ``config.source``). The settings are ``config`` (default ``RaceConfig()``) with
    ``overrides``, each a ``RaceConfig`` field by name (``help(RaceConfig)``; a name that is not one: one line
    naming the closest), e.g. ``race("tiny-gpt2-stdlib", steps=100, contestants=("noisy_symmetric", "random"))``.
    ``contestants``: clone variants (``symmetric``, ``diagonal``, ``noisy_symmetric``, ``noisy_diagonal``),
    ``random`` (the same wide config, transformers' default init) and ``source`` (the small model, trained on),
    as text with an optional recipe (``noisy_symmetric@lr=3e-4``, ``source@continue``, ``symmetric@clone-aware``;
    by default ``noisy_symmetric@gentle`` and ``random``) or a ``ContestantSpec``; ``staged@200`` trains the
    source and grows it at step 200. ``data``: a ``load_corpus`` spec or a ``Corpus``. ``steps_for``: other
    budgets for some (a longer random run measures speed-up (a)).

    The run arguments (``RUN_ARGUMENTS``: how to run, not stored as settings): every ``eval_every`` steps each
    contestant is evaluated and a record goes to ``callback``, ``run_dir/metrics.jsonl`` and the trackers of
    ``log_with`` (``trackers.py``); ``stop_event`` stops cleanly between steps (checkpointed per
    ``checkpoint_every``); ``resume=True`` continues ``run_dir``'s run as if unbroken; ``device``, ``tokenizer``;
    custom model code: ``trust_remote_code``.
    """
    run = {key: overrides.pop(key) for key in RUN_ARGUMENTS if key in overrides}
    trackers = tracker_names(run.pop("log_with", None), run.get("run_dir"))  # one line before anything loads
    corpus = overrides.get("data") if isinstance(overrides.get("data"), Corpus) else None
    if corpus is not None:
        overrides["data"] = corpus.spec
    cfg = race_config(config, source, **overrides)
    return run_race(cfg, cfg.source if source is None else source, corpus=corpus, log_with=trackers, **run)


def run_race(cfg: RaceConfig, source: Any, *, tokenizer: Any = None, corpus: Any = None, device=None,
             run_dir: str | os.PathLike | None = None,
             callback: Callable[[dict], None] | None = None, stop_event: threading.Event | None = None,
             resume: bool = False, trust_remote_code: bool = False, log_with: tuple[str, ...] = ()) -> RaceResult:
    """The race for the settings in ``cfg``, top to bottom (``race`` gathers them from its arguments).

    ``cfg.precision`` None picks bf16 on GPUs that have it, else fp32; ``corpus``
    None loads ``cfg.data`` with ``tokenizer`` (or the source's own).
    """
    cfg.validate()
    if resume and run_dir is None:
        raise HyperCloneError("resume needs the run_dir of the run to continue")
    accelerator, cfg.precision = make_accelerator(device, cfg.precision)
    check_batch_splits(cfg, accelerator)
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # cpu_speed.py: the step's large tensors reuse freed heap, not fresh pages
    run_path = resolve_run_dir(run_dir, accelerator)
    with hold_run_dir(run_path, accelerator.is_main_process):  # one race per run directory, for the whole race
        stored = open_run_dir(run_path, resume)
        source_model, tokenizer, tokens_origin = load_race_source(cfg, source, tokenizer, trust_remote_code)
        check_race_fits(cfg, source_model, accelerator.device, accelerator.num_processes)  # before anything is built
        corpus = corpus if corpus is not None else load_race_corpus(cfg, tokenizer, accelerator)
        check_corpus_fits_model(source_model, cfg, corpus)
        if stored is not None:
            cfg.check_same_settings_as(stored.info["config"])
        windows = corpus.validation_windows(cfg.eval_windows, cfg.seq_len)
        contestants = build_contestants(cfg, source_model, accelerator)

        run_info = run_info_for(describe_run(cfg, accelerator, contestants, source_model, tokens_origin, corpus,
                                             windows), stored)
        state = RaceState(cfg, accelerator, corpus, windows, callback, stop_event, run_path)
        state.run_id, state.warnings = run_info.get(RUN_ID), list(stored.warnings) if stored else []
        with tracking(state, run_info, log_with), state.logging_to_run_dir(run_info), state.out_of_memory_explained():
            if stored is not None:
                resume_from_checkpoints(state, contestants, stored.events)
            run_rounds(state, contestants)

    result = result_from_events(run_info, state.records + state.events, run_path, state.warnings)
    result.records, result.events = state.records, state.events  # in the order emitted
    result.models = {c.name: c.raw for c in contestants}
    return result


def run_rounds(state: RaceState, contestants: list[Contestant]) -> None:
    """Step-0 evaluations, then round-robin intervals until everyone is done or a stop is asked."""
    evaluate_starting_points(state, contestants)
    while not state.stopping:
        running = [c for c in contestants if c.status == "running"]
        if not running:
            break
        for c in running:
            if state.stopping or state.agree()[1]:
                state.stopping = True
                break
            train_and_evaluate(c, state)
    if state.stopping:
        for c in contestants:
            if c.status == "running":
                c.status, c.message = "stopped", f"stop requested at step {c.step}"
                state.emit({"event": "stopped", "contestant": c.name, "step": c.step, "message": c.message})
                maybe_checkpoint(c, state, force=True)


def evaluate_starting_points(state: RaceState, contestants: list[Contestant]) -> None:
    """Evaluate every contestant before training (unless a resumed run has it), then set the divergence limit."""
    have_start = {r["contestant"] for r in state.records if r["step"] == 0}
    for c in contestants:
        if c.step == 0 and c.name not in have_start:
            state.current = c.name
            evaluate_and_record(c, state)
    start_losses = [r["val_loss"] for r in state.records
                    if r["step"] == 0 and r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    if start_losses:
        state.divergence_limit = DIVERGENCE_FACTOR * max(start_losses)


def train_and_evaluate(c: Contestant, state: RaceState) -> None:
    """One interval of ``c``: train, evaluate, and say when it finished or diverged."""
    state.current = c.name
    train_interval(c, state)
    if c.status != "diverged" and not state.stopping:
        val_loss = evaluate_and_record(c, state)
        problem = divergence(val_loss, 0.0, state.divergence_limit)
        if problem is not None:
            mark_diverged(c, problem.replace("training loss", "validation loss"), None)
        elif c.step >= c.budget:
            c.status, c.message = "finished", f"trained {c.budget} steps"
            state.emit({"event": "finished", "contestant": c.name, "step": c.step, "message": c.message})
    if c.status == "diverged":
        state.emit({"event": "diverged", "contestant": c.name, "step": c.step, "message": c.message})
    if not state.stopping or c.status == "diverged":
        maybe_checkpoint(c, state, force=c.status != "running")
