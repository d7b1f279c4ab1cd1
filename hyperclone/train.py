"""The race: a HyperCloned model against the same wide model from random init (and the source).

Read top to bottom:

1. ``RaceConfig``: every setting as a plain value (saved in ``run.json``; in
   ``race_config.py``, which needs no torch).
2. ``build_contestants``: the clones, random init, the source; one AdamW each.
3. ``train_interval``: the training loop, as nanoGPT would write it, run for
   one contestant up to its next evaluation.
4. ``race``: evaluate everyone before training, then round-robin: each
   contestant trains one evaluation interval, is evaluated on the fixed
   validation windows, and the record is written to the run log and handed
   to the callback; so live curves grow side by side.

Fairness, by construction: the batch of step ``s`` depends only on
``(seed, s)``, so every contestant sees the same batches in the same order (a
sha1 chain over them is recorded and compared); every contestant gets the same
AdamW, learning-rate schedule, warm-up, clipping, precision and RNG stream
(each contestant keeps its own RNG state, so dropout masks do not depend on
who else is racing). Data-parallel runs (``accelerate launch``) split each
global batch into equal shards, so the global batch is the same as on one
process.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import platform
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .errors import HyperCloneError
from .growth import VARIANTS
from .race_config import KINDS, PRECISIONS, SCHEDULES, RaceConfig  # noqa: F401 - 1. the configuration
from .results import RUN_FILE, RaceResult, RunLog, fsync_dir, read_events, supersede, write_json_atomic

CHECKPOINT_DIR = "checkpoints"


def lr_at(step: int, total: int, cfg: RaceConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then the schedule down to ``min_lr_ratio`` at ``total``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    if cfg.schedule == "linear":
        decay = 1.0 - progress
    else:
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay)


def fairness_statement(cfg: RaceConfig, num_processes: int) -> str:
    """What every contestant shares, in words (stored with the result)."""
    budgets = {cfg.budget(n) for n in cfg.contestants}
    budget = (f"{cfg.steps} steps each" if len(budgets) == 1 else
              "steps " + ", ".join(f"{n} {cfg.budget(n)}" for n in cfg.contestants)
              + " (the shorter runs see a prefix of the same batch sequence)")
    sched = ("constant after warm-up" if cfg.schedule == "constant" else
             f"{cfg.schedule} decay to {cfg.min_lr_ratio} x peak over each contestant's own budget")
    return (
        f"All contestants: identical training batches in identical order ({cfg.batch_size} x {cfg.seq_len} "
        f"tokens per step, batch of step s fixed by (seed {cfg.seed}, s)"
        + (f", split into {num_processes} equal data-parallel shards" if num_processes > 1 else "")
        + f"); {budget}; AdamW(lr {cfg.lr:g}, betas {tuple(cfg.betas)}, weight decay {cfg.weight_decay:g} on "
        f"matrices); {cfg.warmup} warm-up steps, {sched}; gradient clipping at {cfg.grad_clip:g}; precision "
        f"{cfg.precision}; evaluation every {cfg.eval_every} steps on the same {cfg.eval_windows} validation "
        f"windows; each contestant its own RNG stream from seed {cfg.seed}."
    )


# --------------------------------------------------------------------------- #
# 2. Contestants
# --------------------------------------------------------------------------- #
@dataclass
class Contestant:
    """One model in the race with its optimizer and its place in the data stream."""

    name: str
    kind: str  # "clone", "random" or "source"
    raw: torch.nn.Module  # the transformers model
    model: torch.nn.Module  # what trains: ``raw`` as prepared by accelerate (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    budget: int
    params: int
    flop_params: int
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None
    step: int = 0
    seconds: float = 0.0
    loss_sum: float = 0.0  # training loss summed since the last evaluation (this process's shard)
    loss_count: int = 0
    data_sha1: str = ""  # sha1 chain over every global batch trained on, in order
    status: str = "running"  # running | finished | diverged | stopped
    message: str = ""
    last_checkpoint: int = 0  # step of the newest checkpoint (step 0 needs none: it is rebuilt)


def flop_parameters(model: torch.nn.Module) -> int:
    """Parameters that cost 6 FLOPs per token in training: all but input-embedding lookups.

    Token and position tables are looked up, not multiplied; a head tied to
    the token table still multiplies, so it counts once.
    """
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(head.weight) in lookups:
        lookups.discard(id(head.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def make_optimizer(model: torch.nn.Module, cfg: RaceConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases or norm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def build_model(kind: str, source: torch.nn.Module, cfg: RaceConfig) -> torch.nn.Module:
    """The starting point of one contestant, in float32 on the source's device."""
    from transformers import AutoModelForCausalLM

    from .clone import clone, make_plan

    if kind == "source":
        model = copy.deepcopy(source)  # never train the caller's model in place
    elif kind == "random":
        wide_config = make_plan(source.config, cfg.factor, cfg.ffn_factor).wide_config()
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(wide_config)  # transformers' default initialisation
    else:
        model = clone(source, cfg.factor, cfg.ffn_factor, variant=kind, snr_db=cfg.snr_db, seed=cfg.seed)
    if cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    return model.float()


