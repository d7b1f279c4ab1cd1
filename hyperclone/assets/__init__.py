"""Shipped assets: a byte-level BPE tokenizer and two small pretrained source models.

Everything in this folder is produced by ``python -m hyperclone.cli.build_assets``
(see ``build.py``) from the built-in corpus, on CPU, with fixed seeds.
"""

import argparse
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
MODEL_KEYS = ("gpt2", "llama", "micro-gpt2", "micro-llama")  # the keys of build.MODELS, here so the CLI parses without importing torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``build-assets`` (shared with the ``hyperclone`` CLI)."""
    parser.add_argument("--only", choices=["tokenizer", *MODEL_KEYS], help="build just this part")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="where to write (default: the package)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps of each model (default: its recipe's; more to reach the plateau)")
    parser.add_argument("--device", default=None, help="where to train: cuda, mps, cpu (default: the best available)")
