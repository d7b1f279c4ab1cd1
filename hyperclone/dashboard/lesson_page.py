"""The guided lesson: five chapters, one idea each, one live figure each, Back and Next.

Every figure comes from the ``hyperclone`` package (``lesson``, ``heatmaps``, ``plots``,
``verify``, ``compare``); this file only lays them out. The view lives in the URL
(``?chapter=3&factor=2&variant=symmetric...``), so a copied link reopens it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import streamlit as st

from hyperclone.dashboard.common import (apply_presenter_style, error_line, growth_from_params, growth_params, owner_id, past_runs,
                              query_link, runs_dir, write_params)
from hyperclone import clone, Growth, verify
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import VARIANT_HELP, VARIANTS
from hyperclone.core.resources import check_clone_fits
from hyperclone.io.sources import BUILTIN_NAMES
from hyperclone.training.config import growth_settings
from hyperclone.training.loop import race
from hyperclone.training.paper_report import CLAIM, PAPER_B, b_text, paper_b, seeds_text, shipped_reports
from hyperclone.training.recorded import recorded_races, RecordedRace
from hyperclone.training.results import RaceResult
from hyperclone.training.report import result_sentence
from hyperclone.training.runs import is_run_dir
from hyperclone.views.compare import encode, greedy, logits_pair
from hyperclone.views.heatmaps import clone_heatmaps
from hyperclone.views.paper_figure import paper_figure
from hyperclone.views.plots import layer_diff_bars, logit_scatter, loss_figure, symmetry_figure
from hyperclone.teach.classroom import shared_queue
from hyperclone.teach.lesson import (PAPER_MICRO, QUICK, copies_agree, estimate_race, hidden_vectors,
                                     remaining_words, vector_figure)
from hyperclone.dashboard.common import (LESSON_LIMITS, ONLY_TEACHER_RACES, SWITCHES, check_growth_limits,
                                         is_teacher_page, link_choice, link_run, link_source, note_left_out,
                                         paper_origin, paper_report_of, require_teacher, safe_name,
                                         shared_figure, shared_result, shared_source, teacher_stop_button)

TEXT = "import os\n\n\ndef read_config(path):\n"
TITLES = (
    "1 · A vector becomes [x, x]",
    "2 · A layer becomes a grid of blocks",
    "3 · The whole model, the same logits",
    "4 · The race",
    "5 · Why the copies must drift apart",
)


def lesson_source(name: str):
    """The built-in model on the CPU: the same cached copy the explorer uses (one per server)."""
    return shared_source(name, "cpu")


@st.cache_resource(max_entries=8, show_spinner="Cloning…")
def lesson_clone(name: str, growth: Growth):
    """The clone the lesson shows, checked first as its controls check theirs (ranges, free memory)."""
    source = lesson_source(name)[0]
    check_clone_fits(source, check_growth_limits(growth, LESSON_LIMITS))
    return clone(source, growth=growth)


@st.cache_resource(max_entries=8, show_spinner="Checking the logits…")
def lesson_report(name: str, growth: Growth):
    source, tokenizer = lesson_source(name)
    return verify(source, lesson_clone(name, growth), input_ids=encode(tokenizer, TEXT, source.config))


def presenting() -> bool:
    return bool(st.session_state.get("presenter"))


def show(fig, key: str, height: int | None = None, where=st) -> None:
    """Draw a figure; in presenter view with large text everywhere (titles and ticks too, no Streamlit theme)."""
    style(fig, height, presenting())
    draw(fig, key, where)


def draw(fig, key: str, where=st) -> None:
    """Draw a figure already styled (``style``) for this page's view; ``fig`` is not changed (it may be shared)."""
    where.plotly_chart(fig, key=key, width="stretch", theme=None if presenting() else "streamlit")


def style(fig, height: int | None, presenter: bool):
    """``fig`` with the page's height, and in presenter view large text (Streamlit's chart theme keeps its own small
    fonts: drawn without it, with room for large ticks)."""
    if height:
        fig.update_layout(height=height)
    if presenter:
        fig.update_layout(font=dict(size=18), title_font_size=20, template="plotly_white",
                          margin=dict(l=90, r=30, t=100, b=80))
        fig.update_annotations(font_size=16)
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)
    return fig


