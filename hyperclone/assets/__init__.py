"""Shipped assets: a byte-level BPE tokenizer and two small pretrained source models.

Everything in this folder is produced by ``python -m hyperclone.assets.build``
(see ``build.py``) from the built-in corpus, on CPU, with fixed seeds.
"""

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
TOKENIZER_DIR = ASSETS_DIR / "tokenizer"
