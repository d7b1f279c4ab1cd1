"""The Equivalence tab says what it cannot show: a stacked clone has no per-layer hidden-state comparison (said, not
an empty chart), and a check text longer than the context is said to be cut, not cut silently."""

from __future__ import annotations

from pages import open_page

from hyperclone.io.sources import load_source
from hyperclone.views.compare import context_length, token_counts


def test_a_stacked_clone_says_why_it_has_no_hidden_state_chart(runs):
    at = open_page(source="tiny-gpt2-stdlib", factor="2", depth="2", stack="1", tab="Equivalence")
    assert not at.error and any("No hidden-state comparison" in i.value for i in at.info)
    plain = open_page(source="tiny-gpt2-stdlib", factor="2", tab="Equivalence")
    assert not any("No hidden-state comparison" in i.value for i in plain.info)


def test_a_check_text_longer_than_the_context_is_said_to_be_cut(runs):
    source, tokenizer = load_source("tiny-gpt2-stdlib", device="cpu")
    window = context_length(source.config)
    text = "def f(x):\n    return x\n" * window  # far more tokens than the context
    kept, total = token_counts(tokenizer, text, source.config)
    assert kept == window < total
    at = open_page(source="tiny-gpt2-stdlib", factor="2", tab="Equivalence")
    at.text_area(key="check_text").set_value(text).run()
    assert not at.exception and any(f"the check uses its last {window}" in c.value for c in at.caption)
    short = "def f(x):\n    return x\n"
    assert token_counts(tokenizer, short, source.config)[0] == token_counts(tokenizer, short, source.config)[1]
