"""The explorer's sidebar and caches: the source model, the growth and device controls, the clone and its memory
estimate (one cached copy per page settings).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import streamlit as st

from hyperclone import VARIANTS, Growth, make_plan, verify
from hyperclone.core.clone import apply_plan
from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import VARIANT_HELP, setting_meta
from hyperclone.core.resources import check_fits_in_memory, free_bytes, human_bytes, wide_model_bytes
from hyperclone.io.sources import BUILTIN_NAMES, HUB_PRESETS, check_device, default_device, list_sources
from hyperclone.views.compare import describe, encode
from hyperclone.dashboard.common import (GROWTH_WIDGETS, LIMITS, error_line, is_teacher_page, log, remembered,
                                         shared_source)


DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("float32", "bfloat16", "float16")
SOURCE_ORIGINS = ("Built-in", "Hub preset", "Hub id", "Local directory")
DEFAULT_TEXT = "import os\n\n\ndef read_config(path):\n    \"\"\"Return the settings stored in path.\"\"\"\n"


# --------------------------------------------------------------------------- #
# Errors: one line with what to do, never a traceback
# --------------------------------------------------------------------------- #
def show_error(e: BaseException, doing: str) -> None:
    st.error(error_line(e, doing), icon=":material/error:")


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (the library's own check), or None."""
    try:
        check_device(device)
    except HyperCloneError as e:
        return str(e)
    return None


# --------------------------------------------------------------------------- #
# Heavy objects, cached across reruns and sessions
# --------------------------------------------------------------------------- #
class CloneKey(NamedTuple):
    """What one clone is made from, and cached by: a source as loaded, and how it grows."""

    source: str
    device: str
    dtype: str
    growth: Growth


def source_of(key: CloneKey):
    """(model, tokenizer) of the source that ``key`` clones."""
    return shared_source(key.source, key.device, key.dtype)


@st.cache_resource(max_entries=16, show_spinner=False)
def get_plan(key: CloneKey):
    """The plan of one clone, made once: it sizes the wide model and then grows it."""
    source, _ = source_of(key)
    return make_plan(source.config, key.growth)


@st.cache_resource(max_entries=4, show_spinner=False)
def get_clone(key: CloneKey):
    """The clone ``key`` describes (cloning is deterministic)."""
    source, _ = source_of(key)
    return apply_plan(source, get_plan(key))


@st.cache_data(max_entries=64, show_spinner=False)
def wide_size(key: CloneKey) -> tuple[int, int]:
    """(parameters, bytes) of the wide model, counted without building it."""
    source, _ = source_of(key)
    return wide_model_bytes(get_plan(key), next(source.parameters()).dtype)


@st.cache_data(show_spinner=False)
def builtin_catalogue() -> list[dict[str, Any]]:
    return [vars(s) for s in list_sources()]


# --------------------------------------------------------------------------- #
# 1. Source
# --------------------------------------------------------------------------- #
def pick_source() -> str | None:
    """Sidebar widgets choosing a source; returns the name to load, or None."""
    st.sidebar.header("1 · Source")
    origin = st.sidebar.radio("Where from", SOURCE_ORIGINS, key="source_kind", horizontal=True)
    if origin == "Built-in":
        try:
            catalogue = {s["name"]: s for s in builtin_catalogue()}
        except HyperCloneError as e:  # a partial install: the models that are there still load
            catalogue = {}
            st.sidebar.warning(error_line(e, "listing built-in models"), icon=":material/warning:")
        name = st.sidebar.selectbox(  # the name alone: longer options are cut in the sidebar's width
            "Built-in model", list(catalogue) or list(BUILTIN_NAMES), key="builtin",
            help="Small models trained on Python sources (the standard library and the pinned packages); they "
                 "ship with the package and work offline.",
        )
        if name in catalogue:
            st.sidebar.caption(f"{catalogue[name]['params'] / 1e6:.2f}M parameters, validation loss "
                               f"{catalogue[name]['val_loss']:.2f}"
                               + (f". For {catalogue[name]['purpose']}." if catalogue[name]["purpose"] else ""))
        return name
    if origin == "Hub preset":
        presets = {s.name: s for s in HUB_PRESETS}
        name = st.sidebar.selectbox(
            "Hugging Face model", list(presets), key="preset",
            format_func=lambda n: f"{n}  ({presets[n].family}, {presets[n].params / 1e6:.0f}M params, "
                                  f"{presets[n].size_mb:,.0f} MB)",
            help="Downloaded from the Hugging Face hub on first use (needs network); sizes are float32.",
        )
        if presets[name].note:
            st.sidebar.caption(presets[name].note)
    elif origin == "Hub id":
        name = st.sidebar.text_input("Hub id", key="hub_id", placeholder="EleutherAI/pythia-70m").strip()
    else:
        name = st.sidebar.text_input("Checkpoint directory", key="local_dir",
                                     placeholder="out/tiny-gpt2-x2").strip()
    if st.sidebar.button("Load", key="load", disabled=not name):
        st.session_state.pending_source = name  # loaded (or refused) once, in main()
    chosen = st.session_state.get("remote_source")
    if chosen and chosen != name:
        st.sidebar.caption(f"Loaded: `{chosen}` (press Load to switch)")
    return chosen or None


def show_source(source, n_params: int) -> None:
    info = describe(source.config, n_params)
    cols = st.columns(len(info))
    for col, (key, value) in zip(cols, info.items()):
        shown = f"{value / 1e6:.2f}M" if key == "parameters" else ("—" if value is None else str(value))
        col.metric(key, shown)