def styled(result: RaceResult, build, height: int | None, presenter: bool):
    """``build(result)`` styled for a page: what ``shared_figure`` builds once for every page in the same view."""
    return style(build(result), height, presenter)


def chapter_vector(name: str, growth: Growth) -> None:
    st.markdown("Inside the model, every token is a vector of numbers: the *residual stream*. HyperCloning makes "
                "the wide model carry **the same vector, repeated**: where the small model holds x, the clone "
                f"holds [x, x] (for factor {growth.factor}: {growth.factor} copies). If that stays true after "
                "every layer, the wide model computes exactly what the small one did.")
    source, tokenizer = lesson_source(name)
    ids = encode(tokenizer, TEXT, source.config)
    x, x_wide = hidden_vectors(source, lesson_clone(name, growth), ids)
    show(vector_figure(x, x_wide, growth.factor), "lesson_vector", 330)
    st.caption(f"Largest difference between x and any of its copies: {copies_agree(x, x_wide, growth.factor):.1e} "
               "(float32 rounding; the colours are the same number).")


def chapter_layer(name: str, growth: Growth) -> Growth:
    st.markdown("A linear layer computes y = W x. Fed [x, x], the wide matrix must give [y, y]: so it is a grid "
                "of blocks, and **each row of blocks sums to W**. *Symmetric* puts W/n in every block; "
                "*diagonal* puts W on the diagonal; the *noisy* variants add noise that cancels along each row.")
    c1, c2 = st.columns([1, 3])
    factor = c1.slider("Factor n", *LESSON_LIMITS["factor"], growth.factor, key="lesson_factor")
    variant = c2.radio("Variant", VARIANTS, index=VARIANTS.index(growth.variant), key="lesson_variant",
                       horizontal=True, captions=None)
    growth = Growth(factor, None, variant, growth.snr_db, growth.seed)
    st.caption(VARIANT_HELP[variant])
    source, _ = lesson_source(name)
    tensor = next(n for n, t in source.state_dict().items() if t.dim() == 2 and ".0." in n and "mlp" in n)
    show(clone_heatmaps(source, lesson_clone(name, growth), tensor, factor, max_side=96), "lesson_heatmap", 470)
    st.caption(f"`{tensor}` of layer 0: the source, the clone with its block grid, and one row of blocks summed "
               "(it equals W).")
    return growth


def chapter_model(name: str, growth: Growth) -> None:
    st.markdown("Now every weight of the built-in model grows by the same rules. Run both models on the same "
                "text: the wide model's logits match the small model's, layer after layer, and so does the text "
                "it writes.")
    source, tokenizer = lesson_source(name)
    wide = lesson_clone(name, growth)
    report = lesson_report(name, growth)
    verdict = "match" if report.passed else "DO NOT match"
    st.markdown(f"**The logits {verdict}**: largest relative difference {report.max_rel_diff:.1e} (tolerance "
                f"{report.tolerance:g}), top-1 agreement {report.top1_agreement:.0%}, "
                f"{source.num_parameters() / 1e6:.2f}M → {wide.num_parameters() / 1e6:.2f}M parameters.")
    ids = encode(tokenizer, TEXT, source.config)
    left, right = st.columns(2)
    height = 600 if presenting() else 420  # presenter view at 1920x1080: the figures fill the screen below the text
    for col, fig, key in ((left, logit_scatter(*logits_pair(source, wide, ids)), "lesson_scatter"),
                          (right, layer_diff_bars(report), "lesson_bars")):
        show(fig, key, height, col)
    a, b = greedy(source, tokenizer, ids, 16), greedy(wide, tokenizer, ids, 16)
    st.markdown(f"Greedy continuation: source `{a!r}` · clone `{b!r}` ({'identical' if a == b else 'different'})")


