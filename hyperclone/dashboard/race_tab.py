"""The explorer's training-race tab: contestants and settings (checked as the links are), the estimate, the live race
and the recorded ones.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import setting_names
from hyperclone.training.config import (ADOPTED_RECIPE, AUTO_SWITCH, CONTESTANT_CHOICES, FROM_SOURCE,
                                        MAX_TOKENS_PER_STEP, RECIPE_HELP, RECIPES, check_tokens_per_step, ContestantSpec, RaceConfig,
                                        growth_settings, race_config)
from hyperclone.training.loop import race
from hyperclone.training.paper_report import shipped_reports
from hyperclone.training.recorded import RUNS_DIR, recorded_races
from hyperclone.training.report import recipe_lines
from hyperclone.training.runs import is_run_dir, run_config
from hyperclone.training.setup import check_race_fits
from hyperclone.training.trackers import TRACKERS, tracker_names
from hyperclone.views.paper_figure import paper_figure, report_text
from hyperclone.views.plots import horizon_figure, loss_figure, symmetry_figure
from hyperclone.teach.classroom import shared_queue
from hyperclone.teach import lesson
from hyperclone.teach.lesson import PAPER_MICRO, QUICK, estimate_from, remaining_words
from hyperclone.dashboard.common import (LIMITS, ONLY_TEACHER_RACES, SEQ_LENS, error_line, is_teacher_page,
                                         note_left_out, owner_id, paper_origin, paper_report_of, past_runs,
                                         require_teacher, runs_dir, safe_name, shared_figure, shared_result,
                                         teacher_stop_button)
from hyperclone.dashboard.sources_panel import CloneKey, show_error, source_of

RACE_WIDGETS = setting_names(RaceConfig, "widget")  # the race controls' keys, declared with RaceConfig's fields


# --------------------------------------------------------------------------- #
# 6. Training race
# --------------------------------------------------------------------------- #
def run_label(path: Path) -> str:
    try:
        cfg = run_config(path)
        return f"{path.name}  ·  {cfg.source} x{cfg.factor}  ·  {', '.join(cfg.contestants)}  ·  {cfg.steps} steps"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} (unreadable run.json)"


def race_contestants(picked: list[str]) -> tuple[list[str], str | None]:
    """The contestants' specs from the recipe widgets: (canonical names, one-line error or None)."""
    c = st.columns(4)
    recipe = c[0].selectbox("Clone recipe", RECIPES, index=RECIPES.index(ADOPTED_RECIPE), key="race_recipe",
                            help="paper: every contestant shares the learning rate and schedule; continue: start "
                                 "at the source's final lr from its model card, no warm-up (also for 'source'); "
                                 "clone-aware: weights the clone divided by k train at lr/k; gentle: the "
                                 "source's final lr re-warmed, and lr/k on divided weights (also for 'source', "
                                 f"at its final lr); auto (default): gentle for a race under {AUTO_SWITCH:g} tokens "
                                 "per wide parameter (it keeps a short race's head start), paper from there (it "
                                 "gains more over a long one); the run's table says which it chose and why")
    own_lr = c[1].number_input("Clone lr", *LIMITS["lr"], None, format="%.0e", key="race_clone_lr",
                               placeholder="the recipe's",
                               help="the clone's own learning rate, and the source's with continue or gentle "
                                    "(empty: the recipe's: the shared lr, or the source's final lr from its card)")
    random_lr = c[2].number_input("Random init lr", *LIMITS["lr"], None, format="%.0e", key="race_random_lr",
                                  placeholder="shared", help="its own learning rate (empty: the shared one)")
    more = c[3].text_input("More contestants", key="race_more", placeholder="e.g. noisy_symmetric@lr=3e-4",
                           help=f"comma-separated: {RECIPE_HELP}")
    try:
        specs = []
        for kind in picked:
            follows = kind not in ("random", "source") or (kind == "source" and recipe in (*FROM_SOURCE, "auto"))
            lr = own_lr if follows else random_lr if kind == "random" else None
            specs.append(ContestantSpec(kind, recipe if follows else "paper", lr=lr))
        specs += [ContestantSpec.parse(text) for text in more.split(",") if text.strip()]
        config = RaceConfig(contestants=tuple(specs))
        config.validate()
        return list(config.contestants), None
    except HyperCloneError as e:
        return [], str(e)


