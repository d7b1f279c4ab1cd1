"""Downstream evaluation with EleutherAI's lm-evaluation-harness (``lm-eval``, the optional extra ``[eval]``).

``evaluate_tasks`` runs lm-eval's own ``simple_evaluate`` on a model already in memory (a source, a
clone, a race contestant's checkpoint), wrapped in lm-eval's ``HFLM`` with ``trust_remote_code=False``.
Task data come from the local ``datasets`` cache only unless ``download=True``; task YAMLs of one's own
come in through ``include_path``, as lm-eval names it. The result keeps lm-eval's metrics and, per
example, the log-likelihood of every choice, so two models' runs can be compared example by example.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from hyperclone.core.errors import HyperCloneError, MissingPathError, first_line, quoted, shown

LM_EVAL_PIN = "lm-eval==0.4.13"  # the version tested here (requirements.txt)
INSTALL_HINT = f"pip install 'hyperclone[eval]' (or {LM_EVAL_PIN})"
# Ten zero-shot accuracy tasks of lm-eval that small-LM pretraining papers report (Pythia/OLMo-style suites).
# The paper (arXiv 2409.12903) averages 10 lm-eval tasks, but its exact list could not be read offline here,
# so this preset is NOT claimed to be the paper's list; name the paper's tasks with --tasks when you know them.
PRESETS: dict[str, tuple[str, ...]] = {
    "zeroshot10": ("arc_easy", "arc_challenge", "boolq", "copa", "hellaswag", "lambada_openai", "openbookqa",
                   "piqa", "sciq", "winogrande"),
}
RESULT_PREFIX = "eval-"


# --------------------------------------------------------------------------- #
# Which tasks
# --------------------------------------------------------------------------- #
def parse_tasks(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Task names from "a,b,preset" (or a list): presets expanded, repeats dropped, order kept; no lm-eval needed."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.\-*]+", part):
            raise HyperCloneError(f"task {quoted(part)} is not an lm-eval task name (letters, digits, _ . - *); "
                                  "separate tasks with commas")
        for name in PRESETS.get(part, (part,)):
            if name not in names:
                names.append(name)
    if not names:
        raise HyperCloneError(f"no tasks given; name lm-eval tasks separated by commas, or a preset "
                              f"({', '.join(PRESETS)})")
    return tuple(names)


def result_tag(text: str | list[str] | tuple[str, ...]) -> str:
    """The short name of a task selection in a result's file name: a preset's name, else the tasks joined by '+'
    (long selections cut, with a hash of the whole)."""
    if isinstance(text, str) and text.strip() in PRESETS:
        return text.strip()
    tag = "+".join(parse_tasks(text)).replace("*", "x")
    return tag if len(tag) <= 60 else f"{tag[:48]}-{hashlib.sha1(tag.encode()).hexdigest()[:10]}"


def require_lm_eval():
    """lm-eval's top module, or one line saying how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (its import fails where transformers does not fit)
    except ImportError as e:
        raise HyperCloneError(f"lm-evaluation-harness is not installed ({first_line(e, 80)}); "
                              f"{INSTALL_HINT}") from None
    return lm_eval


def task_manager(tasks: tuple[str, ...], include_path: str | os.PathLike | None = None):
    """lm-eval's ``TaskManager`` (with ``include_path``'s YAMLs), after checking every task name is known to it."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise MissingPathError(f"--include-path {shown(include_path)} is not a directory of task YAML files")
    if include_path is not None:  # indexing lm-eval's own ~15,000 tasks takes seconds: skip it when unused
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(task in manager.all_tasks for task in tasks):
            return manager
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known and "*" not in t]
    if unknown:
        where = f" or in {shown(include_path)}" if include_path is not None else ""
        raise HyperCloneError(f"lm-eval has no task {quoted(unknown[0])}{where}"
                              f"{f' (nor {len(unknown) - 1} more)' if unknown[1:] else ''}; "
                              "list them with `lm-eval ls tasks`, or pass --include-path DIR for YAMLs of your own")
    return manager


@contextlib.contextmanager
def hub_datasets(download: bool) -> Iterator[None]:
    """With ``download`` False, ``datasets`` and the hub client work from the local cache only while inside."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    if not download:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


@dataclass
class TaskSet:
    """Tasks ready to run: their names, lm-eval's ``TaskManager`` and task objects (data read), and whether
    their data may be fetched."""

    names: tuple[str, ...]
    manager: Any = field(repr=False)
    objects: list = field(repr=False)
    download: bool = False


