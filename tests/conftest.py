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


@pytest.fixture
def app(tmp_path, monkeypatch):
    """A fresh dashboard session (Streamlit's AppTest) on the default page, with races saved under tmp_path."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HYPERCLONE_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(os.path.join(os.path.dirname(__file__), os.pardir, "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at
