"""HyperClone dashboard: pick a source model, grow it, look inside, check the logits, race it, export it.

    streamlit run app.py

Thin by design: widgets and layout only; every computation is a call into the
``hyperclone`` package. Works offline on the built-in models.
"""

from __future__ import annotations

import io
import logging
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas  # noqa: F401 - imported up front: plotly and Streamlit import it lazily, from more than one thread
import streamlit as st

from dashboard import lesson
from dashboard.common import (error_line, growth_from_params, growth_params, owner_id, past_runs, query_link, runs_dir,
                              safe_name, write_params)
from dashboard.common import LIMITS, SEQ_LENS, link_choice, link_run, link_source
from dashboard.common import note_left_out
from dashboard.common import (ONLY_TEACHER_RACES, guard_cache_clearing, is_teacher_page, require_teacher,
                              teacher_stop_button)
from hyperclone.classroom import (CLASS_EXPORTS, PAGE_EXPORT_BYTES, PAGE_EXPORTS, PAGE_ZIP_BYTES, page_export,
                                  shared_queue)
from hyperclone.lesson import QUICK, format_duration, race_seconds, step_seconds

from hyperclone import VARIANTS, Growth, make_plan, verify
from hyperclone.clone import apply_plan, wide_model_bytes
from hyperclone.compare import config_diff, describe, encode, greedy, logits_pair
from hyperclone.errors import HyperCloneError, OutputExistsError
from hyperclone.export import provenance, save_clone
from hyperclone.growth import VARIANT_HELP
from hyperclone.heatmaps import clone_heatmaps, expert_count, heatmap_caption, matrices_by_layer
from hyperclone.plots import horizon_figure, layer_diff_bars, logit_scatter, loss_figure, symmetry_figure
from hyperclone.resources import check_fits_in_memory, free_bytes, human_bytes
from hyperclone.race_config import MAX_TOKENS_PER_STEP, check_tokens_per_step
from hyperclone.race_config import (ADOPTED_RECIPE, CONTESTANT_CHOICES, FROM_SOURCE, RECIPE_HELP, RECIPES,
                                    ContestantSpec, RaceConfig)
from hyperclone.recorded import RUNS_DIR, recorded_races
from hyperclone.report import recipe_lines
from hyperclone.runs import load_run
from hyperclone.sources import (BUILTIN_NAMES, HUB_PRESETS, check_device, default_device, list_sources, load_source,
                                resolve_source)
from hyperclone.race_setup import check_race_fits
from hyperclone.train import race
from hyperclone.trackers import TRACKERS, tracker_names

log = logging.getLogger("hyperclone.app")

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("float32", "bfloat16", "float16")
SOURCE_ORIGINS = ("Built-in", "Hub preset", "Hub id", "Local directory")
DEFAULT_TEXT = "import os\n\n\ndef read_config(path):\n    \"\"\"Return the settings stored in path.\"\"\"\n"
MAX_ZIP_BYTES = 2**30  # larger checkpoints are copied from disk, not downloaded through the browser


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


@st.cache_resource(max_entries=4, show_spinner=False)
def get_source(name: str, device: str, dtype: str):
    """(model, tokenizer) of a source, loaded once per (name, device, dtype)."""
    return load_source(name, device=None if device == "auto" else device, dtype=dtype, trust_remote_code=False)