def recorded_runs(shipped: list[RecordedRace] | None = None) -> dict[str, Path]:
    """Races to show before a live one, by the name a link keeps: the long races shipped with HyperClone
    (``recorded/NAME``; ``shipped``: as ``recorded_races()`` read them), then this server's finished runs,
    longest first."""
    finished = []
    for path in past_runs():
        try:
            result = shared_result(path)  # read once per state of its log, for every page
        except HyperCloneError:
            continue
        if result.complete and result.records:
            finished.append((int(result.config.get("steps") or 0), path.name, path))
    return {**{f"recorded/{r.name}": r.path for r in (recorded_races() if shipped is None else shipped)},
            **{p.name: p for _, _, p in sorted(finished, reverse=True)}}


def chapter_race(name: str, growth: Growth) -> None:
    st.markdown("A head start is only useful if it lasts. Train the clone and the same wide model from random "
                "init on **the same batches** with the same optimizer, and compare their validation loss at equal "
                "tokens. First the paper's own experiment, recorded at micro scale; then short recorded races (the "
                "head start); then a live race that shows it happening.")
    paper_section()
    st.markdown("**The head-start story.** The recorded races below are short: random init never gets down to the "
                "clone's starting loss, so they show the head start the source gives the clone, not the paper's "
                "speed-up (b).")
    shipped = recorded_races()
    note_left_out(shipped.skipped, "recorded race")
    labels = {f"recorded/{r.name}": f"{r.label} (recorded on {r.machine}, not live)" for r in shipped}
    runs = recorded_runs(shipped)
    names = list(runs)
    chosen = st.session_state.get("lesson_run", st.query_params.get("run"))
    if runs:
        pick = st.selectbox("Recorded race", names, index=names.index(chosen) if chosen in names else 0,
                            key="lesson_run", format_func=lambda n: labels.get(n, f"this server · {n}"))
        show_curves(runs[pick], "lesson_recorded")
    else:
        start = "start the quick race below" if is_teacher_page() else "the teacher can start the quick race below"
        st.info(f"No recorded race on this server yet: {start}; it is kept for next time.")
    live_race(name, growth)


def paper_section() -> None:
    """The paper's experiment at micro scale, from the shipped ``hyperclone reproduce`` report: a paragraph made
    from its numbers, then its figure (nothing when none ships; one line when it cannot be read)."""
    try:
        report = paper_report_of(shipped_reports())
        if report is None:
            return
        words = paper_words(report)
        figure = paper_figure(report)
    except (HyperCloneError, KeyError, TypeError, ValueError, IndexError, StopIteration) as e:
        st.warning(f"The paper's experiment at micro scale is not shown: {error_line(e, 'reading its report')}",
                   icon=":material/warning:")
        return
    st.markdown(words)
    show(figure, "lesson_paper", 460)
    st.caption("Left: validation loss against tokens per wide parameter, the clone solid, random init dashed, one "
               "colour per budget. Right: (b) at each budget; a filled point is measured, an open triangle only a "
               f"bound (the target was not reached), not a measurement. Recorded, not live: {paper_origin(report)}")


