"""The explorer's read-only tabs: the config comparison, weight heatmaps and the logit-equivalence check."""

from __future__ import annotations

import streamlit as st

from hyperclone.views.compare import config_diff, describe, encode, greedy, logits_pair, token_counts
from hyperclone.views.heatmaps import clone_heatmaps, expert_count, heatmap_caption, matrices_by_layer
from hyperclone.views.plots import layer_diff_bars, logit_scatter
from hyperclone.dashboard.common import remembered
from hyperclone.dashboard.sources_panel import DEFAULT_TEXT, cached_report, CloneKey, get_clone, source_of


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
                            help="Of a larger matrix, every k-th row and column is drawn (real entries, not averages), "
                                 "k the smallest step that keeps it within this many cells per side")
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
    kept, total = token_counts(tokenizer, text, source.config)
    if kept < total:
        st.caption(f"The text has {total} tokens; the models read at most {kept} at once, so the check uses its "
                   f"last {kept} (the first {total - kept} are left out).")
    ids = encode(tokenizer, text, source.config)
    s_logits, c_logits = logits_pair(source, wide, ids)
    left, right = st.columns(2)
    left.plotly_chart(logit_scatter(s_logits, c_logits), key="logit_scatter", width="stretch")
    if report.layers:
        right.plotly_chart(layer_diff_bars(report), key="layer_bars", width="stretch")
    else:
        right.info("No hidden-state comparison: a stacked clone's layers run the source's blocks one after another "
                   "instead of repeating its hidden states, so there is no source layer for each wide layer to "
                   "match. Its logits (left) show how far it starts from the source.", icon=":material/info:")
    st.markdown("**Greedy continuations** (the same text means the same function)")
    n_new = st.slider("New tokens", 8, 128, 40, 8, key="gen_tokens")
    gid = encode(tokenizer, text, source.config, reserve=n_new)
    src_text, wide_text = remembered("generations", (key, text, n_new),
                                     lambda: (greedy(source, tokenizer, gid, n_new), greedy(wide, tokenizer, gid, n_new)))
    g1, g2 = st.columns(2)
    g1.caption(f"source ({source.num_parameters() / 1e6:.2f}M)")
    g1.code(text + src_text, language=None)
    g2.caption(f"clone ({wide.num_parameters() / 1e6:.2f}M)" + (" — identical" if src_text == wide_text else ""))
    g2.code(text + wide_text, language=None)