def source_of(key: CloneKey):
    """(model, tokenizer) of the source that ``key`` clones."""
    return get_source(key.source, key.device, key.dtype)


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
        return st.sidebar.selectbox(
            "Built-in model", list(catalogue) or list(BUILTIN_NAMES), key="builtin",
            format_func=lambda n: f"{n}  ({catalogue[n]['params'] / 1e6:.2f}M params, "
                                  f"val loss {catalogue[n]['val_loss']:.2f})" if n in catalogue else n,
            help="Small models trained on Python sources (the standard library and the pinned packages); they ship with the package and work offline.",
        )
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
    """Sidebar widgets for the growth settings."""
    st.sidebar.header("2 · Growth")
    factor = st.sidebar.slider("Hidden factor n (hidden size, heads)", *LIMITS["factor"], 2, key="factor")
    ffn = st.sidebar.select_slider("FFN factor m", ["= n", *span("ffn_factor")], value="= n", key="ffn")
    variant = st.sidebar.radio("Variant", VARIANTS, index=VARIANTS.index("noisy_symmetric"), key="variant",
                               captions=[VARIANT_HELP[v] for v in VARIANTS])
    snr = st.sidebar.slider("Noise SNR (dB)", *LIMITS["snr_db"], 10.0, 0.5, key="snr",
                            disabled=not variant.startswith("noisy"),
                            help="Signal-to-noise ratio of the grown matrices; lower means more noise.")
    seed = int(st.sidebar.number_input("Seed", *LIMITS["seed"], 0, key="seed"))
    c1, c2 = st.sidebar.columns(2)
    depth = c1.select_slider("Depth x (layers)", span("depth"), value=1, key="depth",
                             help="new blocks after every layer, starting as the identity: still exact")
    stack = c2.checkbox("Stack layers", key="stack", disabled=depth == 1,
                        help="repeat the layer stack instead (G_stack): NOT function-preserving")
    return Growth(factor, None if ffn == "= n" else int(ffn), variant, float(snr), seed, depth=depth,
                  stack=bool(stack and depth > 1))


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
    """``verify`` on ``text``, computed once per (clone, text) in this session."""
    reports = st.session_state.setdefault("reports", {})
    if (key, text) not in reports:
        source, tokenizer = source_of(key)
        ids = encode(tokenizer, text, source.config) if tokenizer is not None else None
        if ids is not None and ids.numel() == 0:
            raise HyperCloneError("the check text encodes to no tokens; type some text")
        reports[(key, text)] = verify(source, get_clone(key), input_ids=ids)
    return reports[(key, text)]


def show_comparison(key: CloneKey) -> None:
    source, _ = source_of(key)
    wide = get_clone(key)
    a, b = describe(source.config, source.num_parameters()), describe(wide.config, wide.num_parameters())
    rows = [{"": k, "source": a[k], "clone": b[k],
             "×": f"{b[k] / a[k]:.2f}" if isinstance(a[k], int) and a[k] and isinstance(b[k], int) else ""}
            for k in a]
    for r in rows:
        if r[""] == "parameters":
            r["source"], r["clone"] = f"{a['parameters']:,}", f"{b['parameters']:,}"
        else:
            r["source"], r["clone"] = str(r["source"]), str(r["clone"])
    left, right = st.columns([3, 4])
    left.markdown("**Source vs clone**")
    left.dataframe(rows, hide_index=True, width="stretch")
    right.markdown("**Config keys that changed** (everything else is kept)")
    right.dataframe(config_diff(source.config, wide.config), hide_index=True, width="stretch")


# --------------------------------------------------------------------------- #
# 4. Heatmaps
# --------------------------------------------------------------------------- #
def show_heatmaps(key: CloneKey) -> None:
    source, _ = source_of(key)
    wide = get_clone(key)
    groups = matrices_by_layer(wide)  # layer -> {tensor name within the layer: full name}
    order = list(groups)
    state = st.session_state
    if state.get("hm_layer") not in groups:  # first visit, or another model
        state.hm_layer = "layer 0" if "layer 0" in groups else order[0]
    c1, c2, c3 = st.columns([2, 4, 2])
    group = c1.selectbox("Layer", order, key="hm_layer")
    if state.get("hm_tensor") not in groups[group]:  # keep e.g. attn.c_proj.weight when the layer changes
        state.hm_tensor = next(iter(groups[group]))
    tensor = groups[group][c2.selectbox("Tensor", list(groups[group]), key="hm_tensor")]
    side = c3.select_slider("Display size", [48, 96, 160, 256], value=96, key="hm_side",
                            help="Larger matrices are average-pooled to this many cells per side")
    experts = expert_count(wide, tensor)  # a stack of MoE experts is shown one expert at a time
    expert = int(st.number_input(f"Expert (0-{experts - 1})", 0, experts - 1, 0, key="hm_expert")) if experts else 0
    fig = clone_heatmaps(source, wide, tensor, key.growth.factor, key.growth.ffn_factor, max_side=side, expert=expert)
    st.plotly_chart(fig, key="heatmap", width="stretch")
    st.caption(heatmap_caption(wide, tensor, key.growth.factor, key.growth.ffn_factor, max_side=side))