def paper_words(report: dict) -> str:
    """What the paper report shows, made from its numbers: what (b) is, where it was measured and where it is only
    a bound, the seeds' mean ± sd, and whether the paper's claim holds here."""
    sections = report["horizons"]
    b_at = {s["horizon"]: paper_b(s) for s in sections}
    measured = [f"{h:g} ({b_text(b)})" for h, b in b_at.items() if b["measured"]]
    bounds = [f"{h:g} ({b_text(b)})" for h, b in b_at.items() if not b["measured"] and b["bound"]]
    unmeasured = [f"{h:g} ({b_text(b)})" for h, b in b_at.items() if not b["measured"] and not b["bound"]]
    where = "; ".join([f"(b) was measured at {', '.join(measured) or 'no budget'}"]
                      + [f"at {', '.join(bounds)} it is only a bound (the target was not reached), not a measurement"]
                      * bool(bounds) + [f"at {', '.join(unmeasured)} it could not be measured"] * bool(unmeasured))
    seeds = report["seeds"]
    spread = seeds_text(seeds)
    c = report["claim"]
    verdicts = [f"{'met' if part['met'] else 'missed'} at {part['horizon']:g}"
                for part in (c["at_sweep"], c["at_longest"])]
    budgets = ", ".join(f"{h:g}" for h in b_at)
    config = report["config"]
    return (f"**The paper at micro scale** (arXiv 2409.12903; recorded, not live). A {config.get('factor', 2)}x clone "
            f"of `{config.get('source', 'the source')}` and the same wide model from random init train with identical "
            f"settings for budgets of {budgets} tokens per wide parameter. Speed-up **(b)** = random init's tokens ÷ "
            f"the tokens the clone needs to reach random init's final loss. {where}. Over seeds at "
            f"{seeds['horizon']:g} tokens per parameter: {spread}. The paper's claim, (b) ≥ {CLAIM:g}x (it reports "
            f"{PAPER_B[0]}-{PAPER_B[1]:g}x on far longer runs), is {' and '.join(verdicts)}.")


BOARD_SECONDS = 3.0  # how often a lesson page looks for a new state of the race it shows (also when none trains)


def live_race(name: str, growth: Growth) -> None:
    """Start (or stop) this page's quick race; watch it, or the race training on this server for another page.

    The board polls every ``BOARD_SECONDS`` whether or not a race trains, so a page follows one race after another
    and redraws inside its fragment; only the page whose own race ended reruns in full (its list of races)."""
    queue, owner = shared_queue(), owner_id()
    mine = queue.latest(owner)
    mine_active = mine is not None and mine.active
    estimate = functools.cache(lambda: estimate_text(name, growth))  # once a full run, not every board tick
    paper_estimate = functools.cache(paper_estimate_words)

    @st.fragment(run_every=BOARD_SECONDS)
    def board() -> None:
        job = queue.latest(owner)
        if mine_active and not job.active:
            st.rerun()  # this page's own race has ended: redraw the page (its finished race joins the list)
        race_controls(name, growth, queue, owner, job, estimate, paper_estimate)
        running = queue.running()
        shown = job if job is not None and (job.active or running is None) else running
        if shown is not None and is_run_dir(shown.run_dir):
            st.markdown("**Your race**" if shown.owner == owner else "**Live on this server** (started from another "
                        "page)")
            show_curves(shown.run_dir, "lesson_live")

    board()


def race_controls(name: str, growth: Growth, queue, owner: str, job, estimate=None, paper_estimate=None) -> None:
    """Start (the teacher's) the quick race or the paper's (micro), or Stop, what the race is doing, the teacher's
    stop-any, and the race's error (``estimate``, ``paper_estimate``: the estimates' words, when the caller keeps
    them; else ``estimate_text``, ``paper_estimate_words``)."""
    c1, c2 = st.columns([1, 3])
    if job is None or not job.active:
        teacher = is_teacher_page()
        if c1.button("Start the quick race", key="lesson_race_start", type="primary", disabled=not teacher,
                     help=None if teacher else ONLY_TEACHER_RACES):
            time_at_start(name, growth)  # re-timed now, at the load the race starts under
            start_quick_race(name, growth, queue, owner)
            st.rerun()
        words = estimate() if estimate else estimate_text(name, growth)
        c2.caption(f"{len(QUICK.contestants)} contestants ({', '.join(QUICK.contestants)}), {QUICK.steps} steps of "
                   f"{QUICK.batch_size}×{QUICK.seq_len} tokens: {words}.")
        paper_controls(queue, owner, teacher, paper_estimate or paper_estimate_words)
        if not teacher:
            st.caption(ONLY_TEACHER_RACES)
    else:
        if c1.button("Stop", key="lesson_race_stop"):
            queue.stop(job, by=owner)
        with c2:
            race_clock(job, queue)  # the time left, at the pace measured so far
    teacher_stop_button(queue, owner, "lesson_stop_any")
    if job is not None and job.error:
        st.error(job.error, icon=":material/error:")


