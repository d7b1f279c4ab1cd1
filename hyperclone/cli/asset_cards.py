"""What a built-in model's card says: the plateau check, the corpus names, and the README written from the card.

``build.py`` measures; this module only describes what was measured.
"""

from __future__ import annotations

from hyperclone.training.documents import LARGE_CORPUS_PACKAGES

REBUILD = "python -m hyperclone.cli.build_assets"
# "Trained to its plateau": validation loss improved by less than PLATEAU_NATS over the last PLATEAU_FRACTION of steps.
PLATEAU_FRACTION, PLATEAU_NATS = 0.2, 0.01
CORPUS_NAMES = {
    "builtin": "builtin (CPython standard library sources + pydoc topics)",
    "builtin-large": "builtin-large (builtin + the .py sources of " + ", ".join(LARGE_CORPUS_PACKAGES) + ")",
}


def plateau_of(curve: list[dict], steps: int) -> dict:
    """How much the validation loss still fell over the last ``PLATEAU_FRACTION`` of training.

    Measured from the last curve point at or before that fraction to the end;
    ``met`` when it fell by less than ``PLATEAU_NATS`` (the bar a "plateaued" source must clear).
    """
    start = max((p for p in curve if p["step"] <= (1 - PLATEAU_FRACTION) * steps), key=lambda p: p["step"],
                default=curve[0])
    improvement = round(start["val_loss"] - curve[-1]["val_loss"], 4)
    return {"from_step": start["step"], "to_step": curve[-1]["step"], "improvement": improvement,
            "threshold": PLATEAU_NATS, "met": improvement < PLATEAU_NATS}


def readme_pieces(card: dict) -> tuple[str, str, str, str]:
    """The README's config table rows, loss-curve rows, samples, and the note on training time."""
    t = card["training"]
    config = "\n".join(f"| `{k}` | {v} |" for k, v in card["config"].items())
    curve = "\n".join(
        f"| {p['step']} | {p['train_loss']:.3f} | {p['val_loss']:.3f} | {p['val_accuracy']:.3f} |"
        for p in card["curve"]
    )
    samples = "\n\n".join(
        f"Prompt `{s['prompt']!r}`, greedy, 48 new tokens:\n\n```\n{s['prompt']}{s['completion']}\n```"
        for s in card["samples"]
    )
    cpu_time = f" ({t['cpu_seconds']:.0f} s of CPU time)" if "cpu_seconds" in t else ""
    if "load_average_15min" in t:
        cpu_time += f"; machine load average {t['load_average_15min']} on {t['cpu_count']} cores"
    if t.get("note"):
        cpu_time += f"; {t['note']}"
    return config, curve, samples, cpu_time


LARGE_DATA_NOTE = (", plus the pure-Python sources of the packages `requirements.txt` installs ("
                   + ", ".join(LARGE_CORPUS_PACKAGES) + "; their versions are part of the corpus identity)")


def training_corpus_line(card: dict) -> str:
    """The README's figure on the corpus the model trained on, when that is not ``builtin`` (else empty)."""
    d, last = card["data"], card["curve"][-1]
    if d.get("corpus_spec", "builtin") == "builtin":
        return ""
    return (f"\n  On {d.get('curve_windows')} fixed windows of the validation split of `{d['corpus_spec']}`, "
            f"what it trained on: {last['val_loss']:.4f} nats, {last['val_accuracy']:.2%}.")


def plateau_line(card: dict) -> str:
    """The README's sentence on whether training reached its plateau (empty for a card without the check)."""
    p = card.get("plateau")
    if not p:
        return ""
    verdict = "trained to its plateau" if p["met"] else "**not** at its plateau"
    return (f"- Plateau check: validation loss fell {p['improvement']:.4f} nats from step {p['from_step']} to step "
            f"{p['to_step']} (the last {PLATEAU_FRACTION:.0%} of training); under {p['threshold']} counts as a "
            f"plateau, so this model is {verdict}.")


def readme_from_card(card: dict) -> str:
    """The README.md of a built-in model, written from its measured ``card``."""
    t, d = card["training"], card["data"]
    config, curve, samples, cpu_time = readme_pieces(card)
    return f"""# {card['name']}

A small pretrained source model for HyperClone, shipped so that cloning,
verification and training work offline. {card['summary']}.
Stock `transformers` class `{card['architecture']}` (model_type `{card['family']}`),
float32 safetensors.

- Parameters: {card['params']:,} ({card['size_mb']} MB)
- Validation loss: **{card['val_loss']:.4f} nats/token**, next-token accuracy
  **{card['val_accuracy']:.2%}** on {d['eval_windows']} fixed windows of {d['eval_window_tokens']}
  tokens of the validation split of the `builtin` corpus, the race's default data
  (`Corpus.validation_windows({d['eval_windows']})`); over all
  {d.get('eval_validation_tokens', d['validation_tokens']):,} of its validation tokens:
  {card['val_loss_all_windows']:.4f} nats, {card['val_accuracy_all_windows']:.2%}.{training_corpus_line(card)}
- Training: {t['steps']} steps × {t['batch_size']} × {t['seq_len']} tokens of `{d.get('corpus_spec', 'builtin')}`
  ({t['tokens_seen']:,} tokens, {t['epochs']} epochs of its train split,
  {t['tokens_seen'] / card['params']:.0f} tokens per parameter; the paper's sources had about 86 (OPT-350M)
  to 2400 (OLMo-1B)),
  {t['optimizer']}, {t['schedule']} (final lr {t.get('final_lr', 'see schedule')}),
  gradient clipping 1.0, seed {t['seed']}, no dropout.
{plateau_line(card)}
- Training wall time: {t['wall_seconds']:.0f} s on {t['torch_threads']} CPU threads{cpu_time}
  ({t['cpu']}, torch {t['torch']}, transformers {t['transformers']}).

## Architecture

| setting | value |
|---|---|
{config}

{readme_tail(card, curve, samples)}"""


def readme_tail(card: dict, curve: str, samples: str) -> str:
    """The README's data, curve, samples and rebuild sections."""
    d = card["data"]
    return f"""## Data

Trained on {d['corpus']}, from `hyperclone.training.data`: CPython {d['python']} standard-library
sources (without `test/`, `tests/`, `idlelib/`, `site-packages`) and the English
text of `pydoc_data.topics`{LARGE_DATA_NOTE if d.get('corpus_spec') == 'builtin-large' else ''}, split per
document by a SHA-1 of its path (~5% validation): {d['train_tokens']:,} train and
{d['validation_tokens']:,} validation tokens with the shipped byte-level BPE tokenizer
(vocabulary {card['config']['vocab_size']}, `<|endoftext|>` between documents).
The validation documents of `builtin` are validation documents of `builtin-large`
too, so the figures above are on text the model never trained on.

## Loss curve

Validation loss on {d.get('curve_windows', d['eval_windows'])} fixed windows of the training corpus's validation split.

| step | train loss | val loss | val accuracy |
|---|---|---|---|
{curve}

## Greedy samples

{samples}

## Rebuild

```
{card['rebuild']}
```

(`{REBUILD}` rebuilds the tokenizer and both models.)
"""