# --------------------------------------------------------------------------- #
# 3. The training loop
# --------------------------------------------------------------------------- #
def loss_on(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (in float32 whatever the compute precision)."""
    logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


class _Race:
    """Shared state of one race: settings, accelerator, data, log and stop signal."""

    def __init__(self, cfg, accelerator, corpus, windows, log, callback, stop_event):
        self.cfg, self.accelerator, self.corpus, self.windows = cfg, accelerator, corpus, windows
        self.log, self.callback, self.stop_event = log, callback, stop_event
        self.stopping = False
        self.current = ""  # the contestant being trained or evaluated (for error messages)
        self.records: list[dict] = []
        self.events: list[dict] = []

    # -- data ---------------------------------------------------------------- #
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, bytes]:
        """This process's rows of the global batch of ``step`` (on device), and the batch's bytes."""
        cfg, acc = self.cfg, self.accelerator
        x, y = self.corpus.get_batch("train", cfg.batch_size, cfg.seq_len, step=step, seed=cfg.seed)
        shard = cfg.batch_size // acc.num_processes
        rows = slice(acc.process_index * shard, (acc.process_index + 1) * shard)
        return x[rows].to(acc.device), y[rows].to(acc.device), x.numpy().tobytes()

    # -- agreement between processes ------------------------------------------ #
    def check(self, bad: bool = False) -> tuple[bool, bool]:
        """(any process saw a bad loss, stop requested anywhere): the same answer on every process."""
        stop = self.stop_event is not None and self.stop_event.is_set()
        if self.accelerator.num_processes > 1:
            flags = torch.tensor([float(bad), float(stop)], device=self.accelerator.device)
            flags = self.accelerator.reduce(flags, "max")
            bad, stop = bool(flags[0]), bool(flags[1])
        return bad, stop

    # -- output -------------------------------------------------------------- #
    def emit(self, event: dict) -> None:
        """Write an event to the run log (fsynced) and hand it to the callback, on the main process."""
        if event["event"] == "metrics":
            self.records.append(event)
        else:
            self.events.append(event)
        if self.accelerator.is_main_process:
            if self.log is not None:
                self.log.write(event)
            if self.callback is not None:
                self.callback(dict(event))


@contextmanager
def own_rng(c: Contestant) -> Iterator[None]:
    """Run with the contestant's own RNG state (dropout), leaving the global one as it was."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state() if c.cuda_rng is not None else None
    torch.set_rng_state(c.rng)
    if c.cuda_rng is not None:
        torch.cuda.set_rng_state(c.cuda_rng)
    try:
        yield
    finally:
        c.rng = torch.get_rng_state()
        torch.set_rng_state(cpu)
        if cuda is not None:
            c.cuda_rng = torch.cuda.get_rng_state()
            torch.cuda.set_rng_state(cuda)


def train_interval(c: Contestant, r: _Race) -> None:
    """Train ``c`` up to its next evaluation step (or its budget), one AdamW step at a time."""
    cfg, acc = r.cfg, r.accelerator
    end = min(c.budget, (c.step // cfg.eval_every + 1) * cfg.eval_every)
    c.model.train()
    t0 = time.perf_counter()
    with own_rng(c):
        while c.step < end:
            lr = lr_at(c.step, c.budget, cfg)
            for group in c.optimizer.param_groups:
                group["lr"] = lr
            x, y, batch_bytes = r.batch(c.step)

            loss = loss_on(c.model, x, y)
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(c.model.parameters(), cfg.grad_clip or float("inf"))

            loss_value = loss.item()
            bad = not (math.isfinite(loss_value) and math.isfinite(float(grad_norm)))
            bad, stop = r.check(bad)
            if bad or stop:
                c.optimizer.zero_grad(set_to_none=True)  # the weights stay those of the last good step
                if bad:
                    c.status = "diverged"
                    c.message = (f"stopped at step {c.step}: training loss became {loss_value} (lr {lr:.3g}); "
                                 f"weights kept from step {c.step}, the other contestants continue")
                else:
                    r.stopping = True
                break
            c.optimizer.step()
            c.optimizer.zero_grad(set_to_none=True)

            c.step += 1
            c.loss_sum += loss_value
            c.loss_count += 1
            c.data_sha1 = hashlib.sha1(c.data_sha1.encode() + batch_bytes).hexdigest()
    if acc.device.type == "cuda":
        torch.cuda.synchronize(acc.device)
    c.seconds += time.perf_counter() - t0


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, accelerator) -> tuple[float, float]:
    """Mean validation loss (nats/token) and next-token accuracy over the fixed windows.

    Each process scores every ``num_processes``-th window; the sums are added
    across processes, so the figures are those of the whole set.
    """
    was_training = model.training
    model.eval()
    mine = windows[accelerator.process_index :: accelerator.num_processes]
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, correct, tokens
    with accelerator.autocast():
        for chunk in mine.split(batch_size):
            chunk = chunk.to(accelerator.device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            logits = model(input_ids=x, use_cache=False).logits.float()
            sums[0] += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").double()
            sums[1] += (logits.argmax(-1) == y).sum()
            sums[2] += y.numel()
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums, "sum")
    model.train(was_training)
    loss, correct, count = sums.tolist()
    return loss / count, correct / count


def record(c: Contestant, r: _Race) -> None:
    """Evaluate ``c`` and emit its metrics record."""
    from .symmetry import symmetry

    cfg, acc = r.cfg, r.accelerator
    t0 = time.perf_counter()
    val_loss, val_acc = evaluate(c.raw, r.windows, cfg.batch_size, acc)
    train_loss = None
    if c.loss_count:
        sums = torch.tensor([c.loss_sum, float(c.loss_count)], dtype=torch.float64, device=acc.device)
        if acc.num_processes > 1:
            sums = acc.reduce(sums, "sum")
        train_loss = float(sums[0] / sums[1])
    c.loss_sum, c.loss_count = 0.0, 0
    sym = symmetry(c.raw, cfg.factor, cfg.ffn_factor) if c.kind == "clone" else None
    c.seconds += time.perf_counter() - t0
    tokens = c.step * cfg.batch_size * cfg.seq_len
    r.emit({
        "event": "metrics",
        "contestant": c.name,
        "step": c.step,
        "tokens": tokens,
        "flops": 6.0 * c.flop_params * tokens,
        "lr": lr_at(c.step - 1, c.budget, cfg) if c.step else None,  # of the last step taken
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "symmetry": sym,
        "seconds": round(c.seconds, 3),
        "time": round(time.time(), 3),
        "data_sha1": c.data_sha1,
    })


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def checkpoint_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{name}.pt"


def save_checkpoint(c: Contestant, r: _Race, run_dir: Path) -> None:
    """Everything needed to continue ``c`` exactly: weights, AdamW state, step, RNG, accumulators.

    The data position is the step itself (batches depend only on it). Written
    to a temporary file and renamed, so a kill leaves the previous checkpoint.
    """
    c.last_checkpoint = c.step
    if not r.accelerator.is_main_process:
        return
    state = {
        "model": c.raw.state_dict(),
        "optimizer": c.optimizer.state_dict(),
        "step": c.step,
        "seconds": c.seconds,
        "loss_sum": c.loss_sum,
        "loss_count": c.loss_count,
        "data_sha1": c.data_sha1,
        "rng": c.rng,
        "cuda_rng": c.cuda_rng,
        "status": c.status,
        "message": c.message,
    }
    path = checkpoint_path(run_dir, c.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_checkpoint(c: Contestant, run_dir: Path, device: torch.device) -> bool:
    """Restore ``c`` from its checkpoint; False when it has none (it then starts over)."""
    path = checkpoint_path(run_dir, c.name)
    if not path.exists():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: say which one
        raise HyperCloneError(f"cannot read checkpoint {path} ({type(e).__name__}); delete it to restart "
                              f"{c.name} from step 0") from None
    c.raw.load_state_dict(state["model"])
    c.optimizer.load_state_dict(state["optimizer"])
    for key in ("step", "seconds", "loss_sum", "loss_count", "data_sha1", "status", "message"):
        setattr(c, key, state[key])
    c.rng = state["rng"]
    c.cuda_rng = state["cuda_rng"] if device.type == "cuda" else None
    if c.status == "stopped":
        c.status, c.message = "running", ""
    c.last_checkpoint = c.step
    return True


# --------------------------------------------------------------------------- #
# 4. The race
# --------------------------------------------------------------------------- #
def _accelerator(device: str | torch.device | None, precision: str | None):
    """An ``Accelerator`` for the device and precision asked for (bf16 on GPUs by default)."""
    from accelerate import Accelerator

    device = None if device is None else torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in os.environ
            and "WORLD_SIZE" not in os.environ):
        # accelerate's --cpu launcher runs ONE process unless mpirun is configured: say so, not race alone.
        raise HyperCloneError("`accelerate launch --cpu --num_processes N` started a single process (accelerate "
                              "needs mpirun for several CPU processes); use `accelerate launch --multi_gpu "
                              "--num_processes N -m hyperclone.cli race --device cpu ...` or torchrun")
    has_gpu = torch.cuda.is_available()
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    cpu = (device is not None and device.type == "cpu") or not (has_gpu or has_mps) or (world > 1 and not has_gpu)
    if device is not None and device.type not in ("cpu", "cuda", "mps"):
        raise HyperCloneError(f"unsupported device {str(device)!r}; use cpu, cuda or mps")
    if device is not None and device.type == "cuda" and not has_gpu:
        raise HyperCloneError("device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    if precision is None:
        precision = "bf16" if (not cpu and has_gpu and torch.cuda.is_bf16_supported()) else "fp32"
    if world == 1:
        # accelerate keeps its settings process-wide and refuses to change them; a long-lived process
        # (the dashboard, a notebook) racing first in fp32 and then in bf16 needs a fresh start.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    acc = Accelerator(cpu=cpu, mixed_precision="bf16" if precision == "bf16" else "no")
    if world > 1 and acc.num_processes != world:
        raise HyperCloneError(f"launched as {world} processes but accelerate formed a group of "
                              f"{acc.num_processes}; start with `accelerate launch` or torchrun")
    return acc, precision


def _hardware(acc) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(acc.device),
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
    }
    if acc.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(acc.device)
    return info


def _versions() -> dict:
    import accelerate
    import numpy
    import transformers

    from . import __version__

    return {"hyperclone": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "numpy": numpy.__version__}


def _weights_sha1(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve_source(source, tokenizer, cfg_source_tokens, trust_remote_code: bool = False):
    """(model, tokenizer, display name, source training tokens or None, where that figure came from)."""
    from .sources import BUILTIN_NAMES, load_source, read_card

    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        model, loaded_tok = load_source(name, device="cpu", trust_remote_code=trust_remote_code)
        tokenizer = tokenizer if tokenizer is not None else loaded_tok
        tokens, origin = cfg_source_tokens, "given" if cfg_source_tokens is not None else "unknown"
        if tokens is None and name in BUILTIN_NAMES:
            card = read_card(name)
            tokens = card.get("training", {}).get("tokens_seen")
            origin = f"model card of {name}" if tokens is not None else "unknown"
        return model, tokenizer, name, tokens, origin
    if not isinstance(source, torch.nn.Module) or not hasattr(source, "config"):
        raise HyperCloneError(f"source must be a model name or a transformers model, got {type(source).__name__}")
    origin = "given" if cfg_source_tokens is not None else "unknown"
    return source, tokenizer, f"<{type(source).__name__}>", cfg_source_tokens, origin


def _check_fits(model: torch.nn.Module, cfg: RaceConfig, corpus) -> None:
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.seq_len > limit:
        raise HyperCloneError(f"seq_len {cfg.seq_len} is longer than the model's context of {limit} tokens; "
                              f"use seq_len <= {limit}")
    vocab = model.get_input_embeddings().num_embeddings
    if corpus.vocab_size > vocab:
        raise HyperCloneError(f"the tokenizer has {corpus.vocab_size} tokens but the model only {vocab}; "
                              "pass the source model's own tokenizer")


def _oom_error(what: str, cfg: RaceConfig, device) -> HyperCloneError:
    if cfg.batch_size > 1:
        hint = f"try batch_size={cfg.batch_size // 2} (--batch-size {cfg.batch_size // 2})"
    else:
        hint = f"try seq_len={max(1, cfg.seq_len // 2)} (--seq-len {max(1, cfg.seq_len // 2)}) or a smaller factor"
    return HyperCloneError(f"out of memory on {device} while {what} with batches of {cfg.batch_size} x "
                           f"{cfg.seq_len} tokens; {hint}")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def race(
    source: Any,
    factor: int = 2,
    ffn_factor: int | None = None,
    contestants: tuple[str, ...] | list[str] = ("noisy_symmetric", "random"),
    data: Any = "builtin",
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 1e-3,
    warmup: int = 30,
    schedule: str = "cosine",
    eval_every: int = 25,
    seed: int = 0,
    device: str | torch.device | None = None,
    precision: str | None = None,
    run_dir: str | os.PathLike | None = None,
    callback: Callable[[dict], None] | None = None,
    stop_event: threading.Event | None = None,
    *,
    tokenizer: Any = None,
    steps_for: dict[str, int] | None = None,
    eval_windows: int = 32,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    grad_clip: float = 1.0,
    snr_db: float = 10.0,
    attn_implementation: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    source_train_tokens: int | None = None,
    trust_remote_code: bool = False,
) -> RaceResult:
    """Race HyperCloned models against random init (and the source) on identical data.

    ``source``: a built-in name, checkpoint directory or hub id (resolved with
    ``load_source``), or a transformers model with its ``tokenizer``.
    ``contestants``: clone variants (``symmetric``, ``diagonal``,
    ``noisy_symmetric``, ``noisy_diagonal``), ``random`` (the same wide
    config, transformers' default init) and ``source`` (the small model,
    trained on). ``data``: a ``load_corpus`` spec or a ``Corpus``.
    ``steps_for`` gives some contestants another budget (e.g. a longer random
    run, so that speed-up (a) can be measured). Every ``eval_every`` steps each
    contestant is evaluated and a record goes to ``callback`` and to
    ``run_dir/metrics.jsonl``; ``stop_event`` stops cleanly between steps
    (with checkpoints when ``checkpoint_every`` is set); ``resume=True``
    continues the run in ``run_dir`` from its checkpoints to the same final
    state as an unbroken run. A source checkpoint with its own Python code is
    refused unless ``trust_remote_code``.
    """
    from .data import Corpus, load_corpus

    cfg = RaceConfig(
        factor=factor, ffn_factor=ffn_factor, contestants=tuple(contestants),
        data=data.spec if isinstance(data, Corpus) else str(data), steps=steps, steps_for=dict(steps_for or {}),
        batch_size=batch_size, seq_len=seq_len, lr=float(lr), min_lr_ratio=min_lr_ratio, warmup=warmup,
        schedule=schedule, weight_decay=weight_decay, betas=tuple(betas), grad_clip=grad_clip,
        eval_every=eval_every, eval_windows=eval_windows, seed=seed, snr_db=float(snr_db),
        precision=precision or "fp32", attn_implementation=attn_implementation,
        checkpoint_every=checkpoint_every, source_train_tokens=source_train_tokens,
    )
    cfg.validate()
    if resume and run_dir is None:
        raise HyperCloneError("resume needs the run_dir of the run to continue")
    acc, cfg.precision = _accelerator(device, precision)
    if cfg.batch_size % acc.num_processes:
        raise HyperCloneError(f"batch_size {cfg.batch_size} does not split evenly over {acc.num_processes} "
                              f"processes; use a multiple of {acc.num_processes}")
    run_path = _resolve_run_dir(run_dir, acc)
    stored = _check_run_dir(run_path, resume)

    model, tokenizer, cfg.source, cfg.source_train_tokens, tokens_origin = _resolve_source(
        source, tokenizer, source_train_tokens, trust_remote_code)
    if not isinstance(source, (str, os.PathLike)):
        cfg.source_sha1 = _weights_sha1(model)
    if isinstance(data, Corpus):
        corpus = data
    else:
        if tokenizer is None:
            raise HyperCloneError("pass tokenizer= (the source's tokenizer) or a loaded Corpus as data")
        with acc.main_process_first():
            corpus = load_corpus(cfg.data, tokenizer, cfg.seq_len)
    _check_fits(model, cfg, corpus)
    if stored is not None:
        _check_same_settings(stored["config"], cfg)
    windows = corpus.validation_windows(cfg.eval_windows, cfg.seq_len)

    # Each contestant is built next to the source (the caller's model is never changed), then placed.
    field_: list[Contestant] = []
    for name in cfg.contestants:
        raw = build_model(name, model, cfg).to(acc.device)
        kind = "clone" if name in VARIANTS else name
        optimizer = make_optimizer(raw, cfg)
        prepared = acc.prepare_model(raw)
        gen = torch.Generator().manual_seed(cfg.seed)
        cuda_rng = None
        if acc.device.type == "cuda":
            cuda_rng = torch.cuda.get_rng_state()
        field_.append(Contestant(
            name=name, kind=kind, raw=raw, model=prepared, optimizer=optimizer, budget=cfg.budget(name),
            params=sum(p.numel() for p in raw.parameters()), flop_params=flop_parameters(raw),
            rng=gen.get_state(), cuda_rng=cuda_rng,
        ))

    run_info = {
        "config": cfg.to_dict(),
        "fairness": fairness_statement(cfg, acc.num_processes),
        "contestants": {c.name: {"kind": c.kind, "params": c.params, "flop_params": c.flop_params,
                                 "steps": c.budget} for c in field_},
        "source": {"name": cfg.source, "params": sum(p.numel() for p in model.parameters()),
                   "flop_params": flop_parameters(model), "train_tokens": cfg.source_train_tokens,
                   "train_tokens_from": tokens_origin},
        "corpus": {"spec": corpus.spec, "train_tokens": corpus.num_tokens("train"),
                   "validation_tokens": corpus.num_tokens("validation"),
                   "eval_tokens": int(windows.shape[0] * cfg.seq_len)},
        "versions": _versions(),
        "hardware": _hardware(acc),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flops_note": "estimated training FLOPs = 6 x N x tokens, N = parameters except input-embedding lookups",
    }
    kept: list[dict] = []
    warnings: list[str] = []
    if stored is not None:
        run_info["started"] = stored.get("started", run_info["started"])
        resumed_at = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": run_info["hardware"]}
        run_info["resumes"] = stored.get("resumes", []) + [resumed_at]
        kept, warnings = read_events(run_path)
    if run_path is not None and acc.is_main_process:
        write_json_atomic(run_path / RUN_FILE, run_info)
    log = RunLog(run_path) if run_path is not None and acc.is_main_process else None
    r = _Race(cfg, acc, corpus, windows, log, callback, stop_event)

    try:
        if stored is not None:
            from_steps = {}
            for c in field_:
                if not load_checkpoint(c, run_path, acc.device):
                    warnings.append(f"{c.name}: no checkpoint, restarted from step 0")
                from_steps[c.name] = c.step
            kept = supersede(kept, from_steps)
            for e in kept:  # replay what is still valid, so live views start complete
                (r.records if e["event"] == "metrics" else r.events).append(e)
                if callback is not None and acc.is_main_process:
                    callback(dict(e))
            r.emit({"event": "resumed", "from_steps": from_steps, "time": round(time.time(), 3)})
        _run(r, field_, run_path, kept)
    except Exception as e:
        if _is_oom(e):
            err = _oom_error(f"training {r.current}", cfg, acc.device)
            r.emit({"event": "error", "message": str(err), "time": round(time.time(), 3)})
            raise err from None
        raise
    finally:
        if log is not None:
            log.close()

    run_info_result = {k: v for k, v in run_info.items() if k != "config"}
    result = RaceResult(config=cfg.to_dict(), info=run_info_result, records=r.records, events=r.events,
                        run_dir=run_path, warnings=warnings)
    result.models = {c.name: c.raw for c in field_}
    return result


def _run(r: _Race, field_: list[Contestant], run_path: Path | None, kept: list[dict]) -> None:
    """Step 0 evaluations, then round-robin intervals until everyone is done or a stop is asked."""
    cfg = r.cfg
    have_start = {(e["contestant"], e["step"]) for e in kept if e["event"] == "metrics"}
    for c in field_:
        if c.step == 0 and (c.name, 0) not in have_start:
            r.current = c.name
            record(c, r)

    while not r.stopping:
        running = [c for c in field_ if c.status == "running"]
        if not running:
            break
        for c in running:
            if r.stopping or r.check()[1]:
                r.stopping = True
                break
            r.current = c.name
            train_interval(c, r)
            if c.status == "diverged":
                r.emit({"event": "diverged", "contestant": c.name, "step": c.step, "message": c.message})
                _maybe_checkpoint(c, r, run_path, force=True)
                continue
            if r.stopping:
                break
            record(c, r)
            if c.step >= c.budget:
                c.status, c.message = "finished", f"trained {c.budget} steps"
                r.emit({"event": "finished", "contestant": c.name, "step": c.step, "message": c.message})
            _maybe_checkpoint(c, r, run_path, force=c.status != "running")

    if r.stopping:
        for c in field_:
            if c.status == "running":
                c.status, c.message = "stopped", f"stop requested at step {c.step}"
                r.emit({"event": "stopped", "contestant": c.name, "step": c.step, "message": c.message})
                _maybe_checkpoint(c, r, run_path, force=True)


def _maybe_checkpoint(c: Contestant, r: _Race, run_path: Path | None, force: bool = False) -> None:
    """Checkpoint ``c`` when it crossed a multiple of ``checkpoint_every`` (or ``force``: it stopped)."""
    every = r.cfg.checkpoint_every
    if run_path is None or not every or c.step == c.last_checkpoint:
        return
    if force or c.step // every > c.last_checkpoint // every:
        save_checkpoint(c, r, run_path)


def _resolve_run_dir(run_dir, acc) -> Path | None:
    """``run_dir`` as a Path; ``"auto"`` becomes ``runs/race-<time>``, agreed on by all processes."""
    if run_dir is None:
        return None
    if str(run_dir) != "auto":
        return Path(run_dir)
    name = [f"runs/race-{time.strftime('%Y%m%d-%H%M%S')}"]
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(name)
    return Path(name[0])


def _check_run_dir(run_path: Path | None, resume: bool) -> dict | None:
    """The stored run.json when resuming; refuse to mix a new run into an old directory."""
    import json

    from .results import METRICS_FILE

    if run_path is None:
        return None
    run_file = run_path / RUN_FILE
    if resume:
        if not run_file.exists():
            raise HyperCloneError(f"nothing to resume in {run_path} (no {RUN_FILE}); start it without resume")
        return json.loads(run_file.read_text())
    if run_file.exists() or (run_path / METRICS_FILE).exists():
        raise HyperCloneError(f"{run_path} already holds a run; continue it with resume=True (--resume) "
                              "or choose another run directory")
    return None


RESUME_MAY_DIFFER = {"checkpoint_every"}


def _check_same_settings(stored: dict, cfg: RaceConfig) -> None:
    """Resuming with other settings would not continue the same run: refuse, naming the first difference."""
    new = cfg.to_dict()
    for key, value in new.items():
        if key in RESUME_MAY_DIFFER:
            continue
        old = stored.get(key)
        if old != value:
            raise HyperCloneError(f"cannot resume: {key} was {old!r} in the stopped run but is {value!r} now; "
                                  "resume with the same settings")
