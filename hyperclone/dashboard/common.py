"""What the dashboard's pages share: one-line errors, where runs live, the view in the URL, presenter style, who
is the teacher in a class."""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import typing
from pathlib import Path
from typing import Any, Mapping, NamedTuple
from urllib.parse import urlencode

import streamlit as st

from hyperclone.teach.classroom import RaceQueue, classroom_mode, is_teacher, teacher_only
from hyperclone.core.errors import HyperCloneError, first_line, quoted
from hyperclone.core.growth import VARIANTS, Growth, setting_meta, setting_names
from hyperclone.training.config import MAX_TOKENS_PER_STEP
from hyperclone.core.resources import is_out_of_memory
from hyperclone.training.runs import METRICS_FILE, RUN_FILE, is_run_dir, list_runs, load_run
from hyperclone.io.sources import BUILTIN_NAMES, default_device, load_source

log = logging.getLogger("hyperclone.app")


def error_line(e: BaseException, doing: str) -> str:
    """A one-line message for ``e``, raised while ``doing`` something."""
    if isinstance(e, HyperCloneError):
        msg = str(e)
    elif is_out_of_memory(e):
        msg = f"out of memory while {doing}; use a smaller factor, bfloat16, or another device"
    else:
        first = first_line(e)
        msg = f"{doing} failed ({type(e).__name__}: {first}); check the inputs and try again (details in the terminal)"
        log.error("%s failed", doing, exc_info=e)
    return " ".join(msg.split())


@st.cache_resource(max_entries=4, show_spinner="Loading the source model…")
def loaded_source(name: str, device: str, dtype: str):
    """(model, tokenizer), loaded once per (name, device, dtype) for every page of this server."""
    return load_source(name, device=device, dtype=dtype, trust_remote_code=False)


def shared_source(name: str, device: str = "auto", dtype: str = "float32"):
    """The one cached copy of a source that both pages use: ``auto`` is resolved to the device first, so the
    lesson's CPU model and the explorer's default on a machine without a GPU are the same copy."""
    return loaded_source(name, str(default_device()) if device == "auto" else device, dtype)


SESSION_MEMORY = 4  # results a page keeps per kind (equivalence reports, generations): the latest ones


def remembered(kind: str, key: Any, compute: Any) -> Any:
    """``compute()`` once per ``key`` in this page's session, keeping only the latest ``SESSION_MEMORY`` results of
    this kind, so a student trying many settings does not grow the server's memory."""
    store = st.session_state.setdefault(kind, {})
    if key not in store:
        store[key] = compute()
        while len(store) > SESSION_MEMORY:
            store.pop(next(iter(store)))
    return store[key]


def runs_dir() -> Path:
    """Where races are saved: ``$HYPERCLONE_RUNS``, else ``runs/`` in the directory the dashboard was started from
    (never inside the installed package)."""
    return Path(os.environ.get("HYPERCLONE_RUNS") or Path.cwd() / "runs").absolute()


