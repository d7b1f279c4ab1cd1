import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A tiny GPT-2, its tokenizer and a small corpus, for the race tests (one per test module)."""
    from racekit import setup

    return setup(tmp_path_factory.mktemp("race"))


@pytest.fixture(scope="module")
def unbroken(request, kit):
    """The module's reference race, run once on ``kit`` with the module's ``UNBROKEN`` settings: the runs that its
    tests stop, kill or resume must end exactly like this one."""
    from hyperclone.training.loop import race

    model, tok, corpus = kit
    return race(model, tokenizer=tok, data=corpus, **request.module.UNBROKEN)


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """Races saved under tmp_path/runs (``$HYPERCLONE_RUNS``), outside classroom mode."""
    from hyperclone.teach.classroom import CLASSROOM_ENV

    monkeypatch.setenv("HYPERCLONE_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv(CLASSROOM_ENV, raising=False)
    return tmp_path / "runs"


@pytest.fixture
def app(runs):
    """A fresh dashboard session (Streamlit's AppTest) on the default page, with races saved under tmp_path."""
    from pages import open_page

    return open_page()


@pytest.fixture
def src(tmp_path) -> Path:
    """A tiny llama checkpoint of the test's own (tmp_path/src): the test may change it."""
    from families import save_tiny_llama

    return save_tiny_llama(tmp_path / "src")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The same tiny llama, saved once per test module: tests copy it before spoiling it."""
    from families import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("bad") / "src")


@pytest.fixture
def earlier_output(tmp_path, src) -> Path:
    """A directory HyperClone wrote before (it holds hyperclone.json): ``src`` cloned into tmp_path/earlier."""
    from hyperclone.cli.main import main

    out = tmp_path / "earlier"
    assert main(["clone", str(src), str(out), "--no-verify"]) == 0
    return out