def prepare_tasks(tasks: str | list[str] | tuple[str, ...], include_path: str | os.PathLike | None = None,
                  download: bool = False) -> TaskSet:
    """``tasks`` checked and their data read, before any model loads; a failure is one line naming the tasks."""
    names = parse_tasks(tasks)
    manager = task_manager(names, include_path)
    try:
        with hub_datasets(download):
            loaded = manager.load(list(names))
    except Exception as e:  # datasets, the hub client and lm-eval's config loading raise many types
        how = "" if download else (" (task data are read from the local cache only; pass --download, "
                                   "download=True, to fetch them from the Hugging Face hub)")
        raise HyperCloneError(f"could not load the data of task(s) {shown(', '.join(names))}: "
                              f"{first_line(e, 160)}{how}") from None
    children = {child for group in loaded["group_map"].values() for child in group}
    objects = [obj for kind in ("groups", "tasks") for name, obj in loaded[kind].items() if name not in children]
    return TaskSet(names, manager, objects, download)


# --------------------------------------------------------------------------- #
# Running lm-eval
# --------------------------------------------------------------------------- #
@dataclass
class EvalResult:
    """What lm-eval measured: ``metrics[task][metric]`` (lm-eval's keys, e.g. "acc,none"), and per task the
    log-likelihoods of every example's choices (``loglikelihoods[task][doc_id]``; generation tasks have none)."""

    model: str
    tasks: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    loglikelihoods: dict[str, list[list[float]]]
    targets: dict[str, list[Any]]
    raw: dict[str, Any] = field(repr=False)  # lm-eval's result (without its samples), as lm-eval writes it

    def accuracy(self, task: str) -> float | None:
        """The task's ``acc`` (lm-eval's default filter), or None when it reports none."""
        value = self.metrics.get(task, {}).get("acc,none")
        return None if value is None else float(value)

    def table(self) -> str:
        """lm-eval's own results table (markdown)."""
        from lm_eval.utils import make_table

        text = make_table(self.raw)
        return text + ("\n" + make_table(self.raw, "groups") if self.raw.get("groups") else "")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tasks": list(self.tasks), "metrics": self.metrics,
                "loglikelihoods": self.loglikelihoods, "targets": self.targets, "lm_eval": self.raw}


def _per_example(samples: list[dict]) -> tuple[list[list[float]], list[Any]]:
    """(log-likelihood of each choice, target) per example, in doc_id order; [] where responses are text."""
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"] if isinstance(r, (tuple, list)) and len(r) == 2]
           for s in ordered]
    return lls, [s.get("target") for s in ordered]