# --------------------------------------------------------------------------- #
# 5. Equivalence
# --------------------------------------------------------------------------- #
def show_equivalence(key: CloneKey) -> None:
    source, tokenizer = source_of(key)
    wide = get_clone(key)
    if tokenizer is None:
        st.info("This checkpoint has no tokenizer: the check runs on a fixed sample of token ids.")
        text = ""
    else:
        text = st.text_area("Text to check (edit it: the check reruns)", DEFAULT_TEXT, key="check_text", height=110)
        if not text.strip():
            st.error("The check text is empty; type some text to run both models on.", icon=":material/error:")
            return
    report = cached_report(key, text)
    timing = st.session_state.get("clone_timing", {})
    if not report.function_preserving:
        st.info(f"This clone **stacks layers**: not function-preserving by design, so its logits are not expected "
                f"to match; the figures below show how far it starts from the source ({report.n_tokens} tokens).",
                icon=":material/info:")
    elif report.passed:
        st.success(f"**Equivalence PASSED** on {report.n_tokens} tokens ({report.dtype}, tolerance "
                   f"{report.tolerance:g}): the x{report.factor} clone computes the source's logits.",
                   icon=":material/check_circle:")
    else:
        st.warning(f"**Equivalence FAILED** on {report.n_tokens} tokens ({report.dtype}, tolerance "
                   f"{report.tolerance:g}).", icon=":material/warning:")
    m = st.columns(5)
    m[0].metric("max |logit diff|", f"{report.max_abs_diff:.2e}")
    m[1].metric("max relative diff", f"{report.max_rel_diff:.2e}")
    m[2].metric("mean KL(source‖clone)", f"{report.mean_kl:.2e}",
                help="KL divergence of the clone's next-token distribution from the source's, averaged over positions (0 = identical)")
    m[3].metric("top-1 agreement", f"{report.top1_agreement:.1%}")
    m[4].metric("Clone → result", f"{timing['clone_to_result_s']:.2f} s" if timing else "—")
    for note in report.notes:
        st.caption(note)
    if tokenizer is None:
        return
    ids = encode(tokenizer, text, source.config)
    s_logits, c_logits = logits_pair(source, wide, ids)
    left, right = st.columns(2)
    left.plotly_chart(logit_scatter(s_logits, c_logits), key="logit_scatter", width="stretch")
    right.plotly_chart(layer_diff_bars(report), key="layer_bars", width="stretch")
    st.markdown("**Greedy continuations** (the same text means the same function)")
    n_new = st.slider("New tokens", 8, 128, 40, 8, key="gen_tokens")
    gens = st.session_state.setdefault("generations", {})
    if (key, text, n_new) not in gens:
        gid = encode(tokenizer, text, source.config, reserve=n_new)
        gens[(key, text, n_new)] = (greedy(source, tokenizer, gid, n_new), greedy(wide, tokenizer, gid, n_new))
    src_text, wide_text = gens[(key, text, n_new)]
    g1, g2 = st.columns(2)
    g1.caption(f"source ({source.num_parameters() / 1e6:.2f}M)")
    g1.code(text + src_text, language=None)
    g2.caption(f"clone ({wide.num_parameters() / 1e6:.2f}M)" + (" — identical" if src_text == wide_text else ""))
    g2.code(text + wide_text, language=None)


# --------------------------------------------------------------------------- #
# 6. Training race
# --------------------------------------------------------------------------- #
def run_label(path: Path) -> str:
    try:
        cfg = RaceConfig.from_run(path)
        return f"{path.name}  ·  {cfg.source} x{cfg.factor}  ·  {', '.join(cfg.contestants)}  ·  {cfg.steps} steps"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path.name} (unreadable run.json)"


