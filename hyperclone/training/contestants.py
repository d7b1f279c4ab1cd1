"""The contestants of a race: how each starts, its optimizer, its own RNG stream, and its checkpoints.

A ``Contestant`` is one model in the race with everything needed to continue
it exactly; ``train.py`` runs the loop over them. A staged contestant starts
as a copy of the source and, once it has trained ``grow_at`` steps, is cloned
(``grow_staged``) and trains on as the wide model with a fresh AdamW. The checkpoint files
themselves (names, atomic writes) belong to ``runs.py``.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import VARIANTS, Growth
from hyperclone.core.pretrained import MODEL_BUILDING
from hyperclone.training.config import ContestantSpec, RaceConfig, Schedule
from hyperclone.training.speedups import training_flops
from hyperclone.training.runs import read_checkpoint, write_checkpoint


@dataclass
class Contestant:
    """One model in the race with its optimizer and its place in the data stream."""

    name: str  # its canonical spec text, unique in the race (e.g. "noisy_symmetric@lr=3e-4")
    origin: str  # where its weights start: "clone", "random", "source" or "staged" (the source, grown later)
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
    schedule: Schedule | None = None  # its learning rate over its budget (from its recipe)
    divided: dict[str, int] = field(default_factory=dict)  # clone-aware: weights trained at lr / divisor
    grow_at: int | None = None  # staged: the step after which it is cloned into the wide model
    growth: Growth | None = None  # staged: how it grows
    grown: bool = False
    before_growth: tuple[int, int] | None = None  # staged: (params, flop params) of the small model
    after_growth: tuple[int, int] | None = None  # staged: (params, flop params) of the wide model

    def flops(self, tokens_per_step: int) -> float:
        """Estimated training FLOPs so far, 6·N·tokens (a staged contestant: each phase with its own N)."""
        grown = None if self.grow_at is None else (self.grow_at * tokens_per_step, self.before_growth[1])
        wide = self.flop_params if self.grow_at is None else self.after_growth[1]
        return training_flops(self.step * tokens_per_step, wide, grown)

    def interval_end(self, eval_every: int) -> int:
        """The step its next training interval ends at: the next evaluation, its budget, or its growth."""
        end = min(self.budget, (self.step // eval_every + 1) * eval_every)
        return min(end, self.grow_at) if self.grow_at is not None and not self.grown else end

    @property
    def due_to_grow(self) -> bool:
        return self.grow_at is not None and not self.grown and self.step >= self.grow_at


def origin_of(name: str) -> str:
    """"clone" for a clone variant (with any recipe), else its kind ("random", "source" or "staged")."""
    kind = ContestantSpec.parse(name).kind
    return "clone" if kind in VARIANTS else kind


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


def make_optimizer(model: torch.nn.Module, cfg: Any, divided: dict[str, int] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases or norm gains).

    ``cfg``: anything with ``lr``, ``betas`` and ``weight_decay`` (a ``RaceConfig``, an asset recipe).
    ``divided``: parameter name -> k for weights trained at lr/k (``divided_weights``); they get
    groups of their own, after the two usual ones, with ``lr_divisor`` k.
    """
    divided = divided or {}
    named = [(n, p) for n, p in model.named_parameters() if n not in divided]
    groups = [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]
    for k in sorted(set(divided.values())):
        for decay in (True, False):
            params = [p for n, p in model.named_parameters() if divided.get(n) == k and (p.dim() >= 2) == decay]
            if params:
                groups.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
                               "lr_divisor": k})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def divided_weights(model: torch.nn.Module, source_config, growth) -> dict[str, int]:
    """The clone's weights whose blocks were divided by k when it grew, with k (the clone-aware lr rule).

    Read from the family spec through ``ClonePlan.factors_of``: a matrix whose input axis grows by k > 1
    is split into blocks W/k in the symmetric variants, and, in every variant, when its output does not
    grow (the LM head: [W/k, ..., W/k]). Diagonal grids (blocks W and 0), stacked matrices (only the
    output grows), embeddings and vectors are not divided.
    """
    from hyperclone.core.clone import make_plan

    plan = make_plan(source_config, growth)
    divided = {}
    for name, p in model.named_parameters():
        if p.dim() != 2:
            continue
        factors = plan.factors_of(plan.spec.rule_for(name))
        k = factors[0][1]
        if k > 1 and (growth.variant in ("symmetric", "noisy_symmetric") or all(a == 1 for a, _ in factors)):
            divided[name] = k
    return divided


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the step's learning rate: ``lr`` on every group, ``lr / k`` on clone-aware groups."""
    for group in optimizer.param_groups:
        group["lr"] = lr / group["lr_divisor"] if "lr_divisor" in group else lr


def starting_model(name: str, source: torch.nn.Module, cfg: RaceConfig) -> torch.nn.Module:
    """The starting point of contestant ``name`` (a kind or a spec's text), in float32 on the source's device."""
    from transformers import AutoModelForCausalLM

    from hyperclone.core.clone import clone, make_plan

    spec = ContestantSpec.parse(name)
    if spec.kind in ("source", "staged"):
        model = copy.deepcopy(source)  # never train the caller's model in place
    elif spec.kind == "random":
        wide_config = make_plan(source.config, cfg.growth_of(spec)).wide_config()
        with MODEL_BUILDING:  # no other thread's model building may skip or consume this initialisation
            torch.manual_seed(cfg.seed)
            model = AutoModelForCausalLM.from_config(wide_config)  # transformers' default initialisation
    else:
        model = clone(source, growth=cfg.growth_of(spec))
    if cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    return model.float()


