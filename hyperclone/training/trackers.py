"""A race's curves in the experiment trackers researchers already use: TensorBoard, trackio, MLflow, W&B.

``race(..., log_with="tensorboard")`` (``hyperclone race --log-with tensorboard,trackio``, or ``all``: every
one of them that is installed) hands each ``metrics`` record of the race, the same stream that fills
``metrics.jsonl``, to accelerate's tracker classes (``accelerate.tracking``). Nothing is added to the loop.

**One tracker run per contestant**, all of one race grouped together (trackio and W&B ``group``, an MLflow tag
``hyperclone.race``, TensorBoard's sub-directories of ``<run dir>/tensorboard``), each run with the race's
settings and the contestant's recipe as its config, and the same metric names in every run: ``train_loss``,
``val_loss``, ``val_accuracy``, ``symmetry``, ``lr`` and ``tokens`` (as in ``metrics.jsonl``), against the
training step. Why: comparing runs is what these tools are built around; a metric of the same name in
several runs is drawn as one chart with a line per run (TensorBoard's runs, W&B's and trackio's run tables
and groups, MLflow's run comparison), so the contestants overlay in one ``val_loss`` chart. One run with
namespaced metrics (``random/val_loss``) would draw every contestant in a chart of its own.

Offline by default: TensorBoard writes under the run directory; trackio to its own local store
(``TRACKIO_DIR``, by default ``~/.cache/huggingface/trackio``: trackio reads that variable once, when it is
imported, and ``trackio show`` looks there, beside the user's other projects); W&B in offline mode under the
run directory unless ``WANDB_MODE`` says otherwise; MLflow to a file store under the run directory unless
``MLFLOW_TRACKING_URI`` names another. trackio and MLflow keep one current run per process, so a contestant's
run is resumed when its next record comes (the contestants train in turns).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

from hyperclone.core.errors import HyperCloneError, first_line, quoted

TRACKERS = ("tensorboard", "trackio", "mlflow", "wandb")
PROJECT = "hyperclone"  # trackio's and W&B's project, MLflow's experiment (W&B: WANDB_PROJECT overrides it)
METRICS = ("train_loss", "val_loss", "val_accuracy", "symmetry", "lr", "tokens")
ONE_RUN_AT_A_TIME = ("trackio", "mlflow")  # a new run ends the current one: switch by resuming


def is_installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    if package in sys.modules:
        return sys.modules[package] is not None
    return importlib.util.find_spec(package) is not None


def tracker_names(log_with, run_dir=None) -> tuple[str, ...]:
    """The trackers ``log_with`` names ("tensorboard", "tensorboard,trackio", a list, "all", None), each checked
    to be installed; a one-line ``HyperCloneError`` for an unknown or missing one, or no ``run_dir``."""
    if not log_with:
        return ()
    asked = [log_with] if isinstance(log_with, str) else list(log_with)
    names = [n.strip().lower() for text in asked for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in (*TRACKERS, "all")]
    if unknown:
        raise HyperCloneError(f"unknown tracker {quoted(unknown[0])}; use {', '.join(TRACKERS)} or all")
    if "all" in names:
        names = [n for n in TRACKERS if is_installed(n)]
        if not names:
            raise HyperCloneError("cannot log to all trackers: none is installed; pip install 'hyperclone[trackers]'")
    missing = [n for n in dict.fromkeys(names) if not is_installed(n)]
    if missing:
        extra = "'hyperclone[trackers]'" if missing[0] in ("tensorboard", "trackio") else missing[0]
        raise HyperCloneError(f"cannot log to {missing[0]}: the {missing[0]} package is not installed; "
                              f"pip install {extra}")
    if run_dir is None:
        raise HyperCloneError("log_with needs a run_dir: the trackers keep their files beside the run's")
    return tuple(dict.fromkeys(names))


def flat(values: dict, prefix: str = "") -> dict:
    """A nested dict as one level of ``a.b`` keys holding str, int, float or bool (lists as JSON; None left out),
    the values every tracker's config takes."""
    out: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = json.dumps(value)
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


def run_config(run_info: dict, contestant: str, race: str) -> dict:
    """A contestant's tracker config: the race's settings and this contestant's recipe and size."""
    mine = run_info.get("contestants", {}).get(contestant, {})
    return {"race": race, "contestant": contestant, **flat(run_info.get("config", {})),
            **flat(mine, "contestant.")}


def make_tracker(kind: str, contestant: str, race: str, run_dir: Path, config: dict):
    """Accelerate's tracker of ``kind`` for one contestant's run (not started)."""
    from accelerate import tracking

    if kind == "tensorboard":
        return tracking.TensorBoardTracker(contestant, str(run_dir / "tensorboard"))
    if kind == "trackio":  # named after the race too: trackio resumes a run by its name
        return tracking.TrackioTracker(PROJECT, name=f"{race}/{contestant}", group=race, config=config,
                                       auto_log_cpu=False, auto_log_gpu=False, embed=False)
    if kind == "wandb":
        return tracking.WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), name=contestant, group=race,
                                     config=config, dir=str(run_dir), reinit="create_new",
                                     mode=os.environ.get("WANDB_MODE", "offline"))
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
    return tracking.MLflowTracker(experiment_name=PROJECT, run_name=contestant, tags={"hyperclone.race": race})


