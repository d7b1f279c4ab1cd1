"""The built-in corpus tokenised once per test session, in a private cache.

Tokenising the standard library takes a few seconds; every test that needs it
shares this one copy instead of paying again (and the user's own cache under
~/.cache/hyperclone is never touched).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

from hyperclone.training.data import CACHE_ENV, Corpus, load_corpus

SEQ_LEN = 256


@functools.lru_cache(maxsize=None)
def cache_root() -> str:
    path = tempfile.mkdtemp(prefix="hyperclone-test-cache-")
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=None)
def shipped_tokenizer():
    from transformers import AutoTokenizer

    from hyperclone.assets import TOKENIZER_DIR

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@functools.lru_cache(maxsize=None)
def builtin_corpus() -> Corpus:
    """``load_corpus("builtin", shipped tokenizer, 256)`` against the session cache."""
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = cache_root()
    try:
        return load_corpus("builtin", shipped_tokenizer(), SEQ_LEN)
    finally:
        if old is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = old