def build_contestants(cfg: RaceConfig, source: torch.nn.Module, acc) -> list[Contestant]:
    """Every contestant, built next to the source (the caller's model is never changed), then placed."""
    contestants = []
    for name in cfg.contestants:
        spec, schedule = cfg.spec(name), cfg.schedule_for(name)
        raw = starting_model(name, source, cfg).to(acc.device)
        growth = cfg.growth(spec.grows_into) if spec.kind == "staged" else None
        # a staged one divides its lr once grown; the source has nothing divided (gentle is its final lr)
        clone_aware = schedule.clone_aware and growth is None and spec.kind != "source"
        divided = divided_weights(raw, source.config, cfg.growth_of(spec)) if clone_aware else {}
        optimizer = make_optimizer(raw, cfg, divided)
        prepared = acc.prepare_model(raw)
        cuda_rng = torch.cuda.get_rng_state() if acc.device.type == "cuda" else None
        sizes = (sum(p.numel() for p in raw.parameters()), flop_parameters(raw))
        contestants.append(Contestant(
            name=name, origin=origin_of(name), raw=raw, model=prepared, optimizer=optimizer,
            budget=cfg.budget(name), params=sizes[0], flop_params=sizes[1],
            rng=torch.Generator().manual_seed(cfg.seed).get_state(), cuda_rng=cuda_rng, schedule=schedule,
            divided=divided, grow_at=spec.grow_at, growth=growth, before_growth=sizes if growth else None,
            after_growth=wide_sizes(source.config, growth) if growth else None,
        ))
    return contestants


def wide_sizes(source_config, growth: Growth) -> tuple[int, int]:
    """(parameters, flop parameters) of the model ``growth`` makes, counted on the meta device (no memory)."""
    from hyperclone.core.pretrained import meta_model
    from hyperclone.core.clone import make_plan

    model = meta_model(make_plan(source_config, growth).wide_config())
    return sum(p.numel() for p in model.parameters()), flop_parameters(model)


def grow_staged(c: Contestant, cfg: RaceConfig, acc) -> None:
    """Clone a staged contestant's small model into the wide one, with a fresh AdamW for it (same recipe).

    The clone is the race's growth (``cfg.growth``, variant from the spec); the learning-rate schedule
    goes on from the step count, so only the optimizer's moments start over.
    """
    from hyperclone.core.clone import clone

    small = c.raw
    wide = clone(small, growth=c.growth)
    if cfg.attn_implementation:
        wide.set_attn_implementation(cfg.attn_implementation)
    wide = wide.float().to(acc.device).train(small.training)
    sizes = (sum(p.numel() for p in wide.parameters()), flop_parameters(wide))
    if sizes != c.after_growth:
        raise HyperCloneError(f"{c.name}: the grown model has {sizes[0]} parameters, not the {c.after_growth[0]} "
                              "its wide config gives; this family's growth is inconsistent")
    c.divided = divided_weights(wide, small.config, c.growth) if c.schedule.clone_aware else {}
    c.raw, c.optimizer, c.model = wide, make_optimizer(wide, cfg, c.divided), acc.prepare_model(wide)
    c.params, c.flop_params, c.grown = sizes[0], sizes[1], True


@contextlib.contextmanager
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



# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
RESTORED = ("step", "seconds", "loss_sum", "loss_count", "data_sha1", "status", "message")


def save_checkpoint(c: Contestant, run_dir: Path, is_main_process: bool = True, run_id: str | None = None) -> None:
    """Everything needed to continue ``c`` exactly: weights, AdamW state, step, RNG, accumulators (and ``run_id``,
    the run's, so a resume uses only its own checkpoints).

    The data position is the step itself (batches depend only on it). Only
    the main process writes; every process notes the step.
    """
    c.last_checkpoint = c.step
    if not is_main_process:
        return
    saved = {"model": c.raw.state_dict(), "optimizer": c.optimizer.state_dict(), "rng": c.rng,
             "cuda_rng": c.cuda_rng, "grown": c.grown, **{key: getattr(c, key) for key in RESTORED}}
    write_checkpoint(run_dir, c.name, saved, run_id)


def load_checkpoint(c: Contestant, run_dir: Path, cfg: RaceConfig, acc, run_id: str | None = None) -> bool:
    """Restore ``c`` from its checkpoint; False when it has none (it then starts over). A checkpoint of
    another run (not ``run_id``) is refused in one line.

    A staged contestant saved after its growth is grown first, so the wide weights and their
    AdamW state load into a model and optimizer of their shape.
    """
    saved = read_checkpoint(run_dir, c.name, run_id)
    if saved is None:
        return False
    if saved.get("grown", False) and not c.grown:
        grow_staged(c, cfg, acc)
    c.raw.load_state_dict(saved["model"])
    c.optimizer.load_state_dict(saved["optimizer"])
    for key in RESTORED:
        setattr(c, key, saved[key])
    c.rng = saved["rng"]
    c.cuda_rng = saved["cuda_rng"] if acc.device.type == "cuda" else None
    if c.status == "stopped":
        c.status, c.message = "running", ""
    c.last_checkpoint = c.step
    return True
