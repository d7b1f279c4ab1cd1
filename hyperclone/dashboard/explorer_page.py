"""The explorer page: pick a source model, grow it, look inside, check the logits, race it, export it.

Started by ``app.py`` (``streamlit run app.py``) or ``hyperclone serve``.

Thin by design: widgets and layout only; every computation is a call into the
``hyperclone`` package. Works offline on the built-in models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import pandas  # noqa: F401 - imported up front: plotly and Streamlit import it lazily, from more than one thread
import streamlit as st

from hyperclone import Growth
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.loop import race
from hyperclone.dashboard import lesson_page as lesson
from hyperclone.dashboard.export_tab import show_export
from hyperclone.dashboard.inspect_tabs import show_comparison, show_equivalence, show_heatmaps
from hyperclone.dashboard.race_tab import race_contestants, show_race
from hyperclone.dashboard.common import (GROWTH_URL, GROWTH_WIDGETS, shared_source, growth_from_params, growth_params, guard_cache_clearing, is_teacher_page,
                                         link_choice, link_run, link_source, query_link, require_teacher,
                                         write_params)
from hyperclone.dashboard.sources_panel import (DEFAULT_TEXT, CloneKey, device_problem, estimate,
                                                pick_device, pick_growth, pick_source, run_clone, show_error,
                                                show_source, source_of, verdict_of)


class Tab(NamedTuple):
    """A tab of the page: what it shows, and of which clone."""

    label: str
    show: Callable[[CloneKey], None]
    doing: str  # what a failure happened while doing, for its one-line error
    of_last_clone: bool  # True: the last clone made; False: the sidebar's settings (nothing cloned yet needed)


TABS = (
    Tab("Compare", show_comparison, "comparing the models", of_last_clone=True),
    Tab("Heatmaps", show_heatmaps, "drawing heatmaps", of_last_clone=True),
    Tab("Equivalence", show_equivalence, "checking equivalence", of_last_clone=True),
    Tab("Training race", show_race, "the training race", of_last_clone=False),
    Tab("Export", show_export, "exporting", of_last_clone=True),
)


# --------------------------------------------------------------------------- #
# Page
# --------------------------------------------------------------------------- #
# Widgets inside tabs: only the open tab runs, and Streamlit forgets the state of widgets that did not
# run; writing each back keeps the user's choices while another tab is open.
TAB_WIDGETS = ("tab", "check_text", "gen_tokens", "hm_layer", "hm_tensor", "hm_side", "race_contestants", "race_steps",
               "race_batch", "race_lr", "race_seq", "race_eval", "race_logx", "race_recipe", "race_random_lr",
               "race_clone_lr", "race_more", "race_mode", "race_recorded", "export_dir", "export_name",
               "export_overwrite")


def load_pending(pending: str, device: str, dtype: str) -> str | None:
    """Load the source the user just asked for: its name, or None when it failed (the error is shown once)."""
    try:
        require_teacher("loading a model that is not built in")
        with st.spinner(f"Loading {pending}…"):
            shared_source(pending, device, dtype)
    except Exception as e:  # noqa: BLE001 - a failed load is reported once; the last good source stays
        show_error(e, f"loading {pending}")
        return None
    st.session_state.remote_source = pending
    return pending


def show_source_and_size(key: CloneKey) -> bool | None:
    """The source's figures and the wide model's size: whether it fits, or None when the source did not load."""
    try:
        with st.spinner(f"Loading {key.source}…"):
            source, _ = source_of(key)
    except Exception as e:  # noqa: BLE001
        show_error(e, f"loading {key.source}")
        return None
    st.subheader(f"Source: `{key.source}`")
    show_source(source, source.num_parameters())
    return estimate(key)


def show_last_clone(current: CloneKey | None, key: CloneKey, just_cloned: bool) -> None:
    """One line on the last clone made (unless it was made just now), and a hint when the settings changed since."""
    if current is None:
        return
    if not just_cloned:
        show_clone_caption(current)
    if current != key:
        st.info("The settings changed since the last clone; the tabs show the last clone. Press **Clone** to "
                "apply the new settings.")


def show_clone_caption(current: CloneKey) -> None:
    """"Last clone: ..." with its verdict on the check text and how long it took."""
    report = st.session_state.get("reports", {}).get((current, st.session_state.get("check_text", DEFAULT_TEXT)))
    verdict = f": equivalence {verdict_of(report)}" if report is not None else ""
    timing = st.session_state.get("clone_timing", {})
    took = f" (Clone → result {timing['clone_to_result_s']:.2f} s)" if timing else ""
    g = current.growth
    st.caption(f"Last clone: `{current.source}` x{g.factor} (FFN x{g.ffn_factor}), {g.variant}{verdict}{took}")


def show_tabs(key: CloneKey, current: CloneKey | None) -> None:
    """Stateful tabs: only the open tab's content runs, and the choice survives reruns."""
    tabs = st.tabs([t.label for t in TABS], key="tab", on_change="rerun")
    for spec, tab in zip(TABS, tabs):
        if not tab.open:
            continue
        shown = current if spec.of_last_clone else key
        with tab:
            try:
                if shown is None:
                    st.info("Press **Clone** to grow the source with the settings in the sidebar.")
                else:
                    spec.show(shown)
            except Exception as e:  # noqa: BLE001
                show_error(e, spec.doing)