# --------------------------------------------------------------------------- #
# 2. Growth
# --------------------------------------------------------------------------- #
def pick_growth() -> Growth:
    """Sidebar widgets for the growth settings (keys and help as ``Growth`` declares them)."""
    st.sidebar.header("2 · Growth")
    key = GROWTH_WIDGETS
    factor = st.sidebar.slider("Hidden factor n (hidden size, heads)", *LIMITS["factor"], 2, key=key["factor"],
                               help=growth_help("factor"))
    ffn = st.sidebar.select_slider("FFN factor m", ["= n", *span("ffn_factor")], value="= n", key=key["ffn_factor"],
                                   help=growth_help("ffn_factor"))
    variant = st.sidebar.radio("Variant", VARIANTS, index=VARIANTS.index("noisy_symmetric"), key=key["variant"],
                               captions=[VARIANT_HELP[v] for v in VARIANTS])
    snr = st.sidebar.slider("Noise SNR (dB)", *LIMITS["snr_db"], 10.0, 0.5, key=key["snr_db"],
                            disabled=not variant.startswith("noisy"), help=growth_help("snr_db"))
    seed = int(st.sidebar.number_input("Seed", *LIMITS["seed"], 0, key=key["seed"], help=growth_help("seed")))
    depth = st.sidebar.select_slider("Depth x (layers)", span("depth"), value=1, key=key["depth"],
                                     help=growth_help("depth"))  # full width: in half a sidebar the labels were cut
    stack = st.sidebar.checkbox("Stack layers", key=key["stack"], disabled=depth == 1, help=growth_help("stack"))
    return Growth(factor, None if ffn == "= n" else int(ffn), variant, float(snr), seed, depth=depth,
                  stack=bool(stack and depth > 1))


def growth_help(name: str) -> str:
    """The help text ``Growth`` declares for its field ``name``."""
    return setting_meta(Growth, name)["help"]


def span(key: str) -> list[int]:
    """Every whole number in the range of ``key``'s control (``LIMITS``)."""
    return list(range(int(LIMITS[key].low), int(LIMITS[key].high) + 1))


def pick_device() -> tuple[str, str]:
    """Sidebar widgets for where the models live: (device, dtype)."""
    c1, c2 = st.sidebar.columns(2)
    device = c1.selectbox("Device", DEVICES, key="device", help=f"auto picks {default_device().type} here")
    dtype = c2.selectbox("Dtype", DTYPES, key="dtype", help="float32 gives bit-level equivalence checks")
    return device, dtype


def estimate(key: CloneKey) -> bool:
    """Show the wide model's size and whether it fits; True when cloning may go ahead."""
    try:
        n, nbytes = wide_size(key)
    except Exception as e:  # noqa: BLE001 - shown as one line
        show_error(e, "planning the clone")
        return False
    source, _ = source_of(key)
    device = next(source.parameters()).device
    src_n = source.num_parameters()
    st.markdown(f"**Wide model:** {n / 1e6:.2f}M parameters ({n / src_n:.1f}× the source), "
                f"{human_bytes(nbytes)} of weights in {key.dtype} on {device.type} "
                f"(free: {human_bytes(free_bytes(device))}); the source stays loaded beside it.")
    try:
        check_fits_in_memory(nbytes, device, f"the x{key.growth.factor} clone ({n / 1e6:.1f}M parameters)")
    except HyperCloneError as e:
        show_error(e, "checking memory")  # in a class, only the teacher may clone past it
        return is_teacher_page() and st.checkbox("Clone anyway (it may run out of memory)", key="force")
    return True


# --------------------------------------------------------------------------- #
# 3. Clone
# --------------------------------------------------------------------------- #
def run_clone(key: CloneKey, text: str) -> None:
    """Clone and verify with a status box; stores the timings and report in the session."""
    t0 = time.perf_counter()
    with st.status("Cloning…", expanded=True) as status:
        bar = st.progress(0.0, "source")
        source, tokenizer = source_of(key)
        bar.progress(0.25, "growing every weight")
        st.write(f"Growing {source.num_parameters() / 1e6:.2f}M parameters x{key.growth.factor} "
                 f"({key.growth.variant})…")
        wide = get_clone(key)
        t_clone = time.perf_counter() - t0
        bar.progress(0.7, "checking logits")
        st.write(f"Cloned in {t_clone:.2f} s; running both models on the check text…")
        report = cached_report(key, text)
        total = time.perf_counter() - t0
        bar.progress(1.0, "done")
        verdict = verdict_of(report)
        status.update(label=f"Cloned and checked in {total:.2f} s: equivalence {verdict}", state="complete",
                      expanded=False)
    st.session_state.clone_key = key
    st.session_state.clone_timing = {"clone_s": t_clone, "clone_to_result_s": total}
    log.info("clone %s -> %s params, equivalence %s in %.2fs", key, wide.num_parameters(), verdict, total)


def verdict_of(report) -> str:
    """PASSED, FAILED, or NOT EXPECTED for a stacked clone (not function-preserving by design)."""
    return "NOT EXPECTED (stacked layers)" if not report.function_preserving else "PASSED" if report.passed else "FAILED"


def cached_report(key: CloneKey, text: str):
    """``verify`` on ``text``, computed once per (clone, text) in this session (the latest few kept)."""
    def check():
        source, tokenizer = source_of(key)
        ids = encode(tokenizer, text, source.config) if tokenizer is not None else None
        if ids is not None and ids.numel() == 0:
            raise HyperCloneError("the check text encodes to no tokens; type some text")
        return verify(source, get_clone(key), input_ids=ids)

    return remembered("reports", (key, text), check)
