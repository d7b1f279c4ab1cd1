"""Tiny ingredients for race tests: a text corpus, a BPE tokenizer trained on it, a small GPT-2.

Nothing here touches the built-in assets, so the race tests run before (and
without) the shipped models. Importable from subprocesses (the kill test and
the data-parallel test) as ``racekit``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hyperclone.training.data import load_corpus
from hyperclone.core.errors import HyperCloneError

TEXT = "\n".join(
    f"def function_{i}(value):\n    # step {i} of the tiny corpus\n    return value * {i % 7} + {i % 5}\n"
    for i in range(400)
)
GPT2 = dict(n_embd=32, n_head=4, n_layer=2, n_positions=64, n_inner=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0)
TINY = dict(steps=8, batch_size=4, seq_len=32, lr=3e-3, warmup=2, eval_every=2, eval_windows=4, device="cpu")
PAIR = ("noisy_symmetric", "random")


def one_line_refusal(match: str, call, *args, **kwargs) -> str:
    """The message of the ``HyperCloneError`` that ``call(*args, **kwargs)`` raises: it matches ``match`` and is one
    line (what the CLI and the app show)."""
    import pytest

    from clirun import one_line

    with pytest.raises(HyperCloneError, match=match) as e:
        call(*args, **kwargs)
    return one_line(str(e.value))


def write_text(folder: Path) -> Path:
    path = Path(folder) / "corpus.txt"
    path.write_text(TEXT)
    return path


def tokenizer_for(text: str = TEXT, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``text`` (a fast transformers tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_gpt2(vocab_size: int, seed: int = 0, **overrides):
    """A small GPT-2 with transformers' default init (tied embeddings, no dropout)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", vocab_size=vocab_size, bos_token_id=0, eos_token_id=0,
                                  **{**GPT2, **overrides})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def setup(folder: Path):
    """(model, tokenizer, corpus) for a race in ``folder`` (the corpus is not cached)."""
    text = write_text(folder)
    tok = tokenizer_for()
    corpus = load_corpus(text, tok, TINY["seq_len"], cache=False)
    return tiny_gpt2(len(tok)), tok, corpus


def save_source(folder: Path) -> Path:
    """Save the tiny model and tokenizer as a checkpoint directory (a CLI --source)."""
    model, tok, _ = setup(folder)
    out = Path(folder) / "source"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":  # used by the kill test: race into argv[1], print each record as it comes
    import json
    import time

    from hyperclone.training.loop import race

    folder = Path(sys.argv[1])
    model, tok, corpus = setup(folder)

    def slow_print(event):
        print(json.dumps(event), flush=True)
        time.sleep(0.25)  # slow enough that the parent kills it mid-run

    race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=folder / "run", callback=slow_print,
         checkpoint_every=2, **TINY)


class StopAfter:
    """A stop signal that fires after ``n`` checks (mid-interval, unlike a callback)."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0