def pick_race_settings(key: CloneKey) -> tuple[dict[str, Any], str | None]:
    """The race widgets (ranges from ``LIMITS``): ``race()`` keyword arguments, and a one-line error (shown) for
    settings the race would refuse: a bad contestant spec, too many tokens a step, not enough memory."""
    picked = st.multiselect("Contestants", list(CONTESTANT_CHOICES), default=[key.growth.variant, "random", "source"],
                            key="race_contestants",
                            help="clone variants; 'random': the same wide model from random init; "
                                 "'source': keep training the small model")
    c, key_of = st.columns(5), RACE_WIDGETS
    steps = int(c[0].number_input("Steps", *LIMITS["steps"], 200, 10, key=key_of["steps"]))
    batch = int(c[1].number_input("Batch size", *LIMITS["batch_size"], 8, key=key_of["batch_size"],
                                  help=f"sequences a step; batch x sequence length is at most {MAX_TOKENS_PER_STEP:,} "
                                       "tokens"))
    lr = float(c[2].number_input("Learning rate", *LIMITS["lr"], RaceConfig.lr, format="%.0e", key=key_of["lr"],
                                 help="the shared (paper recipe) learning rate: random init's best in the recipe sweep"))
    seq_len = int(c[3].selectbox("Sequence length", SEQ_LENS, index=1, key=key_of["seq_len"]))
    every = c[4].number_input("Evaluate every", *LIMITS["eval_every"], None, key=key_of["eval_every"],
                              placeholder="auto",
                              help="steps between evaluations on the fixed validation windows (auto: 25 points)")
    eval_every = int(every) if every else max(1, steps // 25)
    tracker = st.selectbox("Log to tracker", ("none", *TRACKERS, "all"), key="race_log_with",
                           help="also log the race to an experiment tracker, one run per contestant, offline: "
                                "TensorBoard, MLflow and W&B under the run's folder, trackio in its local store")
    contestants, recipe_error = race_contestants(picked)
    settings = dict(contestants=tuple(contestants), steps=steps, batch_size=batch, seq_len=seq_len, lr=lr,
                    warmup=race_warmup(steps), eval_every=eval_every, log_with=None if tracker == "none" else tracker)
    settings |= paper_preset_settings(key, settings)
    corpus = "the built-in corpus" if settings.get("data", "builtin") == "builtin" else f"`{settings['data']}`"
    timing = (f"evaluated every {eval_every} step(s) on fixed validation windows of {corpus}; "
              f"warm-up {settings['warmup']} steps, then cosine decay (unless a contestant's recipe says otherwise).")
    st.caption(f"Racing {', '.join(contestants)}; {timing}" if contestants else timing[0].upper() + timing[1:])
    problem = recipe_error or (race_problem(key, settings) if contestants else None)
    if problem:
        st.error(problem, icon=":material/error:")
    return settings, problem


def race_problem(key: CloneKey, settings: dict[str, Any]) -> str | None:
    """Why the race would refuse ``settings`` (its own checks: the settings, tokens a step, memory for every
    contestant), found before anything is built or timed; None when it would start."""
    try:
        tracker_names(settings.get("log_with"), runs_dir())  # a tracker that is not installed
        cfg = race_config(None, **growth_settings(key.growth), **{k: v for k, v in settings.items() if k != "log_with"})
        cfg.validate()
        check_tokens_per_step(cfg.batch_size, cfg.seq_len)  # the dashboard's own cap: a class shares this server
        source, _ = source_of(key)
        check_race_fits(cfg, source, next(source.parameters()).device)
    except HyperCloneError as e:
        return str(e)
    return None


PAPER_PRESET = "race_paper_preset"  # in session state: the paper (micro) preset filled the race widgets
PAPER_WIDGETS = ("steps", "batch_size", "seq_len", "lr", "eval_every")  # the widgets it fills, beside contestants
# What the paper (micro) preset sets that has no widget: taken from PAPER_MICRO while the widgets hold its values.
PAPER_EXTRAS = ("data", "warmup", "schedule", "min_lr_ratio", "eval_windows", "precision")


def paper_preset_settings(key: CloneKey, settings: dict[str, Any]) -> dict[str, Any]:
    """PAPER_MICRO's settings without a widget (corpus, warm-up, schedule, ...) while the paper (micro) preset's
    values are still in the widgets (else none: the preset is left), with a caption saying what it is for, and one
    line when the sidebar's source or factor is not the paper's (the race would race that model instead)."""
    if not st.session_state.get(PAPER_PRESET):
        return {}
    if (settings["contestants"] != PAPER_MICRO.contestants
            or any(settings[name] != getattr(PAPER_MICRO, name) for name in PAPER_WIDGETS)):
        st.session_state[PAPER_PRESET] = False  # a widget was changed: an ordinary race again
        return {}
    st.caption(f"Paper (micro) preset: the paper's protocol (the x{PAPER_MICRO.factor} clone and random init share "
               "every setting: the paper's recipe) on `micro-gpt2-stdlib`, 20 tokens per wide parameter on "
               f"`{PAPER_MICRO.data}`, the settings of `hyperclone reproduce`'s runs; the estimate below times it here.")
    if key.source != PAPER_MICRO.source or key.growth.factor != PAPER_MICRO.factor:
        st.warning(f"The paper (micro) preset is meant for `{PAPER_MICRO.source}` at factor x{PAPER_MICRO.factor}, "
                   f"but the sidebar holds `{key.source}` at x{key.growth.factor}: pick {PAPER_MICRO.source} "
                   f"(Built-in, factor {PAPER_MICRO.factor}) in the sidebar, or Start races the sidebar's model "
                   "with these settings.", icon=":material/warning:")
    return {name: getattr(PAPER_MICRO, name) for name in PAPER_EXTRAS}


def race_warmup(steps: int) -> int:
    """The race's warm-up: the library's default (the recipe sweep's), at most a fifth of a short race."""
    return min(RaceConfig.warmup, steps // 5)


def show_race(key: CloneKey) -> None:
    """Live races of the sidebar's source, or the recorded long races shipped with HyperClone."""
    mode = st.radio("Races", ["Live", "Recorded races"], horizontal=True, key="race_mode", label_visibility="collapsed",
                    help="Live: train here and watch. Recorded races: long runs shipped with HyperClone "
                         "(recorded earlier on the machine each one names, not trained now)")
    if mode == "Live":
        show_live_race(key)
    else:
        show_recorded_races()


def show_recorded_races() -> None:
    """The paper's experiment at micro scale (the shipped ``hyperclone reproduce`` report), then the shipped
    recorded races (the head-start story): pick one, see how it was made, and its curves and speed-ups."""
    show_paper_report()
    st.markdown("#### The head-start story: short recorded races")
    st.caption("Short races in which random init never gets down to the clone's starting loss: they show the head "
               "start the source gives the clone, not the paper's speed-up (b), which needs random init to reach "
               "its final loss.")
    recorded = recorded_races()
    note_left_out(recorded.skipped, "recorded race")
    if not recorded:
        st.info(f"No recorded races in this installation ({RUNS_DIR}); benchmarks/record_races.py records them.")
        return
    by_name = {r.name: r for r in recorded}
    race_record = by_name[st.selectbox("Recorded race", list(by_name), key="race_recorded",
                                       format_func=lambda n: by_name[n].label)]
    st.warning(f"**Recorded, not live**: trained on {race_record.date} on {race_record.machine}. "
               f"Command: `{race_record.command}`", icon=":material/history:")
    show_run(race_record.path, st.session_state.get("race_logx", False), running=False, key="recorded")


def show_paper_report() -> None:
    """The paper's experiment at micro scale, from the shipped report: how it was made (recorded, not live), its
    summary sentence, its figure and (folded) its tables; a missing or damaged report is one line."""
    try:
        report = paper_report_of(shipped_reports())
    except HyperCloneError as e:
        st.warning(f"The paper's experiment at micro scale is not shown: {error_line(e, 'reading its report')}",
                   icon=":material/warning:")
        return
    if report is None:
        return
    st.markdown("#### The paper at micro scale")
    st.warning(f"**Recorded, not live**: `hyperclone reproduce`, {paper_origin(report)}", icon=":material/history:")
    st.markdown(report["summary"])
    try:
        st.plotly_chart(paper_figure(report), key="paper_figure", width="stretch")
        st.caption("Speed-up (b) = random init's total tokens ÷ the tokens the clone needs to reach random init's "
                   "final loss. Right: a filled point is measured; an open triangle is only a bound (the target was "
                   "not reached within the run), not a measurement.")
        with st.expander("The report's tables: horizons, learning-rate sweep, seeds, variants, the claim"):
            st.markdown(report_text(report))
    except (KeyError, TypeError, ValueError, IndexError) as e:  # a report with a section of the wrong shape
        st.warning(f"The paper report's figure cannot be drawn ({type(e).__name__}: {' '.join(str(e).split())[:80]}); "
                   "make it again with hyperclone reproduce", icon=":material/warning:")


def show_live_race(key: CloneKey) -> None:
    """Start, stop and watch races of the sidebar's source, grown with the sidebar's settings."""
    st.markdown("Train the contestants on the same batches with the same optimizer and schedule, and compare "
                "their validation loss. Clones use the growth settings in the sidebar (factor, SNR, seed).")
    settings, recipe_error = pick_race_settings(key)
    show_estimate(key, settings, recipe_error)
    queue, owner = shared_queue(), owner_id()
    job = queue.latest(owner)
    mine_active = job is not None and job.active
    b1, b2, b3 = st.columns([1, 1, 4])
    teacher = is_teacher_page()
    if b1.button("Start race", type="primary", key="race_start", help=None if teacher else ONLY_TEACHER_RACES,
                 disabled=mine_active or not settings["contestants"] or bool(recipe_error) or not teacher):
        try:
            job = start_race(key, queue, owner, settings)
            mine_active = True
        except Exception as e:  # noqa: BLE001
            show_error(e, "starting the race")
    if b2.button("Stop", key="race_stop", disabled=not mine_active, help="stops your own race only"):
        queue.stop(job, by=owner)
        st.toast("Stopping after the current step…")
    log_x = b3.checkbox("log-scale tokens", key="race_logx")
    if not teacher:
        st.caption(ONLY_TEACHER_RACES)
    teacher_stop_button(queue, owner, "race_stop_any")

    # Polls also while no race trains, so a page follows one race after another (watched live by every page,
    # not only the one that started it); only the page whose own race ended reruns in full (its buttons).
    @st.fragment(run_every=1.0)
    def board() -> None:
        active = job is not None and job.active
        running = queue.running()
        if mine_active and not active:
            st.rerun()  # this page's race has ended: redraw the whole page (Start and Stop)
        if job is not None and job.error:
            st.error(job.error, icon=":material/error:")
        ahead = queue.position(job) if active else 0
        if ahead:
            st.info(f"Your race is queued: {ahead} race(s) ahead of it (one trains at a time on this server).",
                    icon=":material/hourglass_top:")
        live = str(running.run_dir) if running is not None else None
        runs = [str(p) for p in past_runs()]
        if live and live not in runs:
            st.info("Preparing the race: reading the corpus (tokenised once, then cached) and building the "
                    "contestants…", icon=":material/hourglass_top:")
        elif not runs:
            if not active:
                start = "press **Start race**" if teacher else "only the teacher starts races on this server"
                st.info(f"No races yet: {start}. Runs are saved in `{runs_dir()}` (`$HYPERCLONE_RUNS`, else "
                        "`runs/` where the dashboard was started) and listed here, also after a reload or in another "
                        "tab.")
        else:
            view = live if live in runs else st.session_state.get("race_view")
            chosen = st.selectbox("Run", runs, index=runs.index(view) if view in runs else 0,
                                  format_func=lambda p: ("● live · " if p == live else "") + run_label(Path(p)),
                                  help=f"saved in {runs_dir()}")
            show_run(Path(chosen), log_x, running=chosen == live)

    board()


def start_race(key: CloneKey, queue, owner: str, settings: dict[str, Any]):
    """Queue a race of ``key``'s source and growth with ``settings``; its job (a one-line error if refused)."""
    require_teacher("starting a race")
    _, tokenizer = source_of(key)
    if tokenizer is None:
        raise HyperCloneError("this checkpoint has no tokenizer, so it cannot read the corpus; "
                              "race a built-in model or a checkpoint saved with its tokenizer")
    g = key.growth
    run_dir = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(key.source)}-x{g.factor}"
    kwargs = dict(settings, **growth_settings(g), tokenizer=tokenizer,
                  device=None if key.device == "auto" else key.device)
    job = queue.submit(owner, run_dir, lambda stop: race(key.source, run_dir=run_dir, stop_event=stop, **kwargs))
    st.session_state.race_view = str(run_dir)
    return job


def show_estimate(key: CloneKey, settings: dict[str, Any], problem: str | None = None) -> None:
    """How long the race will take here (from small steps timed at most a minute ago, and again as Start is
    pressed), the time left of the race training now, and a preset that fits a lecture; nothing is timed for
    settings the race would refuse (``problem``, shown above)."""
    c1, c2 = st.columns([4, 1])
    n, steps = len(settings["contestants"]), settings["steps"]
    try:
        if not problem:
            starting = bool(st.session_state.get("race_start"))  # Start was pressed: time it again, now
            timings = (step_timings if starting else step_seconds_of)(key, settings["batch_size"], settings["seq_len"])
            words = estimate_from(timings, n, steps, settings["eval_every"]).words()
            c1.caption(f"Estimated time: {words}; {n} contestants x {steps} steps.")
            if starting:
                st.session_state["race_estimate"] = words
    except Exception as e:  # noqa: BLE001 - an estimate that fails must not block the race
        c1.caption(f"No time estimate: {error_line(e, 'timing a step')}")
    c2.button("Quick preset", key="race_quick", on_click=use_quick_preset,
              help=f"{QUICK.steps} steps of {QUICK.batch_size}x{QUICK.seq_len} tokens: fits a lecture")
    c2.button("Paper (micro) preset", key="race_paper", on_click=use_paper_preset,
              help=f"the paper's protocol on {PAPER_MICRO.source}: {', '.join(PAPER_MICRO.contestants)} with one "
                   f"shared recipe, {PAPER_MICRO.steps} steps of {PAPER_MICRO.batch_size}x{PAPER_MICRO.seq_len} "
                   "tokens (20 tokens per wide parameter); the estimate beside it times it here")
    with c1:
        race_clock()


@st.fragment(run_every=2.0)
def race_clock() -> None:
    """The time left of the race training on this server, at the pace measured so far (redrawn as its records
    arrive); beside it, for the page that started it, the estimate made at its start."""
    running = shared_queue().running()
    if running is None or not is_run_dir(running.run_dir):
        return
    try:
        left = remaining_words(shared_result(running.run_dir), time.time())
    except HyperCloneError:  # a log being written can be read again at the next tick
        return
    mine = running.owner == owner_id() and st.session_state.get("race_estimate")
    st.caption(f"Race training now: {left}" + (f"; estimated at its start: {mine}" if mine else "") + ".")


@st.cache_data(ttl=60, max_entries=32, show_spinner="Timing a few training steps…")
def step_seconds_of(key: CloneKey, batch: int, seq_len: int) -> list[float]:
    """``step_timings``, timed at most a minute ago (at the load of now, not of the server's start)."""
    return step_timings(key, batch, seq_len)


def step_timings(key: CloneKey, batch: int, seq_len: int) -> list[float]:
    """Seconds of a few training steps of the wide model at this batch, timed now (``time_steps``)."""
    source, _ = source_of(key)
    return lesson.time_steps(source, key.growth, batch, seq_len)


def use_quick_preset() -> None:
    st.session_state[PAPER_PRESET] = False
    for name in ("steps", "batch_size", "seq_len", "eval_every"):
        st.session_state[RACE_WIDGETS[name]] = getattr(QUICK, name)


def use_paper_preset() -> None:
    """Fill the race widgets from PAPER_MICRO: its contestants with the paper's recipe (one shared lr), its steps,
    batch, sequence, lr and evaluation; its settings without a widget follow while these stay (``PAPER_EXTRAS``)."""
    state = st.session_state
    specs = [ContestantSpec.parse(name) for name in PAPER_MICRO.contestants]
    state["race_contestants"] = [spec.kind for spec in specs]
    state["race_recipe"] = specs[0].recipe
    state["race_clone_lr"] = state["race_random_lr"] = None
    state["race_more"] = ""
    for name in PAPER_WIDGETS:
        state[RACE_WIDGETS[name]] = getattr(PAPER_MICRO, name)
    state[PAPER_PRESET] = True


def loss_with_speedups(result, log_x: bool):
    """The loss curves with the clones' speed-ups (definition a) marked: one figure per state of the run's log."""
    return loss_figure(result, log_x=log_x, speedups=[s for s in result.speedups() if s.definition == "a"])


def show_run(run_dir: Path, log_x: bool, running: bool, key: str = "race") -> None:
    """Curves, symmetry, speed-up and table of one run, read from its directory (``key``: its charts' prefix)."""
    try:
        result = shared_result(run_dir)
    except HyperCloneError as e:
        show_error(e, "reading the run")
        return
    steps = int(result.config.get("steps") or 1)
    done = min((result.final(n) or {"step": 0})["step"] for n in result.contestants)
    if running:  # contestants train in turn, an interval each: say where each one is, not only the slowest
        at = {n: (result.final(n) or {"step": 0})["step"] for n in result.contestants}
        st.progress(min(1.0, sum(at.values()) / (steps * len(at))),
                    "training… " + ", ".join(f"{n} at step {s}" for n, s in at.items()) + f" of {steps}")
    elif result.complete:
        st.success(f"Race finished: {len(result.contestants)} contestants, {result.config.get('steps')} steps "
                   f"({', '.join(result.contestants)}).", icon=":material/sports_score:")
    else:
        states = {n: result.status(n) for n in result.contestants}
        failed = next((m for s, m in states.values() if s == "failed"), None)
        if failed:
            st.error(f"The race failed: {' '.join(failed.split())}", icon=":material/error:")
        elif any(s == "stopped" for s, _ in states.values()):
            st.info(f"Race stopped at step {done} of {steps}; the curves show what was recorded.",
                    icon=":material/stop_circle:")
        else:
            st.info("This run did not finish (the server ended while it trained); the curves show what was "
                    "recorded.", icon=":material/info:")
    for n in result.contestants:
        status, message = result.status(n)
        if status == "diverged":
            st.warning(f"{n} diverged: {message}", icon=":material/warning:")
    if not result.records:
        st.caption("Waiting for the first evaluation…")
        return
    readouts = [r for r in result.readouts() if r.tokens > 0]
    if readouts:
        cols = st.columns(len(readouts))
        for col, r in zip(cols, readouts):
            col.metric(f"{r.contestant} vs {r.baseline}, at equal tokens",
                       f"{r.baseline_loss - r.loss:+.2f} nats", help=r.words)
        st.markdown("  \n".join(f"**{r.contestant}**: {r.words}." for r in readouts))
        st.caption("Read-out at equal tokens: each pair is compared only over the tokens both have trained "
                   "(+ means random init is behind). Speed-ups both ways are in the table below.")
    left, right = st.columns([3, 2])
    left.plotly_chart(shared_figure(loss_with_speedups, run_dir, log_x=log_x), key=f"{key}_loss", width="stretch")
    if any(r.get("symmetry") is not None for r in result.records):
        right.plotly_chart(shared_figure(symmetry_figure, run_dir, log_x=log_x), key=f"{key}_symmetry",
                           width="stretch")
    if readouts:
        st.plotly_chart(shared_figure(horizon_figure, run_dir), key=f"{key}_horizon", width="stretch")
        st.caption("Speed-up against horizon: solid (a) at each evaluation of a clone, dashed (b) at each of "
                   "random init's. An open circle: the clone was not below its own start there, so the ratio "
                   "is the source's head start, not faster learning; an open triangle: a bound (not reached).")
    st.caption("Learning rates: " + " · ".join(line.strip() for line in recipe_lines(result)[2:]))
    with st.expander("Table, speed-ups both ways, fairness"):
        st.code(result.table(), language=None)
        st.caption(result.fairness)
