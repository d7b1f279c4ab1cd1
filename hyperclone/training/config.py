"""The settings of a race as plain values: defaults, validation, the schedule, and reading them back from a run.

``RaceConfig`` is exactly what ``run.json`` stores under ``config``;
``runs.run_config(run_dir)`` gives the settings a run was started with,
for the CLI's ``--resume`` and for Python alike.

Each contestant may train with its own recipe (``ContestantSpec``), written
``KIND[@RECIPE][@lr=X][@warmup=N][@schedule=S]``, e.g. ``noisy_symmetric@lr=3e-4``
or ``source@continue``; that text is also its unique name in the run log.
``staged@STEP[@VARIANT]...`` trains the source until STEP, then grows it
(staged training; default variant noisy_symmetric).
Torch-free, so the CLI checks a bad spec (one line) before loading anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field

from hyperclone.core.errors import HyperCloneError, quoted, shown
from hyperclone.core.growth import VARIANTS, Growth, setting

CONTESTANT_CHOICES = (*VARIANTS, "random", "source")  # a plain name is a whole contestant
KINDS = (*CONTESTANT_CHOICES, "staged")  # staged needs its step: staged@STEP
STAGED_VARIANT = "noisy_symmetric"  # the clone a staged contestant grows into unless its spec names another
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")
RESUME_MAY_DIFFER = {"checkpoint_every"}  # settings a resumed run may change
MEASURED = ("source_sha1", "source_final_lr", "auto_recipe")  # stored with the settings, measured by the race
RECIPES = ("paper", "continue", "clone-aware", "gentle", "auto")
MAX_TOKENS_PER_STEP = 2**15  # batch x sequence of a dashboard race step (a shared server); CLI/API: the memory check
# The default clone recipe follows the race's horizon (``resolve_auto``): ``gentle`` (benchmarks/recipe_sweep.py:
# keeps the head start of a short demo race) below AUTO_SWITCH tokens per wide parameter, the paper's recipe (every
# setting shared with random init) from there on. Why 5: at micro scale ``gentle`` was overtaken by random init at
# ~9-10 tokens per wide parameter while the paper's recipe passed ``gentle`` between 3.5 and 7 (PAPER-NOTES, the
# pilot of issue 24), and ``hyperclone reproduce`` measured the paper's recipe reaching random init's final loss sooner
# at 5, 20 and 50 ((b) 1.49x, 1.12x, 1.09x: the shipped report, assets/runs/paper-micro-gpt2).
ADOPTED_RECIPE = "auto"
AUTO_SWITCH = 5.0  # tokens per wide parameter where ``auto`` turns from gentle to the paper's recipe
FROM_SOURCE = ("continue", "gentle")  # recipes that start at the source's final lr (from its model card)
RECIPE_HELP = ("KIND[@RECIPE][@lr=X][@warmup=N][@schedule=S], e.g. noisy_symmetric@lr=3e-4 or source@continue "
               f"(recipes: {', '.join(RECIPES)}; default paper); staged@STEP[@VARIANT] grows the source at STEP, "
               "e.g. staged@200 or staged@200@symmetric@lr=3e-4; @depth=D grows the layers too (exact) and "
               "@depth=D@stack repeats the layer stack (not function-preserving), e.g. noisy_symmetric@depth=2")


def format_lr(value: float) -> str:
    """A learning rate as short text that reads back to the same float (3e-4, not 0.0003)."""
    mantissa, _, exponent = f"{value:.15e}".partition("e")
    short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    plain = f"{value:g}"
    for text in sorted((short, plain), key=len):
        if float(text) == value:
            return text
    return repr(value)


@dataclass(frozen=True)
class ContestantSpec:
    """One contestant and its recipe: what it starts from, and how its learning rate is chosen.

    ``kind``: a clone variant, ``random`` or ``source``. ``recipe``: ``paper``
    (the race's lr, warm-up and schedule, shared with every contestant),
    ``continue`` (start at the source's final lr from its model card, no
    warm-up), ``clone-aware`` (as paper, but weights whose blocks were divided
    by k when cloning train at lr/k) or ``gentle`` (the source's final lr, re-warmed
    over the race's warm-up, with clone-aware lr/k; the race's lr when no card
    states the final one). ``lr``, ``warmup``, ``schedule``
    override the recipe's choice (None: keep it). ``staged`` trains the source
    for ``grow_at`` steps, then clones it (the race's growth, clone ``variant``,
    default noisy_symmetric) and trains on as the wide model with a fresh AdamW.
    """

    kind: str
    recipe: str = "paper"
    lr: float | None = None
    warmup: int | None = None
    schedule: str | None = None
    grow_at: int | None = None
    variant: str | None = None
    depth: int | None = None  # a clone (or random init) also grown in depth: Growth(depth=...), exact
    stack: bool = False  # with depth: repeat the layer stack instead (G_stack), not function-preserving

    @property
    def name(self) -> str:
        """The canonical text of this spec: the contestant's unique name in run logs."""
        parts = [self.kind] + ([str(self.grow_at)] if self.grow_at is not None else [])
        parts += [self.variant] if self.variant not in (None, STAGED_VARIANT) else []
        parts += [self.recipe] if self.recipe != "paper" else []
        parts += [f"lr={format_lr(self.lr)}"] if self.lr is not None else []
        parts += [f"warmup={self.warmup}"] if self.warmup is not None else []
        parts += [f"schedule={self.schedule}"] if self.schedule is not None else []
        parts += [f"depth={self.depth}"] if self.depth is not None else []
        parts += ["stack"] if self.stack else []
        return "@".join(parts)

    @classmethod
    def parse(cls, text: "str | ContestantSpec") -> "ContestantSpec":
        """A spec from its text (or a spec, checked); one-line ``HyperCloneError`` for a bad one."""
        if isinstance(text, ContestantSpec):
            return text.checked()
        if not isinstance(text, str):
            raise HyperCloneError(f"a contestant is a name or a ContestantSpec, got {type(text).__name__}")
        kind, *options = [p.strip() for p in text.strip().split("@")]
        fields: dict = {}
        for option in options:
            key, sep, value = option.partition("=")
            bare = ("grow_at" if option.isdigit() else "variant" if option in VARIANTS else
                    "stack" if option == "stack" else "recipe")
            key, value = (key.strip(), value.strip()) if sep else (bare, option)
            if key not in ("recipe", "lr", "warmup", "schedule", "grow_at", "variant", "depth", "stack") \
                    or key in fields or not value:
                raise HyperCloneError(f"bad contestant {quoted(text)}: cannot read {quoted(option)}; write {RECIPE_HELP}")
            fields[key] = _option_value(text, key, value)
        if fields.get("variant") == STAGED_VARIANT:
            del fields["variant"]  # the default, written once: staged@200
        return cls(kind, **fields).checked()

    def checked(self) -> "ContestantSpec":
        """This spec, or a one-line error naming what cannot work."""
        where = f"contestant {shown(f'{self.kind}@{self.recipe}')}"
        if self.kind not in KINDS:
            raise HyperCloneError(f"unknown contestant {quoted(self.kind)}; choose from {', '.join(CONTESTANT_CHOICES)}, "
                                  "staged@STEP"
                                  + (f", with options {RECIPE_HELP}" if "@" in self.kind else ""))
        self.check_staged()
        self.check_depth()
        if self.recipe not in RECIPES:
            raise HyperCloneError(f"{where}: unknown recipe {quoted(self.recipe)}; choose from {', '.join(RECIPES)}")
        if self.recipe == "clone-aware" and self.kind in ("random", "source"):
            raise HyperCloneError(f"{where}: clone-aware scales the lr of weights a clone divided by n, and "
                                  f"{self.kind} has none; use it with a clone variant")
        if self.recipe in (*FROM_SOURCE, "auto") and self.kind == "random":
            raise HyperCloneError(f"{where}: random init has no training to continue; use paper or give an lr")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise HyperCloneError(f"{where}: lr must be a positive number, got {self.lr!r}")
        if self.warmup is not None and (isinstance(self.warmup, bool) or not isinstance(self.warmup, int)
                                        or self.warmup < 0):
            raise HyperCloneError(f"{where}: warmup must be a whole number of steps >= 0, got {self.warmup!r}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise HyperCloneError(f"{where}: unknown schedule {quoted(self.schedule)}; choose from {', '.join(SCHEDULES)}")
        return self

    def check_staged(self) -> None:
        """A growth step (>= 1) and clone variant belong to ``staged`` alone."""
        if self.kind != "staged":
            if self.grow_at is not None or self.variant is not None:
                raise HyperCloneError(f"contestant {shown(self.name)}: a growth step or variant belongs to staged only, "
                                      f"e.g. staged@200@{shown(self.variant or STAGED_VARIANT)}")
        elif (isinstance(self.grow_at, bool) or not isinstance(self.grow_at, int) or self.grow_at < 1):
            raise HyperCloneError(f"contestant {shown(self.name)}: staged needs the step to grow at, a whole "
                                  "number >= 1 (it trains the source until then), e.g. staged@200")
        elif self.variant is not None and self.variant not in VARIANTS:
            raise HyperCloneError(f"contestant staged: unknown variant {quoted(self.variant)}; choose from "
                                  f"{', '.join(VARIANTS)}")

    def check_depth(self) -> None:
        """Depth (>= 2) belongs to clones and random init; stack needs depth."""
        if self.depth is None and not self.stack:
            return
        if self.kind in ("source", "staged"):
            raise HyperCloneError(f"contestant {shown(self.name)}: depth belongs to clones and random init, not {self.kind}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 2:
            raise HyperCloneError(f"contestant {shown(self.name)}: depth must be a whole number >= 2 (the layers are "
                                  "multiplied by it), e.g. noisy_symmetric@depth=2" + ("; stack needs it too"
                                                                                       if self.stack else ""))
        if self.stack and self.kind == "random":
            raise HyperCloneError(f"contestant {shown(self.name)}: random init has no layers to stack; use random@depth=2")

    @property
    def grows_into(self) -> str | None:
        """The clone variant a staged contestant grows into (None for the others)."""
        return (self.variant or STAGED_VARIANT) if self.kind == "staged" else None


def _option_value(text: str, key: str, value: str):
    try:
        if key == "stack":
            return True
        return float(value) if key == "lr" else int(value) if key in ("warmup", "grow_at", "depth") else value
    except ValueError:
        raise HyperCloneError(f"bad contestant {quoted(text)}: {key} {quoted(value)} is not a number; write {RECIPE_HELP}") from None


def contestant_name(item: "str | ContestantSpec") -> str:
    """The canonical name of a contestant given as text or spec; text that does not parse is kept as it is
    (``RaceConfig.validate`` then says what is wrong with it)."""
    try:
        return ContestantSpec.parse(item).name
    except HyperCloneError:
        return item if isinstance(item, str) else repr(item)


@dataclass(frozen=True)
class Schedule:
    """One contestant's learning rate over its budget, and how it was chosen (``lr_at`` reads it)."""

    lr: float
    warmup: int
    schedule: str
    min_lr_ratio: float
    recipe: str = "paper"
    chosen: str = "paper recipe: shared"

    @property
    def clone_aware(self) -> bool:
        return self.recipe in ("clone-aware", "gentle")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_names(text: str) -> tuple[str, ...]:
    """``a,b,c`` as a tuple of names (the CLI's ``--contestants``)."""
    return tuple(filter(None, (p.strip() for p in text.split(","))))


def parse_steps_for(text: str) -> dict[str, int]:
    """``NAME=STEPS[,NAME=STEPS]`` as a dict (the CLI's ``--steps-for``); a one-line error for anything else."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")  # a name may hold "=" itself: random@lr=3e-3=1200
        if not sep or not value.strip().isdigit():
            raise HyperCloneError(f"expected NAME=STEPS[,NAME=STEPS], got {quoted(part)}")
        out[name.strip()] = int(value)
    return out


def parse_betas(text: str) -> tuple[float, float]:
    """``B1,B2`` as AdamW's betas (the CLI's ``--betas``); a one-line error for anything else."""
    try:
        b1, b2 = (float(p) for p in text.split(","))
    except ValueError:
        raise HyperCloneError(f"expected two numbers B1,B2, e.g. 0.9,0.95, got {quoted(text)}") from None
    return b1, b2


MEASURED_WHY = "measured by the race (stored in run.json), not chosen"


@dataclass
class RaceConfig:
    """All settings of a race as plain values; ``run.json`` stores exactly this.

    Each field is declared once, with its help text (``setting``): ``hyperclone race`` has one flag per field
    (``flag_options``), ``race(**overrides)`` takes each by name (``race_config``).
    """

    source: str = setting("tiny-gpt2-stdlib", help="built-in name, checkpoint directory or hub id")
    factor: int = setting(2, help="width multiplier")
    ffn_factor: int | None = setting(None, help="FFN multiplier (default: the factor)")
    contestants: tuple[str, ...] = setting(
        (f"noisy_symmetric@{ADOPTED_RECIPE}", "random"), parse=parse_names, metavar="NAME[,NAME...]",
        help=f"comma-separated, from {', '.join(CONTESTANT_CHOICES)}, each with an optional recipe: {RECIPE_HELP}; "
             "e.g. noisy_symmetric,noisy_symmetric@lr=3e-4,random@lr=3e-3")
    data: str = setting("builtin", help="builtin, a .txt/.jsonl file, a directory, or hf:NAME[:CONFIG]")
    steps: int = setting(300, help="training steps per contestant", widget="race_steps")
    steps_for: dict[str, int] = setting(factory=dict, parse=parse_steps_for, metavar="NAME=STEPS[,...]",
                                        help="other budgets for some contestants, e.g. random=1200 (to measure "
                                             "speed-up (a))")
    batch_size: int = setting(16, help="global batch, in sequences", widget="race_batch")
    seq_len: int = setting(128, help="tokens per sequence", widget="race_seq")
    lr: float = setting(3e-3, help="peak learning rate (random init's best of 1e-3, 3e-3, 1e-2 in the recipe "
                                   "sweep)", widget="race_lr")
    min_lr_ratio: float = setting(0.1, help="final lr / peak for decaying schedules")
    warmup: int = setting(30, help="linear warm-up steps")
    schedule: str = setting("cosine", choices=SCHEDULES, help="the learning rate after warm-up")
    weight_decay: float = setting(0.1, help="AdamW weight decay on matrices")
    betas: tuple[float, float] = setting((0.9, 0.95), parse=parse_betas, metavar="B1,B2", help="AdamW betas")
    grad_clip: float = setting(1.0, help="gradient norm clipping, 0 = off")
    eval_every: int = setting(25, help="steps between evaluations", widget="race_eval")
    eval_windows: int = setting(32, help="fixed validation windows")
    seed: int = setting(0, help="data order, random init and clone noise")
    snr_db: float = setting(10.0, help="noise of the noisy variants, in dB")
    precision: str | None = setting(None, choices=PRECISIONS, help="fp32, or bf16 (default: bf16 on GPUs that "
                                                                    "have it, else fp32)")
    attn_implementation: str | None = setting(None, flag="--attn", help="attention kernel, e.g. eager or sdpa "
                                                                        "(default: the model's)")
    checkpoint_every: int | None = setting(None, help="save resumable checkpoints every N steps")
    source_train_tokens: int | None = setting(None, help="tokens the source was trained on, for the FLOPs "
                                                         "comparison (built-in models: read from their card)")
    source_sha1: str | None = setting(None, no_flag=MEASURED_WHY, help="the source's weights fingerprint, when "
                                                                        "it was passed as a model")
    source_final_lr: float | None = setting(None, no_flag=MEASURED_WHY, help="the source's last lr (from its "
                                                                             "card), when a recipe continues it")
    auto_recipe: str | None = setting(None, no_flag=MEASURED_WHY, help="what the auto recipe chose, and why "
                                                                         "(the race's tokens per wide parameter)")

    def __post_init__(self) -> None:
        self.contestants = tuple(contestant_name(c) for c in self.contestants)
        self.steps_for = {contestant_name(k): v for k, v in dict(self.steps_for or {}).items()}
        self.betas = tuple(self.betas)
        self.data = os.fspath(self.data) if isinstance(self.data, os.PathLike) else self.data
        for key in ("lr", "snr_db"):  # a whole number given for a float setting is stored as the float
            value = getattr(self, key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, key, float(value))

    def growth(self, variant: str = "symmetric", depth: int | None = None, stack: bool = False) -> Growth:
        """The ``Growth`` that makes this race's clone of ``variant`` (any variant gives the same wide config),
        ``depth`` times as deep (stacked if ``stack``)."""
        return Growth(self.factor, self.ffn_factor, variant, self.snr_db, self.seed, depth=depth or 1, stack=stack)

    def growth_of(self, spec: ContestantSpec) -> Growth:
        """The ``Growth`` contestant ``spec`` starts from (its clone variant, or symmetric for random's shape)."""
        variant = spec.kind if spec.kind in VARIANTS else spec.grows_into or "symmetric"
        return self.growth(variant, spec.depth, spec.stack)

    def spec(self, name: str) -> ContestantSpec:
        """The recipe of contestant ``name`` (its canonical name, as in ``contestants``)."""
        return ContestantSpec.parse(name)

    def schedule_for(self, name: str) -> Schedule:
        """Contestant ``name``'s learning rate, warm-up and schedule, from its recipe and these settings."""
        spec = self.spec(name)
        given = [f"{k} {format_lr(v) if k == 'lr' else v}" for k, v in
                 (("lr", spec.lr), ("warmup", spec.warmup), ("schedule", spec.schedule)) if v is not None]
        lr, warmup = spec.lr if spec.lr is not None else self.lr, spec.warmup
        if spec.recipe == "continue":
            if spec.lr is None and self.source_final_lr is None:
                raise HyperCloneError(f"{name}: recipe continue needs the source's final learning rate, and "
                                      f"{self.source} has no model card stating it; give one, e.g. "
                                      f"{spec.kind}@lr=3e-4@warmup=0")
            lr, warmup = (lr if spec.lr is not None else self.source_final_lr), 0 if warmup is None else warmup
            head = "continue: " + ("lr given" if spec.lr is not None else "the source's final lr (model card)")
        elif spec.recipe == "gentle":
            lr = lr if spec.lr is not None else self.source_final_lr or self.lr
            head = "gentle: " + ("lr given" if spec.lr is not None else "the source's final lr (model card)"
                                 if self.source_final_lr else "the race's lr (no model card states the source's "
                                 "final lr)") + ", re-warmed" + ("" if spec.kind == "source" else
                                                               "; lr/k on weights divided by k")
        elif spec.recipe == "auto":
            raise HyperCloneError(f"{name}: the auto recipe is chosen when the race starts (resolve_auto); "
                                  "give gentle or paper to see its schedule now")
        elif spec.recipe == "clone-aware":
            head = "clone-aware: lr/k on weights divided by k when cloned"
        else:
            head = "given" if given else "paper recipe: shared"
        return Schedule(float(lr), self.warmup if warmup is None else warmup, spec.schedule or self.schedule,
                        self.min_lr_ratio, spec.recipe, head + (f" ({', '.join(given)})" if given else ""))

    def resolve_auto(self, wide_params: int) -> None:
        """Give each ``@auto`` contestant its recipe for this race's horizon (tokens per wide parameter):
        ``gentle`` below ``AUTO_SWITCH``, the paper's from there; ``auto_recipe`` says which and why."""
        autos = [n for n in self.contestants if self.spec(n).recipe == "auto"]
        if not autos:
            return
        per_param = self.steps * self.batch_size * self.seq_len / max(1, wide_params)
        chosen = "gentle" if per_param < AUTO_SWITCH else "paper"
        renamed = {n: dataclasses.replace(self.spec(n), recipe=chosen).name for n in autos}
        self.contestants = tuple(renamed.get(n, n) for n in self.contestants)
        self.steps_for = {renamed.get(n, n): v for n, v in self.steps_for.items()}
        self.auto_recipe = (f"auto chose {chosen}: {per_param:.3g} tokens per wide parameter is "
                            f"{'below' if chosen == 'gentle' else 'at or above'} {AUTO_SWITCH:g} ("
                            + ("a short race: gentle keeps the clone's head start" if chosen == "gentle" else
                               "a long race: the paper's recipe, shared with random init, gains more")
                            + f"); for {', '.join(renamed.values())}")

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
        for name in names:
            ContestantSpec.parse(name)
        if len(set(names)) != len(names):
            raise HyperCloneError(f"contestant listed twice in {', '.join(names)}")
        extra = [n for n in self.steps_for if n not in names]
        if extra:
            raise HyperCloneError(f"steps_for names {quoted(extra[0])}, which is not racing ({', '.join(names)})")
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
        if not (isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr > 0
                and math.isfinite(self.lr)):
            raise HyperCloneError(f"lr must be a positive number, got {self.lr!r}")
        if self.warmup < 0:
            raise HyperCloneError(f"warmup must be >= 0 steps, got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise HyperCloneError(f"min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        if self.schedule not in SCHEDULES:
            raise HyperCloneError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            hint = ("fp16 needs a loss scaler, which racing models would share; use bf16"
                    if self.precision == "fp16" else f"choose from {', '.join(PRECISIONS)}")
            raise HyperCloneError(f"unsupported precision {self.precision!r}; {hint}")
        for name in names:
            grow_at = ContestantSpec.parse(name).grow_at
            if grow_at is not None and grow_at >= self.budget(name):
                raise HyperCloneError(f"{name} grows at step {grow_at} but trains {self.budget(name)} steps; grow "
                                      f"at a step from 1 to {self.budget(name) - 1}")


# race() arguments that say how and where to run a race, not what it is: not RaceConfig fields, not in run.json.
RUN_ARGUMENTS: dict[str, str] = {
    "tokenizer": "the tokenizer of a source given as a model",
    "device": "where to train (cpu, cuda, mps; default: the best available)",
    "run_dir": "where run.json, metrics.jsonl and checkpoints go",
    "resume": "continue the run in run_dir with its stored settings",
    "callback": "a function called with every record",
    "stop_event": "a threading.Event that stops the race cleanly between steps",
    "trust_remote_code": "allow custom model code from the source checkpoint",
    "log_with": "experiment trackers to log to as well",
}


def race_config(config: "RaceConfig | None" = None, source: object = None, **overrides) -> "RaceConfig":
    """The settings ``race(source, config, **overrides)`` runs with: a new ``RaceConfig``, ``config`` (default
    ``RaceConfig()``) with each override, a field's name; a name ``source`` (a model name, not a model object).
    Anything else (a run argument is not a setting): one line naming the closest setting."""
    if config is not None and not isinstance(config, RaceConfig):
        raise HyperCloneError(f"config must be a RaceConfig, got {type(config).__name__} {shown(repr(config))}; "
                              "give other settings by name, e.g. race(source, steps=100)")
    names = [f.name for f in dataclasses.fields(RaceConfig)]
    for key in overrides:
        if key not in names or key in MEASURED:
            raise HyperCloneError(unknown_setting(key, names))
    if isinstance(source, str):
        overrides["source"] = source
    return dataclasses.replace(config or RaceConfig(), **overrides)


def unknown_setting(key: str, names: list[str]) -> str:
    """The one line for a ``race()`` keyword that is neither a setting nor a run argument."""
    if key in MEASURED:
        return f"race() setting {key} is {MEASURED_WHY}; leave it out"
    close = difflib.get_close_matches(key, [n for n in names if n not in MEASURED] + list(RUN_ARGUMENTS), n=1)
    hint = f"did you mean {close[0]}?" if close else "see help(RaceConfig) for the settings"
    return f"race() got an unknown setting {shown(repr(key))}; {hint}"


def growth_settings(growth: Growth) -> dict:
    """The race settings a ``Growth`` decides (the fields both declare: factor, ffn_factor, snr_db, seed)."""
    shared = {f.name for f in dataclasses.fields(Growth)} & {f.name for f in dataclasses.fields(RaceConfig)}
    return {name: getattr(growth, name) for name in sorted(shared)}


def check_tokens_per_step(batch_size: int, seq_len: int) -> None:
    """Refuse a training step of more than ``MAX_TOKENS_PER_STEP`` tokens (batch x sequence), in one line."""
    if batch_size * seq_len > MAX_TOKENS_PER_STEP:
        raise HyperCloneError(f"batch_size {batch_size} x seq_len {seq_len} = {batch_size * seq_len:,} tokens per "
                              f"step is over the limit of {MAX_TOKENS_PER_STEP:,}; use a smaller batch or sequence")


def lr_at(step: int, total: int, cfg: "RaceConfig | Schedule") -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then the schedule down to ``min_lr_ratio`` at ``total``.

    ``cfg``: anything with ``lr``, ``warmup``, ``schedule`` and ``min_lr_ratio``
    (a contestant's ``Schedule``, a ``RaceConfig``, an asset recipe).
    """
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
    shared = all(cfg.schedule_for(n).chosen == "paper recipe: shared" for n in cfg.contestants)
    sched = ("constant after warm-up" if cfg.schedule == "constant" else
             f"{cfg.schedule} decay to {cfg.min_lr_ratio} x peak over each contestant's own budget")
    optimizer = (f"AdamW(lr {cfg.lr:g}, betas {tuple(cfg.betas)}, weight decay {cfg.weight_decay:g} on matrices); "
                 f"{cfg.warmup} warm-up steps, {sched}" if shared else
                 f"AdamW(betas {tuple(cfg.betas)}, weight decay {cfg.weight_decay:g} on matrices); learning rate "
                 "by recipe: " + "; ".join(recipe_words(n, cfg.schedule_for(n)) for n in cfg.contestants))
    return (
        f"All contestants: identical training batches in identical order ({cfg.batch_size} x {cfg.seq_len} "
        f"tokens per step, batch of step s fixed by (seed {cfg.seed}, s)"
        + (f", split into {num_processes} equal data-parallel shards" if num_processes > 1 else "")
        + f"); {budget}; {optimizer}; gradient clipping at {cfg.grad_clip:g}; precision "
        f"{cfg.precision}; evaluation every {cfg.eval_every} steps on the same {cfg.eval_windows} validation "
        f"windows; each contestant its own RNG stream from seed {cfg.seed}." + staged_words(cfg) + depth_words(cfg)
    )


def depth_words(cfg: RaceConfig) -> str:
    """How each contestant grown in depth starts, in words ("" when none races)."""
    deep = [cfg.spec(n) for n in cfg.contestants if cfg.spec(n).depth]
    return "".join(
        f" {s.name}: {s.depth}x the layers, " + ("the layer stack repeated: NOT function-preserving by design "
                                                 "(it does not start at the source's loss)." if s.stack else
                                                 "random init." if s.kind == "random" else
                                                 "new blocks start as the identity (exact).")
        for s in deep)


def staged_words(cfg: RaceConfig) -> str:
    """How each staged contestant grows, in words ("" when none races)."""
    staged = [cfg.spec(n) for n in cfg.contestants if cfg.spec(n).kind == "staged"]
    return "".join(f" {s.name}: the source trained {s.grow_at} steps, then grown into its {s.grows_into} clone "
                   f"(x{cfg.factor}) with a fresh AdamW, the lr schedule going on from step {s.grow_at}; its "
                   "FLOPs count each phase at its own size." for s in staged)


def recipe_words(name: str, s: Schedule) -> str:
    """A contestant's learning rate in a few words: peak, warm-up, schedule, and how it was chosen."""
    shape = "constant" if s.schedule == "constant" else f"{s.schedule} to {s.min_lr_ratio:g} x peak"
    return f"{name} lr {format_lr(s.lr)}, {s.warmup} warm-up steps, {shape} [{s.chosen}]"
