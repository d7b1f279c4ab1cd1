import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A tiny GPT-2, its tokenizer and a small corpus, for the race tests (one per test module)."""
    from racekit import setup

    return setup(tmp_path_factory.mktemp("race"))
