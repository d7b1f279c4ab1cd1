"""The growth settings and their checks, in plain Python (no torch).

The ``hyperclone`` CLI validates its arguments with these before importing
torch and transformers, so ``--help`` and a bad argument answer at once;
``grow.py`` holds the tensor rules that use them.
"""

from __future__ import annotations

from .errors import HyperCloneError

VARIANTS: tuple[str, ...] = ("symmetric", "diagonal", "noisy_symmetric", "noisy_diagonal")

VARIANT_HELP: dict[str, str] = {
    "symmetric": "every block is W/n: the paper's best choice, but copies get identical gradients",
    "diagonal": "W on the block diagonal, zeros elsewhere: each copy reads only its own input copy",
    "noisy_symmetric": "W/n plus noise that cancels within each row of blocks: exact, and breaks symmetry",
    "noisy_diagonal": "diagonal plus row-cancelling noise: exact, and breaks symmetry",
}


def check_variant(variant: str) -> None:
    """Raise a one-line ValueError for an unknown variant."""
    if variant not in VARIANTS:
        raise HyperCloneError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def check_factor(value: object, name: str = "factor") -> int:
    """Return ``value`` as a growth factor, or raise a ValueError saying why it is not one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HyperCloneError(f"{name} must be an integer >= 1, got {value!r}")
    return value
