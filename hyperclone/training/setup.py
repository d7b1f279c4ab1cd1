"""What a race needs before its first step: an accelerator, the source, and what run.json says about them.

Each helper does one check or one lookup and fails with a one-line
``HyperCloneError`` saying what to change; ``train.race`` calls them in order.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import torch

from hyperclone.training.contestants import Contestant, flop_parameters
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import FROM_SOURCE, RaceConfig, fairness_statement
from hyperclone.version import __version__


# --------------------------------------------------------------------------- #
# The accelerator
# --------------------------------------------------------------------------- #
def make_accelerator(device: str | torch.device | None, precision: str | None):
    """An ``Accelerator`` for the device and precision asked for (bf16 on GPUs by default)."""
    from accelerate import Accelerator

    device = None if device is None else torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in os.environ
            and "WORLD_SIZE" not in os.environ):
        # accelerate's --cpu launcher runs ONE process unless mpirun is configured: say so, not race alone.
        raise HyperCloneError("`accelerate launch --cpu --num_processes N` started a single process (accelerate "
                              "needs mpirun for several CPU processes); use `accelerate launch --multi_gpu "
                              "--num_processes N -m hyperclone.cli.main race --device cpu ...` or torchrun")
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


def hardware_info(acc) -> dict:
    """The machine a race runs on (stored in run.json)."""
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


def library_versions() -> dict:
    """The versions of everything that shapes a race's numbers (stored in run.json)."""
    import accelerate
    import numpy
    import transformers

    return {"hyperclone": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "numpy": numpy.__version__}


def weights_sha1(model: torch.nn.Module) -> str:
    """A fingerprint of a model's weights (names and bytes), for a source passed as a model."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_source(source, tokenizer, cfg_source_tokens, trust_remote_code: bool = False):
    """(model, tokenizer, display name, source training tokens or None, where that figure came from)."""
    from hyperclone.io.sources import BUILTIN_NAMES, load_source, read_card

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


def check_corpus_fits_model(model: torch.nn.Module, cfg: RaceConfig, corpus) -> None:
    """The sequence length fits the model's context and the tokenizer its vocabulary."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and cfg.seq_len > limit:
        raise HyperCloneError(f"seq_len {cfg.seq_len} is longer than the model's context of {limit} tokens; "
                              f"use seq_len <= {limit}")
    vocab = model.get_input_embeddings().num_embeddings
    if corpus.vocab_size > vocab:
        raise HyperCloneError(f"the tokenizer has {corpus.vocab_size} tokens but the model only {vocab}; "
                              "pass the source model's own tokenizer")


def oom_error(what: str, cfg: RaceConfig, device) -> HyperCloneError:
    """Out of memory, in one line, with a smaller batch (or sequence) to try."""
    if cfg.batch_size > 1:
        hint = f"try batch_size={cfg.batch_size // 2} (--batch-size {cfg.batch_size // 2})"
    else:
        hint = f"try seq_len={max(1, cfg.seq_len // 2)} (--seq-len {max(1, cfg.seq_len // 2)}) or a smaller factor"
    return HyperCloneError(f"out of memory on {device} while {what} with batches of {cfg.batch_size} x "
                           f"{cfg.seq_len} tokens; {hint}")


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def resolve_run_dir(run_dir, acc) -> Path | None:
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




# --------------------------------------------------------------------------- #
# Source and corpus
# --------------------------------------------------------------------------- #
RACE_HINT = "race fewer or smaller contestants (factor, depth), or use a smaller batch or sequence"