@st.cache_data(ttl=60, max_entries=16, show_spinner="Timing a few training steps…")
def estimate_text(name: str, growth: Growth) -> str:
    """The quick race's time here, timed at most a minute ago (at the load of now, not of the server's start);
    pressing Start times it again (``time_at_start``)."""
    return quick_estimate(name, growth)


def quick_estimate(name: str, growth: Growth) -> str:
    """The quick race's time here, in words, from a few training steps timed now (``estimate_race``)."""
    return estimate_race(lesson_source(name)[0], growth, len(QUICK.contestants), QUICK.steps, QUICK.batch_size,
                         QUICK.seq_len, QUICK.eval_every).words()


def paper_controls(queue, owner: str, teacher: bool, estimate) -> None:
    """The "Reproduce the paper (micro)" preset: PAPER_MICRO on its micro source through the same queue (one race at
    a time on the server, the teacher's to start), with its time estimate shown before it starts."""
    c1, c2 = st.columns([1, 3])
    if c1.button("Reproduce the paper (micro)", key="lesson_paper_start", disabled=not teacher,
                 help=None if teacher else ONLY_TEACHER_RACES):
        st.session_state["lesson_estimate"] = paper_estimate_words(timed_now=True)
        start_paper_race(queue, owner)
        st.rerun()
    cfg = PAPER_MICRO
    c2.caption(f"The paper's protocol live on `{cfg.source}`: {', '.join(cfg.contestants)} with one shared recipe, "
               f"{cfg.steps} steps of {cfg.batch_size}×{cfg.seq_len} tokens (20 tokens per wide parameter, "
               f"`{cfg.data}`): {estimate()}.")


@st.cache_data(ttl=60, max_entries=4, show_spinner="Timing a few training steps of the paper's race…")
def paper_estimate_text() -> str:
    """The paper (micro) race's time here, timed at most a minute ago; pressing its button times it again."""
    return paper_estimate()


def paper_estimate() -> str:
    """The paper (micro) race's time here, in words, from a few steps of its wide model timed now."""
    cfg = PAPER_MICRO
    return estimate_race(lesson_source(cfg.source)[0], cfg.growth(), len(cfg.contestants), cfg.steps,
                         cfg.batch_size, cfg.seq_len, cfg.eval_every).words()


def paper_estimate_words(timed_now: bool = False) -> str:
    """``paper_estimate_text`` (or, ``timed_now``, timed again now); an estimate that fails says so in words and
    never blocks the race."""
    try:
        return paper_estimate() if timed_now else paper_estimate_text()
    except Exception as e:  # noqa: BLE001 - an estimate that fails must not block the race
        return f"no estimate ({error_line(e, 'timing a step')})"


def start_paper_race(queue, owner: str) -> None:
    """Queue PAPER_MICRO on its own source (its settings as they are: the paper's x2 clone, not the lesson's growth)."""
    require_teacher("starting a race")
    source, (_, tokenizer) = PAPER_MICRO.source, lesson_source(PAPER_MICRO.source)
    run_dir = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-lesson-paper-{safe_name(source)}-{owner[:6]}"
    queue.submit(owner, run_dir, lambda stop: race(source, PAPER_MICRO, tokenizer=tokenizer, run_dir=run_dir,
                                                   stop_event=stop, device="cpu"))


def time_at_start(name: str, growth: Growth) -> None:
    """Time the quick race again as it starts, kept for the page to show beside the remaining time."""
    try:
        st.session_state["lesson_estimate"] = quick_estimate(name, growth)
    except Exception as e:  # noqa: BLE001 - an estimate that fails must not block the race
        st.session_state["lesson_estimate"] = f"no estimate ({error_line(e, 'timing a step')})"


