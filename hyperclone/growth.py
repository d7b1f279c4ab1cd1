"""The growth settings (``Growth``) and their checks, in plain Python (no torch).

The ``hyperclone`` CLI builds its ``Growth`` before importing torch and
transformers, so ``--help`` and a bad argument answer at once; ``grow.py``
holds the tensor rules that use the settings, ``clone.make_plan`` fits them
to a source model.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import HyperCloneError

VARIANTS: tuple[str, ...] = ("symmetric", "diagonal", "noisy_symmetric", "noisy_diagonal")

VARIANT_HELP: dict[str, str] = {
    "symmetric": "every block is W/n: the paper's best choice, but copies get identical gradients",
    "diagonal": "W on the block diagonal, zeros elsewhere: each copy reads only its own input copy",
    "noisy_symmetric": "W/n plus noise that cancels within each row of blocks: exact, and breaks symmetry",
    "noisy_diagonal": "diagonal plus row-cancelling noise: exact, and breaks symmetry",
}

TIE_MODES: tuple[str, ...] = ("untie", "keep")


def check_variant(variant: str) -> None:
    """Raise a one-line error for an unknown variant."""
    if variant not in VARIANTS:
        raise HyperCloneError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def check_factor(value: object, name: str = "factor") -> int:
    """Return ``value`` as a growth factor, or raise saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HyperCloneError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_snr_db(value: object) -> float:
    """Return ``value`` as a noise level in decibels, or raise saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HyperCloneError(f"snr_db must be a finite number of decibels, got {value!r}")
    return float(value)


def check_seed(value: object) -> int:
    """Return ``value`` as a seed, or raise saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HyperCloneError(f"seed must be an integer, got {value!r}")
    return int(value)


def check_tie(value: object) -> str:
    """Return ``value`` as a tied-embeddings mode, or raise naming the modes."""
    if value not in TIE_MODES:
        raise HyperCloneError(f"tie must be one of {', '.join(TIE_MODES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Growth:
    """How to grow a model: checked once, here, then passed whole (hashable, so it can key a cache).

    ``factor`` multiplies the hidden size and the (KV) heads, ``ffn_factor``
    the FFN size (None: the same as ``factor``; read back it is always an int).
    ``variant`` splits each weight into blocks (``VARIANTS``); the noisy ones
    add noise at ``snr_db`` decibels, seeded per tensor from ``seed``.
    ``tie``: a tied embedding is untied (exact) or kept (approximate).
    """

    factor: int = 2
    ffn_factor: int | None = None
    variant: str = "symmetric"
    snr_db: float = 10.0
    seed: int = 0
    tie: str = "untie"

    def __post_init__(self) -> None:
        factor = check_factor(self.factor, "factor")
        set_field = object.__setattr__  # a frozen dataclass may set its own fields only here
        set_field(self, "ffn_factor", check_factor(factor if self.ffn_factor is None else self.ffn_factor, "ffn_factor"))
        check_variant(self.variant)
        check_tie(self.tie)
        set_field(self, "snr_db", check_snr_db(self.snr_db))
        set_field(self, "seed", check_seed(self.seed))


def require_growth(value: object) -> Growth:
    """``value`` if it is a ``Growth``; otherwise a one-line error showing how to make one."""
    if not isinstance(value, Growth):
        raise HyperCloneError(f"the growth settings must be a Growth, e.g. Growth(factor=2), not "
                              f"{type(value).__name__} {value!r}")
    return value