def _plain(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars and other objects as numbers or strings, NaN as None."""
    from hyperclone.training.runs import json_safe

    return json_safe(json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))))


def evaluate_tasks(
    model: Any,
    tasks: str | list[str] | tuple[str, ...] | TaskSet,
    tokenizer: Any = None,
    *,
    include_path: str | os.PathLike | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    download: bool = False,
    seed: int = 0,
    name: str | None = None,
) -> EvalResult:
    """Run lm-evaluation-harness ``tasks`` ("hellaswag,arc_easy", a list, a preset such as "zeroshot10", or
    what ``prepare_tasks`` returns) on ``model``: a loaded ``PreTrainedModel`` (with ``tokenizer``), or what
    ``load_for_eval`` takes (a built-in name, a checkpoint directory, a hub id, a race's ``checkpoints/NAME.pt``).

    ``include_path``: a directory of task YAMLs of one's own. ``limit``: at most this many examples per task
    (lm-eval's own; a fraction below 1 takes that share). Task data come from the local cache unless
    ``download``. lm-eval's seeds are all ``seed``. ``name`` is how the model is named in the result.
    """
    lm_eval = require_lm_eval()
    if not isinstance(tasks, TaskSet):  # unknown tasks and missing data are refused before the model loads
        tasks = prepare_tasks(tasks, include_path, download)
    if not hasattr(model, "config"):
        name = name or str(model)
        model, tokenizer = load_for_eval(model)
    if tokenizer is None:
        raise HyperCloneError("lm-eval needs the model's tokenizer; pass tokenizer= (load_source returns it)")
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, trust_remote_code=False)
    with hub_datasets(tasks.download):
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks.objects, task_manager=tasks.manager, limit=limit,
                                      num_fewshot=num_fewshot, log_samples=True, random_seed=seed,
                                      numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    samples = out.pop("samples", {})
    per_task = {task: _per_example(rows) for task, rows in samples.items()}
    return EvalResult(
        model=name or type(model).__name__, tasks=tasks.names,
        metrics=_plain({task: {k: v for k, v in values.items() if k not in ("name", "alias")}
                        for task, values in out["results"].items()}),
        loglikelihoods={task: lls for task, (lls, _) in per_task.items()},
        targets=_plain({task: targets for task, (_, targets) in per_task.items()}),
        raw=_plain(out),
    )


# --------------------------------------------------------------------------- #
# What to evaluate, and where its result goes
# --------------------------------------------------------------------------- #
def race_checkpoint(path: str | os.PathLike) -> tuple[Path, str] | None:
    """(run directory, contestant) when ``path`` is a race run's ``checkpoints/NAME.pt``, else None."""
    from hyperclone.training.runs import CHECKPOINT_DIR, is_run_dir

    path = Path(path)
    if path.suffix == ".pt" and path.parent.name == CHECKPOINT_DIR and is_run_dir(path.parent.parent):
        return path.parent.parent, path.stem
    return None


def load_contestant(run_dir: str | os.PathLike, contestant: str, device: Any = None):
    """(model, tokenizer) of race contestant ``contestant`` as its last checkpoint in ``run_dir`` left it."""
    from hyperclone.core.clone import clone
    from hyperclone.training.contestants import starting_model
    from hyperclone.training.runs import checkpoint_path, read_checkpoint, run_config
    from hyperclone.io.sources import check_device, load_source

    cfg = run_config(run_dir)
    if contestant not in cfg.contestants:
        raise HyperCloneError(f"run {shown(run_dir)} has no contestant {quoted(contestant)}; it has "
                              f"{', '.join(cfg.contestants)}")
    saved = read_checkpoint(Path(run_dir), contestant)
    if saved is None:
        raise MissingPathError(f"contestant {quoted(contestant)} has no checkpoint "
                               f"({checkpoint_path(Path(run_dir), contestant)}); race with checkpoints on")
    if cfg.source.startswith("<"):  # race() was given a model object: nothing to load it from
        raise HyperCloneError(f"run {shown(run_dir)} raced a model passed in memory ({cfg.source}); "
                              "evaluate it from Python with evaluate_tasks(model, tasks, tokenizer)")
    source, tokenizer = load_source(cfg.source, device="cpu")
    model = starting_model(contestant, source, cfg)
    spec = cfg.spec(contestant)
    if spec.kind == "staged" and saved.get("grown"):
        model = clone(model, growth=cfg.growth(spec.grows_into))
    model.load_state_dict(saved["model"])
    return model.to(check_device(device)).eval(), tokenizer


def race_target(path: str | os.PathLike, contestant: str | None = None) -> tuple[Path, str] | None:
    """(run directory, contestant) when ``path`` names a race contestant's checkpoint (``checkpoints/NAME.pt``, or
    the run directory with ``contestant``), None for anything else; a mismatch is one line. Nothing is loaded."""
    from hyperclone.training.runs import is_run_dir

    found = race_checkpoint(path)
    if found is None and is_run_dir(Path(path)):
        if contestant is None:
            raise HyperCloneError(f"{shown(path)} is a race run; name a contestant (--contestant NAME) or give "
                                  "its checkpoints/NAME.pt")
        return Path(path), contestant
    if contestant is not None and (found is None or found[1] != contestant):
        raise HyperCloneError(f"--contestant applies to a race run directory, and {shown(path)} is not one "
                              "(it has no run.json)")
    return found


def load_for_eval(path: str | os.PathLike, contestant: str | None = None, **load_kwargs: Any):
    """(model, tokenizer) for ``path``: a race contestant's checkpoint (see ``race_target``), else a source as
    ``load_source`` takes it (built-in name, checkpoint directory, hub id) with ``load_kwargs``."""
    from hyperclone.io.sources import load_source

    found = race_target(path, contestant)
    if found is not None:
        return load_contestant(*found, device=load_kwargs.get("device"))
    return load_source(path, **load_kwargs)


def default_result_path(path: str | os.PathLike, tag: str, contestant: str | None = None) -> Path | None:
    """Where a result goes unless told: inside a HyperClone output (its ``hyperclone.json``) or beside a race's
    checkpoints (``<run>/eval-<contestant>-<tag>.json``); None for anything else (a source is left untouched)."""
    from hyperclone.io.export import PROVENANCE_FILE

    found = race_target(path, contestant)
    if found is not None:
        return found[0] / f"{RESULT_PREFIX}{found[1]}-{tag}.json"
    if Path(path).is_dir() and (Path(path) / PROVENANCE_FILE).is_file():
        return Path(path) / f"{RESULT_PREFIX}{tag}.json"
    return None


def write_result(result: EvalResult, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``result`` (and ``extra``, e.g. the command) as JSON to ``out`` atomically; the path written."""
    from hyperclone.io.atomic import write_atomic

    out = Path(out)
    if out.is_dir():
        raise HyperCloneError(f"--out {shown(out)} is a directory; give a file name, e.g. {out / 'eval.json'}")
    try:
        write_atomic(out, json.dumps({**result.to_dict(), **(extra or {})}, indent=1) + "\n")
    except OSError as e:
        raise HyperCloneError(f"could not write {shown(out)}: {first_line(e)}") from None
    return out