def race_clock(job, queue) -> None:
    """While this page's race waits or trains: its place in the queue, or the time left at the pace measured so far
    (the board redraws it as the records arrive), beside the estimate made when it started."""
    ahead = queue.position(job)
    if ahead:
        st.caption(f"waiting: {ahead} race(s) ahead of yours")
        return
    try:
        ready = is_run_dir(job.run_dir)
        left = remaining_words(shared_result(job.run_dir), time.time()) if ready else "preparing the race"
    except HyperCloneError:  # a log being written can be read again at the next tick
        left = "reading the race's log"
    estimate = st.session_state.get("lesson_estimate")
    st.caption(f"training… {left}" + (f"; estimated at the start: {estimate}" if estimate else ""))


def start_quick_race(name: str, growth: Growth, queue, owner: str) -> None:
    require_teacher("starting a race")
    source, tokenizer = lesson_source(name)
    run_dir = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-lesson-{name}-x{growth.factor}-{owner[:6]}"
    settings = growth_settings(growth)
    queue.submit(owner, run_dir, lambda stop: race(name, QUICK, tokenizer=tokenizer, run_dir=run_dir, stop_event=stop,
                                                   device="cpu", **settings))


def readable_run(path: Path) -> RaceResult | None:
    """The race logged in ``path``; None, with one line on the page, when its log cannot be read (damaged since it
    was listed)."""
    try:
        return shared_result(path)
    except HyperCloneError as e:
        st.warning(error_line(e, "reading a race"), icon=":material/warning:")
        return None


def show_curves(path: Path, key: str) -> None:
    """The loss and symmetry curves of the race logged in ``path``: figures built once per state of its log and view,
    shared by every page (a class watching one race costs one figure per evaluation, not one per page)."""
    result = readable_run(path)
    if result is None:
        return
    left, right = st.columns([3, 2])
    view = dict(height=380, presenter=presenting())
    draw(shared_figure(styled, path, build=loss_figure, **view), f"{key}_loss", left)
    if any(r.get("symmetry") is not None for r in result.records):
        draw(shared_figure(styled, path, build=symmetry_figure, **view), f"{key}_symmetry", right)
    st.caption(f"{Path(result.run_dir).name if result.run_dir else 'run'}: {result.config.get('steps')} steps, "
               f"contestants {', '.join(result.contestants)}.")
    sentence = result_sentence(result)
    if sentence:
        st.markdown(sentence)


def chapter_symmetry(name: str, growth: Growth) -> None:
    st.markdown("An exact symmetric clone has a catch: every copy of a unit gets **the same gradient**, so the "
                "copies stay identical forever and the wide model can only ever compute what the small one could. "
                "The copies must drift apart. Noise that cancels along each row of blocks (the *noisy* variants) "
                "keeps the logits and breaks the tie. The curve shows how alike the copies stay during the race "
                "(1 = identical).")
    job = shared_queue().latest(owner_id())
    own = readable_run(job.run_dir) if job is not None and is_run_dir(job.run_dir) else None
    panels = []  # (race, title, words): the recorded race that shows the drift, then this page's own race
    recorded = symmetry_race()
    if recorded is not None:
        race_, result = recorded
        panels.append((result, "Copies' symmetry: recorded race", symmetry_words(result) + f" Recorded, not live: "
                       f"{race_.title}, {race_.date}, on {race_.machine}."))
    if own is None and not panels:  # no race with both: this server's longest finished race, as before
        runs = list(recorded_runs().values())[:1]
        own = readable_run(runs[0]) if runs else None
    if own is not None and any(r.get("symmetry") is not None for r in own.records):
        panels.append((own, "Copies' symmetry: " + ("your quick race" if job is not None else "a finished race"),
                       symmetry_words(own)))
    if not panels:
        st.info("Run the quick race in chapter 4 (it races symmetric against noisy_symmetric) to see the copies "
                "drift apart here.")
        return
    for i, (col, (result, title, words)) in enumerate(zip(st.columns(len(panels)), panels)):
        show(symmetry_figure(result, title=title), "lesson_symmetry_curve" + ("" if i == 0 else f"_{i}"), 430, col)
        col.caption(words)