def check_race_fits(cfg: RaceConfig, source: torch.nn.Module, device, processes: int = 1) -> None:
    """Refuse, before any contestant is built, a race that does not fit in the memory free on ``device``: every
    contestant's weights, gradients and AdamW state (counted from configs, so an absurd depth costs nothing),
    the source, and the largest activations of one contestant's step (they train one at a time)."""
    from hyperclone.core.growth import Growth
    from hyperclone.core.resources import TRAINING_BYTES_PER_PARAMETER, activation_bytes, check_fits_in_memory, wide_parameters

    tokens = -(-cfg.batch_size // max(1, processes)) * cfg.seq_len  # this process's share of a batch
    growths = {}
    for name in cfg.contestants:
        spec = cfg.spec(name)  # staged: the wide model it grows into
        growths[name] = (Growth(1) if spec.kind == "source" else cfg.growth(spec.grows_into) if spec.grows_into
                         else cfg.growth_of(spec))
    params = {name: wide_parameters(source.config, g) for name, g in growths.items()}
    largest = max(params, key=params.get)
    required = (sum(p.numel() * p.element_size() for p in source.parameters())
                + TRAINING_BYTES_PER_PARAMETER * sum(params.values())
                + max(activation_bytes(source.config, g, tokens) for g in growths.values()))
    check_fits_in_memory(required, device, f"the race ({len(params)} contestants, the largest {largest} with "
                         f"{params[largest] / 1e6:,.1f}M parameters, batches of {cfg.batch_size} x {cfg.seq_len})",
                         hint=RACE_HINT)


def check_batch_splits(cfg: RaceConfig, acc) -> None:
    """The global batch splits into equal shards, one per process."""
    if cfg.batch_size % acc.num_processes:
        raise HyperCloneError(f"batch_size {cfg.batch_size} does not split evenly over {acc.num_processes} "
                              f"processes; use a multiple of {acc.num_processes}")


def load_race_source(cfg: RaceConfig, source, tokenizer,
                     trust_remote_code: bool = False) -> tuple[torch.nn.Module, object, str]:
    """(source model, tokenizer, where its training tokens came from); fills in ``cfg.source`` and friends."""
    model, tokenizer, cfg.source, cfg.source_train_tokens, tokens_origin = resolve_source(
        source, tokenizer, cfg.source_train_tokens, trust_remote_code)
    if any(cfg.spec(n).recipe == "auto" for n in cfg.contestants):
        from hyperclone.core.resources import wide_parameters

        cfg.resolve_auto(wide_parameters(model.config, cfg.growth()))
    if not isinstance(source, (str, os.PathLike)):
        cfg.source_sha1 = weights_sha1(model)
    elif any(cfg.spec(n).recipe in FROM_SOURCE and cfg.spec(n).lr is None for n in cfg.contestants):
        cfg.source_final_lr = final_lr_of(source_card(str(source)))
    for name in cfg.contestants:
        cfg.schedule_for(name)  # a recipe that cannot work says so before anything is built
    return model, tokenizer, tokens_origin


def source_card(source: str) -> dict:
    """The model card of a built-in source (or a checkpoint directory holding a ``card.json``); {} when none."""
    import json

    from hyperclone.io.sources import BUILTIN_NAMES, read_card

    if source in BUILTIN_NAMES:
        return read_card(source)
    path = Path(source) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def final_lr_of(card: dict) -> float | None:
    """The learning rate a source's own training ended at, from its card; None when the card does not say.

    Read from ``training.final_lr``, or worked out from the ``optimizer`` and
    ``schedule`` lines the build writes ("AdamW(lr=0.003, ...)", "... cosine to 0.1 x peak").
    """
    import re

    training = card.get("training", {})
    if isinstance(training.get("final_lr"), (int, float)):
        return float(training["final_lr"])
    peak = re.search(r"\blr=([0-9.eE+-]+)", str(training.get("optimizer", "")))
    shape = str(training.get("schedule", ""))
    decay = re.search(r"\b(?:cosine|linear) to ([0-9.eE+-]+) x peak", shape)
    try:
        if peak and decay:
            return float(f"{float(peak.group(1)) * float(decay.group(1)):.12g}")
        if peak and re.search(r"\bconstant\b", shape):
            return float(peak.group(1))
    except ValueError:
        return None
    return None


def load_race_corpus(cfg: RaceConfig, tokenizer, acc):
    """The corpus ``cfg.data`` names, tokenised once (by the first process, then read from its cache)."""
    from hyperclone.training.data import load_corpus

    if tokenizer is None:
        raise HyperCloneError("pass tokenizer= (the source's tokenizer) or a loaded Corpus as data")
    with acc.main_process_first():
        return load_corpus(cfg.data, tokenizer, cfg.seq_len)


# --------------------------------------------------------------------------- #
# What run.json records
# --------------------------------------------------------------------------- #
FLOPS_NOTE = "estimated training FLOPs = 6 x N x tokens, N = parameters except input-embedding lookups"


def describe_run(cfg: RaceConfig, acc, contestants: list[Contestant], source: torch.nn.Module, tokens_origin: str,
                 corpus, windows) -> dict:
    """Everything ``run.json`` holds: settings, fairness, sizes, corpus, versions, hardware, start time."""
    return {
        "config": cfg.to_dict(),
        "fairness": fairness_statement(cfg, acc.num_processes),
        "contestants": contestant_sizes(contestants),
        "source": source_summary(cfg, source, tokens_origin),
        "corpus": {"spec": corpus.spec, "train_tokens": corpus.num_tokens("train"),
                   "validation_tokens": corpus.num_tokens("validation"),
                   "eval_tokens": int(windows.shape[0] * cfg.seq_len)},
        "versions": library_versions(),
        "hardware": hardware_info(acc),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "flops_note": FLOPS_NOTE,
    }


def contestant_sizes(contestants: list[Contestant]) -> dict[str, dict]:
    """What ``run.json`` says about each contestant (``kind`` there is ``Contestant.origin``).

    A staged contestant's ``params`` and ``flop_params`` are the wide model's; ``grow_at``, the variant it
    grows into, ``params_before`` and ``flop_params_before`` (the source's) say where and from what it grew.
    """
    return {c.name: {"kind": c.origin, "params": c.params, "flop_params": c.flop_params, "steps": c.budget,
                     "recipe": {**c.schedule.to_dict(), "lr_divided_weights": len(c.divided),
                                "lr_divisors": sorted(set(c.divided.values()))}, **staged_sizes(c)}
            for c in contestants}


def staged_sizes(c: Contestant) -> dict:
    """run.json's growth entries of a staged contestant ({} for the others)."""
    if c.grow_at is None:
        return {}
    return {"params": c.after_growth[0], "flop_params": c.after_growth[1], "grow_at": c.grow_at,
            "grows_into": c.growth.variant, "params_before": c.before_growth[0],
            "flop_params_before": c.before_growth[1],
            "optimizer_after_growth": "a fresh AdamW for the wide model, same recipe; the lr schedule goes on "
                                      "from the step count"}


def source_summary(cfg: RaceConfig, source: torch.nn.Module, tokens_origin: str) -> dict:
    """What ``run.json`` says about the source: name, sizes, its own training tokens and their origin."""
    return {"name": cfg.source, "params": sum(p.numel() for p in source.parameters()),
            "flop_params": flop_parameters(source), "train_tokens": cfg.source_train_tokens,
            "train_tokens_from": tokens_origin}
