"""The settings of a race as plain values: defaults, validation, the schedule, and reading them back from a run.

``RaceConfig`` is exactly what ``run.json`` stores under ``config``;
``RaceConfig.from_run(run_dir)`` gives the settings a run was started with,
for the CLI's ``--resume`` and for Python alike.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from .errors import HyperCloneError
from .growth import VARIANTS, Growth
from .runs import read_run_info

CONTESTANT_CHOICES = (*VARIANTS, "random", "source")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")
RESUME_MAY_DIFFER = {"checkpoint_every"}  # settings a resumed run may change
MEASURED = ("source_sha1",)  # stored with the settings, but measured by the race, not chosen


@dataclass
class RaceConfig:
    """All settings of a race as plain values; ``run.json`` stores exactly this."""

    source: str = "tiny-gpt2-stdlib"
    factor: int = 2
    ffn_factor: int | None = None
    contestants: tuple[str, ...] = ("noisy_symmetric", "random")
    data: str = "builtin"
    steps: int = 300
    steps_for: dict[str, int] = field(default_factory=dict)  # per-contestant budgets overriding ``steps``
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    schedule: str = "cosine"
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_windows: int = 32
    seed: int = 0
    snr_db: float = 10.0
    precision: str = "fp32"
    attn_implementation: str | None = None
    checkpoint_every: int | None = None
    source_train_tokens: int | None = None  # the source's own training (from its card when built in)
    source_sha1: str | None = None  # weights fingerprint when the source was passed as a model

    def growth(self, variant: str = "symmetric") -> Growth:
        """The ``Growth`` that makes this race's clone of ``variant`` (any variant gives the same wide config)."""
        return Growth(self.factor, self.ffn_factor, variant, self.snr_db, self.seed)

    def budget(self, name: str) -> int:
        """How many steps contestant ``name`` trains."""
        return int(self.steps_for.get(name, self.steps))

    def to_dict(self) -> dict:
        """The settings as JSON values (what ``run.json`` stores under ``config``)."""
        settings = dataclasses.asdict(self)
        settings["contestants"], settings["betas"] = list(self.contestants), list(self.betas)
        return settings

    @classmethod
    def from_dict(cls, settings: dict) -> "RaceConfig":
        """The inverse of ``to_dict``; keys it does not know (from another version) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        settings = {k: v for k, v in settings.items() if k in known}
        settings["contestants"] = tuple(settings.get("contestants", ()))
        settings["betas"] = tuple(settings.get("betas", (0.9, 0.95)))
        return cls(**settings)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike) -> "RaceConfig":
        """The settings the run in ``run_dir`` was started with, as ``race()`` takes them.

        What the race measured rather than was told is left out: the source's
        weights fingerprint, and its training tokens unless they were given
        (a built-in source's are read again from its model card).
        ``race(cfg.source, run_dir=run_dir, resume=True, **cfg.race_arguments())``
        continues the run.
        """
        run_info = read_run_info(run_dir)
        cfg = cls.from_dict(run_info["config"])
        cfg.source_sha1 = None
        if run_info.get("source", {}).get("train_tokens_from") != "given":
            cfg.source_train_tokens = None
        return cfg

    def race_arguments(self) -> dict:
        """``race()`` keyword arguments for these settings (all but ``source`` and the measured ones)."""
        return {k: v for k, v in vars(self).items() if k not in ("source", *MEASURED)}

    def check_same_settings_as(self, stored: dict) -> None:
        """Resuming with other settings would not continue the same run: refuse, naming the first difference."""
        for key, value in self.to_dict().items():
            if key in RESUME_MAY_DIFFER:
                continue
            old = stored.get(key)
            if old != value:
                raise HyperCloneError(f"cannot resume: {key} was {old!r} in the stopped run but is {value!r} "
                                      "now; resume with the same settings")

    def validate(self) -> None:
        """One-line errors for settings that cannot work, before anything is loaded."""
        names = list(self.contestants)
        if not names:
            raise HyperCloneError(f"no contestants; choose from {', '.join(CONTESTANT_CHOICES)}")
        unknown = [n for n in names if n not in CONTESTANT_CHOICES]
        if unknown:
            raise HyperCloneError(f"unknown contestant {unknown[0]!r}; choose from {', '.join(CONTESTANT_CHOICES)}")
        if len(set(names)) != len(names):
            raise HyperCloneError(f"contestant listed twice in {', '.join(names)}")
        extra = [n for n in self.steps_for if n not in names]
        if extra:
            raise HyperCloneError(f"steps_for names {extra[0]!r}, which is not racing ({', '.join(names)})")
        for key in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HyperCloneError(f"{key} must be a positive integer, got {value!r}")
        for name, value in self.steps_for.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HyperCloneError(f"steps for {name} must be a positive integer, got {value!r}")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every < 1):
            raise HyperCloneError(f"checkpoint_every must be a positive integer, got {self.checkpoint_every!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise HyperCloneError(f"lr must be a positive number, got {self.lr!r}")
        if self.warmup < 0:
            raise HyperCloneError(f"warmup must be >= 0 steps, got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise HyperCloneError(f"min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        if self.schedule not in SCHEDULES:
            raise HyperCloneError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.precision not in PRECISIONS:
            hint = ("fp16 needs a loss scaler, which racing models would share; use bf16"
                    if self.precision == "fp16" else f"choose from {', '.join(PRECISIONS)}")
            raise HyperCloneError(f"unsupported precision {self.precision!r}; {hint}")


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