def race_contestants(picked: list[str]) -> tuple[list[str], str | None]:
    """The contestants' specs from the recipe widgets: (canonical names, one-line error or None)."""
    c = st.columns(4)
    recipe = c[0].selectbox("Clone recipe", RECIPES, index=RECIPES.index(ADOPTED_RECIPE), key="race_recipe",
                            help="paper: every contestant shares the learning rate and schedule; continue: start "
                                 "at the source's final lr from its model card, no warm-up (also for 'source'); "
                                 "clone-aware: weights the clone divided by k train at lr/k; gentle (default, "
                                 "the recipe sweep's pick): the source's final lr re-warmed, and lr/k on divided "
                                 "weights (also for 'source', at its final lr)")
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
            follows = kind not in ("random", "source") or (kind == "source" and recipe in FROM_SOURCE)
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
    c = st.columns(5)
    steps = int(c[0].number_input("Steps", *LIMITS["steps"], 200, 10, key="race_steps"))
    batch = int(c[1].number_input("Batch size", *LIMITS["batch_size"], 8, key="race_batch",
                                  help=f"sequences a step; batch x sequence length is at most {MAX_TOKENS_PER_STEP:,} "
                                       "tokens"))
    lr = float(c[2].number_input("Learning rate", *LIMITS["lr"], RaceConfig.lr, format="%.0e", key="race_lr",
                                 help="the shared (paper recipe) learning rate: random init's best in the recipe sweep"))
    seq_len = int(c[3].selectbox("Sequence length", SEQ_LENS, index=1, key="race_seq"))
    every = c[4].number_input("Evaluate every", *LIMITS["eval_every"], None, key="race_eval", placeholder="auto",
                              help="steps between evaluations on the fixed validation windows (auto: 25 points)")
    eval_every = int(every) if every else max(1, steps // 25)
    tracker = st.selectbox("Log to tracker", ("none", *TRACKERS, "all"), key="race_log_with",
                           help="also log the race to an experiment tracker, one run per contestant, offline: "
                                "TensorBoard, MLflow and W&B under the run's folder, trackio in its local store")
    contestants, recipe_error = race_contestants(picked)
    timing = (f"evaluated every {eval_every} step(s) on fixed validation windows of the built-in corpus; "
              f"warm-up {race_warmup(steps)} steps, then cosine decay (unless a contestant's recipe says otherwise).")
    st.caption(f"Racing {', '.join(contestants)}; {timing}" if contestants else timing[0].upper() + timing[1:])
    settings = dict(contestants=tuple(contestants), steps=steps, batch_size=batch, seq_len=seq_len, lr=lr,
                    warmup=race_warmup(steps), eval_every=eval_every, log_with=None if tracker == "none" else tracker)
    problem = recipe_error or (race_problem(key, settings) if contestants else None)
    if problem:
        st.error(problem, icon=":material/error:")
    return settings, problem


def race_problem(key: CloneKey, settings: dict[str, Any]) -> str | None:
    """Why the race would refuse ``settings`` (its own checks: the settings, tokens a step, memory for every
    contestant), found before anything is built or timed; None when it would start."""
    g = key.growth
    try:
        tracker_names(settings.get("log_with"), runs_dir())  # a tracker that is not installed
        cfg = RaceConfig(factor=g.factor, ffn_factor=g.ffn_factor, snr_db=g.snr_db, seed=g.seed,
                         **{k: v for k, v in settings.items() if k != "log_with"})
        cfg.validate()
        check_tokens_per_step(cfg.batch_size, cfg.seq_len)  # the dashboard's own cap: a class shares this server
        source, _ = source_of(key)
        check_race_fits(cfg, source, next(source.parameters()).device)
    except HyperCloneError as e:
        return str(e)
    return None


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
    """The shipped recorded races: pick one, see how it was made, and its curves and speed-ups."""
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

    on_server = queue.running()  # watched live by every page, not only the one that started it

    @st.fragment(run_every=1.0 if mine_active or on_server is not None else None)
    def board() -> None:
        active = job is not None and job.active
        running = queue.running()
        if (mine_active and not active) or (on_server is not None and running is not on_server):
            st.rerun()  # a race has ended: redraw the whole page (buttons, run list)
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
                st.info(f"No races yet: {start}. Runs are saved in `{runs_dir()}` and listed here, "
                        "also after a reload or in another tab.")
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
    kwargs = dict(settings, tokenizer=tokenizer, factor=g.factor, ffn_factor=g.ffn_factor, snr_db=g.snr_db,
                  seed=g.seed, device=None if key.device == "auto" else key.device)
    job = queue.submit(owner, run_dir, lambda stop: race(key.source, run_dir=run_dir, stop_event=stop, **kwargs))
    st.session_state.race_view = str(run_dir)
    return job


def show_estimate(key: CloneKey, settings: dict[str, Any], problem: str | None = None) -> None:
    """How long the race will take here (from timed small steps), and a preset that fits a lecture; nothing is
    timed for settings the race would refuse (``problem``, shown above)."""
    c1, c2 = st.columns([4, 1])
    n, steps = len(settings["contestants"]), settings["steps"]
    try:
        if not problem:
            step_s = step_seconds_of(key, settings["batch_size"], settings["seq_len"])
            c1.caption(f"Estimated time here: about "
                       f"{format_duration(race_seconds(step_s, n, steps, settings['eval_every']))} ({n} contestants x "
                       f"{steps} steps, from timed training steps of the wide model).")
    except Exception as e:  # noqa: BLE001 - an estimate that fails must not block the race
        c1.caption(f"No time estimate: {error_line(e, 'timing a step')}")
    c2.button("Quick preset", key="race_quick", on_click=use_quick_preset,
              help=f"{QUICK.steps} steps of {QUICK.batch_size}x{QUICK.seq_len} tokens: fits a lecture")


@st.cache_data(max_entries=32, show_spinner="Timing one training step…")
def step_seconds_of(key: CloneKey, batch: int, seq_len: int) -> float:
    source, _ = source_of(key)
    return step_seconds(source, key.growth, batch, seq_len)


def use_quick_preset() -> None:
    state = st.session_state
    state.race_steps, state.race_batch, state.race_seq, state.race_eval = (
        QUICK.steps, QUICK.batch_size, QUICK.seq_len, QUICK.eval_every)


def show_run(run_dir: Path, log_x: bool, running: bool, key: str = "race") -> None:
    """Curves, symmetry, speed-up and table of one run, read from its directory (``key``: its charts' prefix)."""
    try:
        result = load_run(run_dir)
    except HyperCloneError as e:
        show_error(e, "reading the run")
        return
    steps = int(result.config.get("steps") or 1)
    done = min((result.final(n) or {"step": 0})["step"] for n in result.contestants)
    if running:
        st.progress(min(1.0, done / steps), f"training… every contestant has done {done} of {steps} steps")
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
    speedups = [s for s in result.speedups() if s.definition == "a"]
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
    left.plotly_chart(loss_figure(result, log_x=log_x, speedups=speedups), key=f"{key}_loss", width="stretch")
    if any(r.get("symmetry") is not None for r in result.records):
        right.plotly_chart(symmetry_figure(result, log_x=log_x), key=f"{key}_symmetry", width="stretch")
    if readouts:
        st.plotly_chart(horizon_figure(result), key=f"{key}_horizon", width="stretch")
        st.caption("Speed-up against horizon: solid (a) at each evaluation of a clone, dashed (b) at each of "
                   "random init's. An open circle: the clone was not below its own start there, so the ratio "
                   "is the source's head start, not faster learning; an open triangle: a bound (not reached).")
    st.caption("Learning rates: " + " · ".join(line.strip() for line in recipe_lines(result)[2:]))
    with st.expander("Table, speed-ups both ways, fairness"):
        st.code(result.table(), language=None)
        st.caption(result.fairness)


# --------------------------------------------------------------------------- #
# 7. Export
# --------------------------------------------------------------------------- #
def zip_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            if f.is_file():
                zf.write(f, Path(path.name) / f.relative_to(path))
    return buf.getvalue()


def show_export(key: CloneKey) -> None:
    """Save the clone: the teacher (or a local user) to any directory; a student in a class by a name, into
    this page's own folder, within the class's limits."""
    name = f"{safe_name(key.source)}-x{key.growth.factor}-{key.growth.variant}"
    teacher = is_teacher_page()
    c1, c2 = st.columns([4, 1])
    if teacher:
        out = c1.text_input("Save to directory", f"out/{name}", key="export_dir").strip()
    else:
        out = c1.text_input("Export name", name, key="export_name", max_chars=64,
                            help="a name, not a path: letters, digits, '.', '_' or '-'").strip()
        st.caption(f"In a class, your exports go only into this page's own folder ({CLASS_EXPORTS}/<this page>/): "
                   f"at most {PAGE_EXPORTS} of them and {PAGE_EXPORT_BYTES / 2**30:g} GiB; Overwrite replaces one of "
                   "yours, never another page's.")
    overwrite = c2.checkbox("Overwrite", key="export_overwrite", help="replace an earlier HyperClone output")
    if st.button("Save clone", key="export_save", disabled=not out):
        save_export(key, out, overwrite, teacher)
    show_exported()


def save_export(key: CloneKey, out: str, overwrite: bool, teacher: bool) -> None:
    """Save the clone to ``out``: a directory (the teacher's), or a student's export name, checked first."""
    source, tokenizer = source_of(key)
    wide = get_clone(key)
    try:
        with nullcontext(out) if teacher else page_export(owner_id(), out, wide_size(key)[1]) as target:
            text = st.session_state.get("check_text", DEFAULT_TEXT)
            report = cached_report(key, text if tokenizer is not None else "")
            record = provenance(wide.hyperclone_plan, key.source, report, {"dashboard": True})
            origin, where = resolve_source(key.source)  # a source directory is never written into or over
            with st.spinner("Saving…"):
                path = save_clone(wide, target, record, tokenizer, overwrite=overwrite,
                                  src=None if origin == "hub" else where)
        st.session_state.exported = str(path)
    except OutputExistsError as e:
        show_error(HyperCloneError(e.with_control("tick Overwrite")), "saving the clone")
    except Exception as e:  # noqa: BLE001
        show_error(e, "saving the clone")


def show_exported() -> None:
    """The last export of this page: where it is, its files, and a zip of it."""
    exported = st.session_state.get("exported")
    if exported and Path(exported).is_dir():
        path = Path(exported)
        files = sorted(f.name for f in path.iterdir())
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        st.success(f"Saved `{path.resolve()}` ({human_bytes(size)}): {', '.join(files)}", icon=":material/save:")
        if size > (MAX_ZIP_BYTES if is_teacher_page() else PAGE_ZIP_BYTES):
            st.info("Too large to download through the browser; copy the directory instead.")
        else:
            st.download_button("Download as zip", lambda: zip_dir(path), file_name=f"{path.name}.zip",
                               mime="application/zip", key="export_zip", on_click="ignore",
                               icon=":material/download:")  # zipped only when clicked


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
            get_source(pending, device, dtype)
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


def restore_view() -> None:
    """Once per session: the widgets take the view a link describes (source, growth, tab, run), every value
    checked as the controls check theirs; a link with a bad value is not used, and one line says which."""
    state, params = st.session_state, st.query_params
    if state.get("view_restored"):
        return
    state.view_restored = True
    try:
        source, growth = link_source(params), growth_from_params(params)
        tab, run = link_choice(params, "tab", [t.label for t in TABS]), link_run(params.get("run"))
    except HyperCloneError as e:
        show_error(HyperCloneError(f"{e}; the page opened with its own settings, nothing was built from the link"),
                   "reading the link")
        return
    if source:
        state.source_kind, state.builtin = "Built-in", source
    for param, widget, value in (("factor", "factor", growth.factor), ("ffn_factor", "ffn", growth.ffn_factor),
                                 ("variant", "variant", growth.variant), ("snr_db", "snr", growth.snr_db),
                                 ("seed", "seed", growth.seed), ("depth", "depth", growth.depth),
                                 ("stack", "stack", growth.stack)):
        if params.get(param):
            state[widget] = value
    if tab:
        state.tab = tab
    if run:
        state.race_view = str(run)


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
    if clicked:
        try:
            run_clone(key, st.session_state.get("check_text", DEFAULT_TEXT))
        except Exception as e:  # noqa: BLE001
            show_error(e, "cloning")
    current = st.session_state.get("clone_key")
    show_last_clone(current, key, just_cloned=clicked)
    show_tabs(key, current)


main()
