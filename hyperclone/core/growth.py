"""The growth settings (``Growth``) and their checks, in plain Python (torch only inside ``check_noise_fits``).

The ``hyperclone`` CLI builds its ``Growth`` before importing torch and
transformers, so ``--help`` and a bad argument answer at once; ``grow.py``
holds the tensor rules that use the settings, ``clone.make_plan`` fits them
to a source model.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from hyperclone.core.errors import HyperCloneError, quoted

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


# --------------------------------------------------------------------------- #
# Settings fields: each setting of Growth and RaceConfig declared once, read by every front end
# --------------------------------------------------------------------------- #
def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING, **names: Any) -> Any:
    """A field of a settings dataclass (``Growth``, ``RaceConfig``): its default, and in its metadata its help
    text and how each front end names it, so that the CLI, the dashboard and links derive them from here.

    ``names``, all optional: ``flag`` (its CLI flag; default ``--`` and the name with dashes), ``choices``,
    ``parse`` (text to value, for a type the CLI cannot read from the annotation), ``metavar``, ``no_flag``
    (why the setting has no CLI flag), ``url`` (its name in a dashboard link), ``url_optional`` (left out of a
    link when it says what the link means anyway), ``widget`` (the key of its dashboard control).
    """
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, **names})


def setting_names(cls: type, kind: str) -> dict[str, Any]:
    """``{field: its metadata[kind]}`` for the fields of settings dataclass ``cls`` that name one
    (``kind``: ``"url"``, ``"widget"``, ``"flag"``...), in field order."""
    return {f.name: f.metadata[kind] for f in dataclasses.fields(cls) if f.metadata.get(kind) is not None}


def setting_meta(cls: type, name: str) -> typing.Mapping[str, Any]:
    """What field ``name`` of settings dataclass ``cls`` declares (help, flag, url, widget...)."""
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for a ``factory`` default)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def default_words(value: Any) -> str:
    """`` (default X)`` as the CLI's help writes a default; "" for none (None, False, empty)."""
    if value is None or value is False or value in ((), {}, ""):
        return ""
    text = (f"{value:g}" if isinstance(value, float) else ",".join(map(str, value)) if isinstance(value, tuple)
            else str(value))
    return f" (default {text})"


def _plain_type(name: str, hint: Any) -> Callable[[str], Any]:
    """int, float or str from a field's annotation (Optional allowed); other types need a ``parse``."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    if len(kinds) == 1 and kinds[0] in (int, float, str):
        return kinds[0]
    raise TypeError(f"setting {name}: the CLI cannot read {hint} from text; give its field a parse=")


def _text_reader(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, with its one-line ``HyperCloneError`` shown by argparse as it is."""
    def read(text: str) -> Any:
        try:
            return parse(text)
        except HyperCloneError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    read.__name__ = getattr(parse, "__name__", "value")  # argparse's "invalid int value" names the type
    return read


def flag_options(cls: type, given_only: bool = False) -> list[tuple[str, dict]]:
    """``(flag, argparse keyword arguments)`` for every field of settings dataclass ``cls`` but those with a
    ``no_flag`` reason: dest the field's name, type from its annotation (or its ``parse``), help from its
    metadata with its default. ``given_only``: a flag not given stays out of the parsed namespace
    (``argparse.SUPPRESS``), so a caller can tell what was given (a resumed race keeps its stored settings)."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("no_flag"):
            continue
        default = field_default(f)
        kw: dict[str, Any] = {"dest": f.name, "help": meta.get("help", "") + default_words(default),
                              "default": argparse.SUPPRESS if given_only else default}
        if hints[f.name] is bool:
            kw["action"] = "store_true"
        else:
            kw["type"] = _text_reader(meta.get("parse") or _plain_type(f.name, hints[f.name]))
            kw.update({k: meta[k] for k in ("choices", "metavar") if k in meta})
        options.append((meta.get("flag", "--" + f.name.replace("_", "-")), kw))
    return options


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

    factor: int = setting(2, help="hidden size and heads multiplier", url="factor", widget="factor")
    ffn_factor: int | None = setting(None, help="FFN multiplier (default: the factor)", url="ffn_factor",
                                     url_optional=True, widget="ffn")
    variant: str = setting("symmetric", help="how each weight is split into blocks", choices=VARIANTS,
                           url="variant", widget="variant")
    snr_db: float = setting(10.0, help="noise level of the noisy variants, in dB (lower: more noise)", url="snr_db",
                            widget="snr")
    seed: int = setting(0, help="seed of the noise (per tensor)", url="seed", widget="seed")
    tie: str = setting("untie", help="tied embeddings: untie (exact) or keep", choices=TIE_MODES)
    depth: int = setting(1, help="layer multiplier: new blocks that start as the identity (exact)", url="depth",
                         url_optional=True, widget="depth")
    depth_every: int = setting(1, help="insert depth-1 new blocks after every k-th layer only (1: after each "
                                       "layer)")
    stack: bool = setting(False, help="with depth: repeat the whole layer stack instead (G_stack); NOT "
                                      "function-preserving", url="stack", url_optional=True, widget="stack")

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