def run_stamp(path: Path) -> tuple:
    """What changes when a run's log changes: size and time of its ``run.json`` and ``metrics.jsonl``."""
    stats = []
    for name in (RUN_FILE, METRICS_FILE):
        try:
            st_ = (path / name).stat()
            stats.append((st_.st_size, st_.st_mtime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)


FIGURES = 64  # built figures kept for every page together (live races' latest states, recorded races)


@functools.lru_cache(maxsize=FIGURES)
def _result_at(path: str, stamp: tuple):
    return load_run(Path(path))


@functools.lru_cache(maxsize=1024)
def run_problem(path: str, stamp: tuple) -> str | None:
    """Why the run at ``path`` does not load (None: it loads), read once per ``stamp`` of its files: the pages list
    runs every second while a race trains, and reading every log each time would take the CPU from the race."""
    try:
        _result_at(path, stamp)  # a run that loads is then shown from the same cache, not read again
    except HyperCloneError as e:
        return str(e)
    return None


def shared_result(path: Path):
    """``load_run(path)``, read once per state of its log (``run_stamp``) for every page of this server; the same
    object is handed to every page, so callers must not change it (a damaged log: its one-line error)."""
    return _result_at(str(path), run_stamp(Path(path)))


@functools.lru_cache(maxsize=FIGURES)
def _figure_at(build: Any, path: str, stamp: tuple, options: tuple):
    return build(_result_at(path, stamp), **dict(options))


def shared_figure(build: Any, path: Path, /, **options: Any):
    """``build(result, **options)`` for the run logged in ``path``, built once per state of its log and shared by
    every page and both pages: a class watching one race costs one figure per new evaluation, not one per page
    per fragment run (the stamp is read before the log, so a figure is never older than its key). Callers must
    not change the figure (``st.plotly_chart`` copies it)."""
    return _figure_at(build, str(path), run_stamp(Path(path)), tuple(sorted(options.items())))


def loads_unchanged(path: Path) -> bool:
    """``load_run``'s verdict on ``path`` (a one-line error when damaged), remembered until its files change."""
    problem = run_problem(str(path), run_stamp(path))
    if problem is not None:
        raise HyperCloneError(problem)
    return True


def past_runs() -> list[Path]:
    """The run directories under ``runs_dir()`` that load, newest first (by name: they start with a timestamp).

    A damaged one is left out, and a caption names it and says why (the listing never raises)."""
    found = list_runs(runs_dir(), load=loads_unchanged)
    note_left_out(found.skipped, "run")
    return sorted(found, key=lambda p: p.name, reverse=True)


def note_left_out(skipped: list[str], what: str) -> None:
    """A caption naming the ``what``s a listing left out (``Listing.skipped``), with why; nothing if none."""
    if skipped:
        log.warning("left out %d %s(s): %s", len(skipped), what, "; ".join(skipped))
        st.caption(f"{len(skipped)} {what}(s) left out because they cannot be read: " + "; ".join(
            " ".join(line.split())[:300] for line in skipped))


def safe_name(source: str) -> str:
    """A source name as a file-name fragment (``org/model`` -> ``model``, odd characters -> ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source).strip("-")


def owner_id() -> str:
    """This browser session's id: what its races and outputs are owned by."""
    return st.session_state.setdefault("owner_id", secrets.token_hex(8))


TEACHER_KEY = "hyperclone_teacher"  # in session state: whether this page was opened with the teacher token
ONLY_TEACHER_RACES = "Only the teacher starts races on this class server; every page watches the race that trains."


def is_teacher_page() -> bool:
    """Whether this page is the teacher's (every page is, outside classroom mode).

    A ``?token=`` in the link is read once: the answer stays in the session, and the token leaves the
    address bar (it is on the projector) and every link the page writes. A reload forgets it."""
    state, params = st.session_state, st.query_params
    if "token" in params:
        state[TEACHER_KEY] = is_teacher(params.get("token"))
        del params["token"]
    return bool(state.get(TEACHER_KEY)) or is_teacher(None)


def require_teacher(action: str) -> None:
    """A one-line refusal of ``action`` on a page that is not the teacher's."""
    if not is_teacher_page():
        raise HyperCloneError(teacher_only(action))


def teacher_stop_button(queue: RaceQueue, owner: str, key: str) -> None:
    """The teacher's "Stop the running race": any page's race, also the teacher's own after a reload."""
    running = queue.running()
    if running is None or running.owner == owner or not is_teacher_page():
        return
    if st.button("Stop the running race", key=f"{key}_{running.id}", icon=":material/stop_circle:",
                 help="the teacher can stop the race that trains now, whichever page started it"):
        queue.stop(running, by=owner, teacher=True)
        st.toast("Stopping the running race after the current step…")


def guard_cache_clearing() -> None:
    """In classroom mode only the teacher's page may use Streamlit's "Clear cache": it empties the models
    cached for every page (any page can ask for it, menu or not)."""
    from streamlit.runtime.app_session import AppSession

    clear = AppSession._handle_clear_cache_request
    if getattr(clear, "teacher_only", False):
        return

    def clear_if_teacher(session: Any) -> None:
        state = session._session_state
        if classroom_mode() and not (TEACHER_KEY in state and state[TEACHER_KEY]):
            log.warning("a page without the teacher token asked to clear the cache: refused (classroom mode)")
            return
        clear(session)

    clear_if_teacher.teacher_only = True
    AppSession._handle_clear_cache_request = clear_if_teacher


GROWTH_URL = setting_names(Growth, "url")  # {Growth field: its link parameter}, declared with the field
GROWTH_WIDGETS = setting_names(Growth, "widget")  # {Growth field: its sidebar control's key}


def growth_params(growth: Growth) -> dict[str, str | None]:
    """The growth settings as URL parameters, named as ``Growth`` declares (None: left out, for a setting marked
    ``url_optional`` that says what a link without it means: ffn_factor = factor, depth 1, no stack)."""
    plain, params = Growth(growth.factor), {}
    for name, param in GROWTH_URL.items():
        value = getattr(growth, name)
        optional = setting_meta(Growth, name).get("url_optional") and value == getattr(plain, name)
        params[param] = None if optional else "1" if value is True else f"{value:g}" if isinstance(value, float) \
            else str(value)
    return params


class Limit(NamedTuple):
    """The range a control offers, and so the range a link's value must fit."""

    low: float
    high: float


SEQ_LENS = (64, 128, 256)  # the race's sequence lengths
# One copy of every range: the widgets read theirs here, links are checked against them (the lesson's factor
# slider is narrower), and a race step is never more than MAX_TOKENS_PER_STEP tokens (batch x sequence).
LIMITS: dict[str, Limit] = {
    "factor": Limit(1, 8), "ffn_factor": Limit(1, 8), "snr_db": Limit(0.0, 40.0), "seed": Limit(0, 2**31 - 1),
    "depth": Limit(1, 4), "steps": Limit(1, 100_000), "batch_size": Limit(1, MAX_TOKENS_PER_STEP // SEQ_LENS[0]),
    "lr": Limit(1e-6, 1.0), "eval_every": Limit(1, 100_000),
}
LESSON_LIMITS: dict[str, Limit] = {**LIMITS, "factor": Limit(2, 4), "ffn_factor": Limit(2, 4)}


def number_kind(hint: Any) -> type | None:
    """int or float for a number annotation (Optional too), else None."""
    kinds = typing.get_args(hint) or (hint,)
    return next((k for k in (int, float) if k in kinds), None)


# The numbers a link may hold, and their kinds: Growth's fields with a link name and a number annotation.
LINK_NUMBERS = {name: number_kind(hint) for name, hint in typing.get_type_hints(Growth).items()
                if name in GROWTH_URL and number_kind(hint)}
LINK_CHARS = 40  # how much of a refused link value its error quotes
SWITCHES = ("0", "1")  # the values of an on/off link parameter (stack, presenter)


def check_limit(key: str, value: float, limits: Mapping[str, Limit] = LIMITS) -> None:
    """Refuse ``value`` for ``key`` outside the range its control offers, in one line."""
    low, high = limits[key]
    if not low <= value <= high:
        raise HyperCloneError(f"{key} must be {low} to {high} here")


def check_growth_limits(growth: Growth, limits: Mapping[str, Limit] = LIMITS) -> Growth:
    """``growth``, if every setting is in the range its control offers; a one-line error naming the first not."""
    for key in LINK_NUMBERS:
        check_limit(key, getattr(growth, key), limits)
    return growth


def link_error(key: str, text: object, why: str) -> HyperCloneError:
    """The one line for a link value that was refused (the value cut short: a link can be long)."""
    return HyperCloneError(f"the link's {key}={quoted(str(text), LINK_CHARS)} was not used: {why}")


def link_choice(params: Mapping[str, Any], key: str, choices: tuple[str, ...] | list[str],
                why: str | None = None) -> str | None:
    """The link's ``key`` if it is one of ``choices`` (None when the link has none); a one-line error (``why``,
    or the choices) if not."""
    text = params.get(key)
    if text is None or text in choices:
        return text
    raise link_error(key, text, why or f"choose one of {', '.join(choices)}")


def link_source(params: Mapping[str, Any]) -> str | None:
    """The built-in model a link names (None: none named); a link never loads any other model."""
    return link_choice(params, "source", BUILTIN_NAMES, "a link opens only a built-in model ("
                       f"{', '.join(BUILTIN_NAMES)}); load another in the Explorer's sidebar")


def link_run(name: str | None) -> Path | None:
    """The run directory a link names: a run saved under ``runs_dir()``, by its plain name (None: none named)."""
    if name is None:
        return None
    if Path(name).name != name or name.startswith(".") or not is_run_dir(runs_dir() / name):
        raise link_error("run", name, f"it names no race saved on this server (in {runs_dir()})")
    return runs_dir() / name


def growth_from_params(params: Mapping[str, Any], limits: Mapping[str, Limit] = LIMITS,
                       default: Growth | None = None) -> Growth:
    """The ``Growth`` a link describes (missing values from ``default``), checked as the controls check theirs,
    before any work: each a number in its control's range (``limits``), then ``Growth``'s own checks."""
    base = default or Growth(2, None, "symmetric")
    values: dict[str, Any] = {k: getattr(base, k) for k in LINK_NUMBERS} | {"ffn_factor": None}
    for key, kind in LINK_NUMBERS.items():
        text = params.get(GROWTH_URL[key])
        if text in (None, ""):
            continue
        try:
            values[key] = kind(text)
            check_limit(key, values[key], limits)
        except (ValueError, OverflowError):
            number = "a whole number" if kind is int else "a number"
            raise link_error(GROWTH_URL[key], text, f"it is not a number; {key} takes {number}") from None
        except HyperCloneError as e:
            raise link_error(GROWTH_URL[key], text, str(e)) from None
    stack = link_choice(params, GROWTH_URL["stack"], SWITCHES) == "1"
    variant = link_choice(params, GROWTH_URL["variant"], VARIANTS) or base.variant
    try:
        return Growth(**values, variant=variant, stack=stack)
    except HyperCloneError as e:
        raise HyperCloneError(f"the link's growth settings were not used: {e}") from None


def write_params(state: Mapping[str, str | None]) -> bool:
    """Make the URL hold ``state`` (None removes a key); True when it changed."""
    params = st.query_params
    changed = False
    for key, value in state.items():
        if value is None and key in params:
            del params[key]
            changed = True
        elif value is not None and params.get(key) != value:
            params[key] = value
            changed = True
    return changed


def query_link(state: Mapping[str, str | None]) -> str:
    """The full link to the view ``state`` describes, on this server."""
    base = str(getattr(st.context, "url", "") or "").split("?")[0]
    return f"{base}?{urlencode({k: v for k, v in state.items() if v is not None})}"


PRESENTER_CSS = """
<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"] {
  display: none !important;
}
html, body, .stMarkdown, .stCaption, p, li, label, button { font-size: 22px !important; }
h3 { font-size: 34px !important; }
.block-container { padding-top: 0.6rem !important; padding-bottom: 0.5rem !important; max-width: 100% !important; }
</style>
"""


def apply_presenter_style(on: bool) -> None:
    """For a projector: no sidebar or header, larger text (figures take ``font_size`` themselves)."""
    if on:
        st.html(PRESENTER_CSS)


PAPER_REPORT = "paper-micro-gpt2"  # the shipped ``hyperclone reproduce`` report both pages show first


def paper_report_of(reports: Mapping[str, Path]) -> dict | None:
    """The shipped paper report (``PAPER_REPORT``, else the first of ``reports``: ``shipped_reports()``), loaded;
    None when none ships; a one-line error when it is missing or damaged."""
    from hyperclone.training.paper_report import load_report

    if not reports:
        return None
    return load_report(reports.get(PAPER_REPORT) or next(iter(reports.values())))


def paper_origin(report: Mapping[str, Any]) -> str:
    """How a paper report was made, in one line: the command, the machine and when it finished."""
    machine = report.get("machine")
    if isinstance(machine, Mapping):
        cores = f"{machine.get('cpu_count')} CPU cores" if machine.get("cpu_count") else "CPU"
        machine = ", ".join(str(part) for part in (f"{cores} ({machine.get('processor') or 'unknown'})",
                                                   machine.get("platform"),
                                                   machine.get("torch") and f"torch {machine['torch']}") if part)
    finished = str(report.get("finished") or "an unknown date")
    when = finished[:16].replace("T", " ") if finished[:4].isdigit() else finished
    seconds = report.get("seconds")
    took = "" if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) else \
        f", {seconds / 3600:.1f} h in all" if seconds >= 5400 else f", {max(1, round(seconds / 60))} min in all"
    return (f"finished {when} on {' '.join(str(machine or 'an unnamed machine').split())}{took}. Command: "
            f"`{' '.join(str(report.get('command') or 'not recorded').split())}`")