@contextlib.contextmanager
def quiet(kind: str) -> Iterator[None]:
    """trackio's messages when a run ends and another resumes (several each round) kept off the terminal."""
    with contextlib.redirect_stdout(io.StringIO()) if kind == "trackio" else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def one_line(kind: str) -> Iterator[None]:
    """A tracker's failure (a full disk, a bad setting in its environment) as a one-line error."""
    try:
        yield
    except HyperCloneError:
        raise
    except Exception as e:
        raise HyperCloneError(f"logging to {kind} failed: {first_line(e)}") from e


class RaceTrackers:
    """The race's callback: each ``metrics`` record goes to its contestant's run in every tracker, then every
    event to the callback it wraps (``then``)."""

    def __init__(self, names: tuple[str, ...], run_info: dict, run_dir: Path, then: Callable | None = None):
        self.names, self.run_info, self.run_dir, self.then = names, run_info, Path(run_dir), then
        self.race = self.run_dir.resolve().name
        self.runs: dict[tuple[str, str], object] = {}  # (tracker, contestant) -> its started tracker
        self.current: dict[str, str] = {}  # trackers with one run at a time: the contestant whose run is open

    def __call__(self, event: dict) -> None:
        if event.get("event") == "metrics":
            values = {k: float(event[k]) for k in METRICS if event.get(k) is not None}
            for kind in self.names:
                with one_line(kind):
                    self.run_of(kind, event["contestant"]).log(values, step=int(event["step"]))
        if self.then is not None:
            self.then(event)

    def run_of(self, kind: str, contestant: str):
        """``contestant``'s started run in tracker ``kind`` (started, or resumed, here when needed)."""
        tracker = self.runs.get((kind, contestant))
        if tracker is not None and self.current.get(kind, contestant) == contestant:
            return tracker
        said = any(k == kind for k, _ in self.runs)  # trackio says where its store is once, then nothing each turn
        with quiet(kind if said else ""):
            if kind in ONE_RUN_AT_A_TIME:
                self.finish_current(kind)
                self.current[kind] = contestant
            if tracker is None:
                return self.start(kind, contestant)
            if kind == "trackio":  # resume the run started earlier
                tracker.init_kwargs["resume"] = "must"
            else:
                tracker.run_id = tracker.active_run.info.run_id
            tracker.start()
        return tracker

    def start(self, kind: str, contestant: str):
        """A new run for ``contestant`` in tracker ``kind``, with its config."""
        config = run_config(self.run_info, contestant, self.race)
        tracker = self.runs[(kind, contestant)] = make_tracker(kind, contestant, self.race, self.run_dir, config)
        tracker.start()
        if kind == "tensorboard":  # trackio and W&B took it in start()
            write_hparams(tracker.writer, config)
        elif kind == "mlflow":
            tracker.store_init_configuration(config)
        return tracker

    def finish_current(self, kind: str) -> None:
        contestant = self.current.pop(kind, None)
        if contestant is not None:
            with quiet(kind), one_line(kind):
                if kind == "trackio":  # its own finish also ends it as trackio's current run (not again at exit)
                    import trackio

                    trackio.finish()
                else:
                    self.runs[(kind, contestant)].finish()

    def close(self) -> None:
        """Finish every open run (a tracker with one run at a time has only its current one open)."""
        for (kind, contestant), tracker in self.runs.items():
            if kind not in ONE_RUN_AT_A_TIME:
                with one_line(kind):
                    tracker.finish()
        for kind in ONE_RUN_AT_A_TIME:
            self.finish_current(kind)


def write_hparams(writer, config: dict) -> None:
    """``config`` as the TensorBoard hparams of the contestant's own run. (accelerate's
    ``store_init_configuration`` writes them to a run of their own, listed beside each contestant's.)"""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(config, {}):
        writer.file_writer.add_summary(summary)
    writer.flush()


@contextlib.contextmanager
def tracking(state, run_info: dict, names: tuple[str, ...]) -> Iterator[None]:
    """While the race runs, its callback (``state.callback``) also logs to the trackers ``names``
    (``tracker_names``), on the main process; every run is finished when the race ends, or fails."""
    if not names or not state.accelerator.is_main_process:
        yield
        return
    trackers = RaceTrackers(names, run_info, state.run_dir, state.callback)
    state.callback = trackers
    try:
        yield
    finally:
        state.callback = trackers.then
        trackers.close()


def tracker_hints(names: tuple[str, ...], run_dir) -> list[str]:
    """Where each tracker's runs are, and the command that shows them."""
    run_dir = Path(run_dir)
    hints = {"tensorboard": f"tensorboard --logdir {run_dir / 'tensorboard'}",
             "trackio": f"trackio show --project {PROJECT}",
             "mlflow": f"mlflow ui --backend-store-uri {(run_dir / 'mlruns').resolve().as_uri()}",
             "wandb": f"wandb sync {run_dir / 'wandb'}/offline-run-*  (offline runs; WANDB_MODE=online logs live)"}
    return [f"{name}: {hints[name]}" for name in names]
