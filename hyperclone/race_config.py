"""The settings of a race as plain values, and their one-line checks (no torch).

``RaceConfig`` is what ``run.json`` stores; the ``hyperclone race`` parser reads
its defaults and the choices below before importing torch, so ``--help`` and a
bad argument answer at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import HyperCloneError
from .growth import VARIANTS

KINDS = (*VARIANTS, "random", "source")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")


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

    def budget(self, name: str) -> int:
        """How many steps contestant ``name`` trains."""
        return int(self.steps_for.get(name, self.steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["contestants"], d["betas"] = list(self.contestants), list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RaceConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["contestants"] = tuple(d.get("contestants", ()))
        d["betas"] = tuple(d.get("betas", (0.9, 0.95)))
        return cls(**d)

    def validate(self) -> None:
        """One-line errors for settings that cannot work, before anything is loaded."""
        names = list(self.contestants)
        if not names:
            raise HyperCloneError(f"no contestants; choose from {', '.join(KINDS)}")
        unknown = [n for n in names if n not in KINDS]
        if unknown:
            raise HyperCloneError(f"unknown contestant {unknown[0]!r}; choose from {', '.join(KINDS)}")
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