def main() -> None:
    """Two pages: the explorer (every control) and the guided lesson."""
    st.set_page_config(page_title="HyperClone", layout="wide")  # no material page_icon: its favicon comes from Google
    page = st.navigation([st.Page(explorer, title="Explorer", default=True),  # no page icons: see set_page_config
                          st.Page(lesson.render, title="Lesson", url_path="lesson")],
                         position="top")
    guard_cache_clearing()  # in a class, Streamlit's "Clear cache" (every page's models) is the teacher's
    is_teacher_page()  # a ?token= is read once and leaves the address bar, on every page
    page.run()


def link_parts(params) -> tuple[dict, list[str]]:
    """What a link names, each part checked as its control checks it: ({part: value} for the parts that passed,
    one line per part that did not: what was ignored and why). A bad part never stops the good ones."""
    readers = {"source": lambda: link_source(params), "growth": lambda: growth_from_params(params),
               "tab": lambda: link_choice(params, "tab", [t.label for t in TABS]),
               "run": lambda: link_run(params.get("run"))}
    parts, ignored = {}, []
    for part, read in readers.items():
        try:
            parts[part] = read()
        except HyperCloneError as e:
            ignored.append(str(e))
    return parts, ignored


def restore_view() -> None:
    """Once per session: the widgets take the view a link describes (source, growth, tab, run), every value
    checked as the controls check theirs. What was ignored is said once, in one line; a link that names a built-in
    source with valid growth settings is cloned on open, so its recipient sees the view, not an empty page."""
    state, params = st.session_state, st.query_params
    if state.get("view_restored"):
        return
    state.view_restored = True
    parts, ignored = link_parts(params)
    if ignored:
        show_error(HyperCloneError("; ".join(ignored) + "; the rest of the link was used"), "reading the link")
    if parts.get("source"):
        state.source_kind, state.builtin = "Built-in", parts["source"]
    growth = parts.get("growth")
    for name, param in GROWTH_URL.items():  # each Growth field's link name and control key, declared with it
        if growth is not None and params.get(param) and name in GROWTH_WIDGETS:
            state[GROWTH_WIDGETS[name]] = getattr(growth, name)
    if parts.get("tab"):
        state.tab = parts["tab"]
    if parts.get("run"):
        state.race_view = str(parts["run"])
    state.clone_on_open = bool(parts.get("source")) and growth is not None


def view_state(name: str | None, growth: Growth) -> dict[str, str | None]:
    """The explorer's view as URL parameters (the CLI's names, plus tab and run)."""
    run = st.session_state.get("race_view")
    return {"source": name, **growth_params(growth), "tab": st.session_state.get("tab"),
            "run": Path(run).name if run else None}


def explorer() -> None:
    restore_view()
    for k in TAB_WIDGETS:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]
    st.title("HyperClone")
    st.caption("Grow a small pretrained language model into a wider one that computes **exactly the same "
               "logits** (HyperCloning, arXiv 2409.12903), look inside it, check it, and race it against "
               "random initialisation.")
    name = pick_source()
    growth = pick_growth()
    device, dtype = pick_device()
    pending = st.session_state.pop("pending_source", None)
    problem = device_problem(device)
    if problem:
        st.error(problem, icon=":material/error:")
        return
    if pending:
        name = load_pending(pending, device, dtype) or name
    if name is None:
        st.info("Choose a source model in the sidebar (the built-in models work offline).")
        return
    key = CloneKey(name, device, dtype, growth)
    view = view_state(name, growth)
    write_params(view)
    with st.sidebar.popover("Link to this view"):
        st.code(query_link(view), language=None)
    fits = show_source_and_size(key)
    if fits is None:
        return
    clicked = st.button("Clone", type="primary", key="clone", disabled=not fits)
    clicked = clicked or (bool(st.session_state.pop("clone_on_open", False)) and bool(fits))  # a link's view
    if clicked:
        try:
            run_clone(key, st.session_state.get("check_text", DEFAULT_TEXT))
        except Exception as e:  # noqa: BLE001
            show_error(e, "cloning")
    current = st.session_state.get("clone_key")
    show_last_clone(current, key, just_cloned=clicked)
    show_tabs(key, current)