def symmetry_race():
    """The first shipped race with both symmetric and noisy_symmetric (chapter 5's point), loaded; None if none."""
    for r in recorded_races():
        try:
            result = r.load()
        except HyperCloneError:
            continue
        if {"symmetric", "noisy_symmetric"} <= {n.partition("@")[0] for n in result.contestants}:
            return r, result
    return None


def symmetry_words(result: RaceResult) -> str:
    """What the symmetry curves show, from the numbers: each clone's symmetry at the start and at the end."""
    parts = []
    for name in result.contestants:
        values = [(r["step"], r["symmetry"]) for r in result.records
                  if r["contestant"] == name and r.get("symmetry") is not None]
        if values:
            (start, a), (end, b) = min(values), max(values)
            parts.append(f"{name}: {a:.3f} at step {start}, {b:.3f} at step {end}")
    return "; ".join(parts) + "."


CHAPTERS = (chapter_vector, chapter_layer, chapter_model, chapter_race, chapter_symmetry)


def render() -> None:
    """The lesson page: the chapter in the URL, its figure, Back/Next, the presenter toggle and a link."""
    is_teacher_page()  # a ?token= is read once and leaves the address bar
    params = st.query_params
    try:
        (name, growth), refused = lesson_view(params), None
    except HyperCloneError as e:  # nothing the link asks for is built: one line, and the lesson's own settings
        (name, growth), refused = (BUILTIN_NAMES[0], Growth(2, None, "symmetric")), e
    chapter = chapter_in_url()
    top = st.columns([6, 1])
    presenter = top[1].toggle("Presenter", key="presenter", value=params.get("presenter") == "1")
    apply_presenter_style(presenter)
    top[0].subheader(TITLES[chapter - 1])
    if refused is not None:
        st.error(f"{error_line(refused, 'reading the link')}; nothing was built (the link now holds the lesson's own "
                 "settings: reload or press Back or Next)", icon=":material/error:")
    else:
        try:
            shown = CHAPTERS[chapter - 1](name, growth)
            growth = shown if isinstance(shown, Growth) else growth
        except Exception as e:  # noqa: BLE001 - one line, never a traceback
            st.error(error_line(e, "the lesson"), icon=":material/error:")
    nav = st.columns([1, 1, 6])
    nav[0].button("◀ Back", key="lesson_back", disabled=chapter == 1, on_click=step_chapter, args=(-1,))
    nav[1].button("Next ▶", key="lesson_next", disabled=chapter == 5, on_click=step_chapter, args=(1,))
    state = {"source": name, **growth_params(growth), "chapter": str(chapter),
             "presenter": "1" if presenter else None, "run": st.session_state.get("lesson_run")}
    write_params(state)
    if not presenter:
        with nav[2].popover("Link to this view"):
            st.code(query_link(state), language=None)


def lesson_view(params) -> tuple[str, Growth]:
    """The built-in model and growth a lesson link names, every parameter checked as the lesson's controls
    check theirs, before any work (the memory check comes with each clone); one line for the first bad one."""
    name = link_source(params) or BUILTIN_NAMES[0]
    growth = growth_from_params(params, LESSON_LIMITS)
    link_choice(params, "chapter", [str(c) for c in range(1, len(CHAPTERS) + 1)])
    link_choice(params, "presenter", SWITCHES)
    run = params.get("run")
    if run is not None and run not in {f"recorded/{r.name}" for r in recorded_races()}:
        link_run(run)
    return name, growth


def chapter_in_url() -> int:
    """The chapter the URL names, 1 to 5 (anything else: the nearest; not a number: 1)."""
    text = str(st.query_params.get("chapter", "1"))
    if not (text.isascii() and text.isdigit()):
        return 1
    return min(max(int(text) if len(text) < 5 else len(CHAPTERS), 1), len(CHAPTERS))


def step_chapter(step: int) -> None:
    """Back or Next, from the chapter the URL holds now (not the one a button was drawn in)."""
    st.query_params["chapter"] = str(min(max(chapter_in_url() + step, 1), len(CHAPTERS)))
