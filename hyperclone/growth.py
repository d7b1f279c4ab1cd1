"""The growth settings (``Growth``) and their checks, in plain Python (torch only inside ``check_noise_fits``).

The ``hyperclone`` CLI builds its ``Growth`` before importing torch and
transformers, so ``--help`` and a bad argument answer at once; ``grow.py``
holds the tensor rules that use the settings, ``clone.make_plan`` fits them
to a source model.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable

from .errors import HyperCloneError, quoted

VARIANTS: tuple[str, ...] = ("symmetric", "diagonal", "noisy_symmetric", "noisy_diagonal")

VARIANT_HELP: dict[str, str] = {
    "symmetric": "every block is W/n: the paper's best choice, but copies get identical gradients",
    "diagonal": "W on the block diagonal, zeros elsewhere: each copy reads only its own input copy",
    "noisy_symmetric": "W/n plus noise that cancels within each row of blocks: exact, and breaks symmetry",
    "noisy_diagonal": "diagonal plus row-cancelling noise: exact, and breaks symmetry",
}

TIE_MODES: tuple[str, ...] = ("untie", "keep")
# Sizes checked by arithmetic before any work: a clone has at most MAX_LAYERS layers (the deepest published
# models have about 128), and a noise level is within SNR_DB_LIMIT decibels (10**(snr_db/10) is then a float).
MAX_LAYERS = 1024
SNR_DB_LIMIT = 3000.0


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
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or abs(value) > SNR_DB_LIMIT):
        raise HyperCloneError(f"snr_db must be a finite number of decibels, got {quoted(value)}; use one from "
                              f"{-SNR_DB_LIMIT:g} to {SNR_DB_LIMIT:g}")
    return float(value)


def lowest_snr_db(largest: float) -> float:
    """The lowest noise level (dB) a dtype whose largest finite value is ``largest`` can hold: noise at most
    sqrt(largest) times the weights, so the noisy weights, and the mean square the noise is scaled by, stay finite."""
    return -10 * math.log10(largest)


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


def check_depth(depth: object, every: object, stack: object) -> None:
    """Raise a one-line error for depth settings that do not fit together."""
    check_factor(depth, "depth")
    check_factor(every, "depth_every")
    if depth > MAX_LAYERS:
        raise HyperCloneError(f"depth must be at most {MAX_LAYERS} (a clone has at most {MAX_LAYERS} layers), "
                              f"got {depth}")
    if not isinstance(stack, bool):
        raise HyperCloneError(f"stack must be True or False, got {stack!r}")
    if depth == 1 and (stack or every != 1):
        raise HyperCloneError(f"{'stack' if stack else 'depth_every'} needs depth >= 2 (the layer multiplier), "
                              "got depth=1")
    if stack and every != 1:
        raise HyperCloneError("stack repeats the whole layer stack; it takes no depth_every")


@dataclass(frozen=True)
class Growth:
    """How to grow a model: checked once, here, then passed whole (hashable, so it can key a cache).

    ``factor`` multiplies the hidden size and the (KV) heads, ``ffn_factor``
    the FFN size (None: the same as ``factor``; read back it is always an int).
    ``variant`` splits each weight into blocks (``VARIANTS``); the noisy ones
    add noise at ``snr_db`` decibels, seeded per tensor from ``seed``.
    ``tie``: a tied embedding is untied (exact) or kept (approximate).

    Depth: ``depth`` > 1 inserts ``depth - 1`` new blocks after every
    ``depth_every``-th source layer (default 1: after every layer, so the layer
    count is multiplied by ``depth``). A new block is a copy of the (grown)
    source layer it follows, norms included, except that its residual writers
    (attention output and MLP down projections, weights and biases: the rules
    marked ``writes_residual``) are zero, so it starts as the identity and the
    function is preserved exactly. ``stack=True`` instead repeats the whole
    layer stack ``depth`` times (G_stack): NOT function-preserving.
    """

    factor: int = 2
    ffn_factor: int | None = None
    variant: str = "symmetric"
    snr_db: float = 10.0
    seed: int = 0
    tie: str = "untie"
    depth: int = 1
    depth_every: int = 1
    stack: bool = False

    def __post_init__(self) -> None:
        factor = check_factor(self.factor, "factor")
        set_field = object.__setattr__  # a frozen dataclass may set its own fields only here
        set_field(self, "ffn_factor", check_factor(factor if self.ffn_factor is None else self.ffn_factor, "ffn_factor"))
        check_variant(self.variant)
        check_tie(self.tie)
        set_field(self, "snr_db", check_snr_db(self.snr_db))
        set_field(self, "seed", check_seed(self.seed))
        check_depth(self.depth, self.depth_every, self.stack)

    @property
    def function_preserving(self) -> bool:
        """False for a stacked model (its logits are not expected to match the source's)."""
        return not self.stack

    def layer_count(self, n_layers: int) -> int:
        """The clone's number of layers, by arithmetic (``layer_groups`` lists them one by one)."""
        if self.stack:
            return n_layers * self.depth
        return n_layers + (self.depth - 1) * (n_layers // self.depth_every)

    def check_layer_count(self, n_layers: int) -> None:
        """Refuse, in one line and before any list is built, a clone of more than ``MAX_LAYERS`` layers."""
        wide = self.layer_count(n_layers)
        if wide > MAX_LAYERS:
            raise HyperCloneError(f"depth {self.depth} would make a clone of {wide:,} layers from {n_layers:,}, "
                                  f"more than the {MAX_LAYERS} allowed; choose a smaller depth")

    def check_noise_fits(self, dtypes: Iterable) -> None:
        """Refuse, in one line, a noisy variant whose noise at ``snr_db`` would overflow one of ``dtypes``
        (torch float dtypes; others are ignored): decided from each dtype's largest value, before any work."""
        if not self.variant.startswith("noisy"):
            return
        import torch

        for dtype in dtypes:
            lowest = lowest_snr_db(torch.finfo(dtype).max) if dtype.is_floating_point else -math.inf
            if self.snr_db < lowest:
                raise HyperCloneError(
                    f"snr_db {self.snr_db:g} dB makes noise 10^{-self.snr_db / 20:.0f} times the weights, which "
                    f"overflows {str(dtype).removeprefix('torch.')}; use snr_db >= {math.ceil(lowest)}")

    def layer_groups(self, n_layers: int) -> list[list[int]]:
        """For each source layer, the wide layers grown from it (its own copy first, then its new blocks).

        Inserted blocks start as the identity, so the hidden state after source layer i equals the one
        after the last wide layer of its group. Stacked: layer i is at i, i + n, i + 2n, ...
        """
        self.check_layer_count(n_layers)
        if self.stack:
            return [[i + r * n_layers for r in range(self.depth)] for i in range(n_layers)]
        groups, j = [], 0
        for i in range(n_layers):
            extra = self.depth - 1 if (i + 1) % self.depth_every == 0 else 0
            groups.append(list(range(j, j + 1 + extra)))
            j += 1 + extra
        return groups

    def layer_sources(self, n_layers: int) -> list[tuple[int, bool]]:
        """(source layer, whether it is a new block starting as the identity) for each wide layer, in order."""
        wide: dict[int, tuple[int, bool]] = {}
        for i, group in enumerate(self.layer_groups(n_layers)):
            for k, j in enumerate(group):
                wide[j] = (i, k > 0 and not self.stack)
        return [wide[j] for j in range(len(wide))]

    def layer_map(self, n_layers: int) -> list[int] | None:
        """The wide layer whose output equals source layer i's, for each i; None for a stacked model."""
        return None if self.stack else [group[-1] for group in self.layer_groups(n_layers)]

    def describe_depth(self) -> str:
        """A few words on the depth growth, for the CLI and the records ("" without any)."""
        if self.depth == 1:
            return ""
        if self.stack:
            return f"layers stacked x{self.depth} (NOT function-preserving by design)"
        where = "every layer" if self.depth_every == 1 else f"every {self.depth_every}th layer"
        return f"{self.depth - 1} identity block(s) after {where} (function-preserving)"


def require_growth(value: object) -> Growth:
    """``value`` if it is a ``Growth``; otherwise a one-line error showing how to make one."""
    if not isinstance(value, Growth):
        raise HyperCloneError(f"the growth settings must be a Growth, e.g. Growth(factor=2), not "
                              f"{type(value).__name__} {value!r}")
    return value
