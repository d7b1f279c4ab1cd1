"""The race's parts: settings read back from a run, old run logs, the run directory's one owner, divergence."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from racekit import PAIR, TINY, save_source

from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import RaceConfig
from hyperclone.training.runs import run_config
from hyperclone.training.runs import RUN_FILE, load_run
from hyperclone.training.loop import race

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hyperclone"
OLD_RUN = Path(__file__).resolve().parent / "data" / "race_run_v0_1"  # written by hyperclone 0.1.0


# --------------------------------------------------------------------------- #
# Settings read back from a run directory
# --------------------------------------------------------------------------- #
def test_settings_read_back_from_a_run_are_the_settings_it_ran_with(kit, tmp_path):
    model, tok, corpus = kit
    run_dir = tmp_path / "run"
    result = race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=run_dir, steps_for={"random": 4},
                  source_train_tokens=1234, checkpoint_every=2, **{**TINY, "steps": 2})
    cfg = run_config(run_dir)
    assert cfg.to_dict() == {**result.config, "source_sha1": None}  # the fingerprint is measured, not chosen
    assert (cfg.steps_for, cfg.source_train_tokens, cfg.contestants) == ({"random": 4}, 1234, PAIR)

    arguments = cfg.race_arguments()
    assert "source" not in arguments and "source_sha1" not in arguments
    again = race(model, tokenizer=tok, run_dir=run_dir, resume=True, **{**arguments, "data": corpus})  # all done
    assert again.records == result.records


def test_source_tokens_read_from_a_model_card_are_not_read_back_as_given(tmp_path):
    (tmp_path / RUN_FILE).write_text(json.dumps({
        "config": {**RaceConfig(source="tiny-gpt2-stdlib", source_train_tokens=99).to_dict(), "source_sha1": "ab"},
        "source": {"train_tokens": 99, "train_tokens_from": "model card of tiny-gpt2-stdlib"}}))
    cfg = run_config(tmp_path)
    assert cfg.source == "tiny-gpt2-stdlib" and cfg.source_train_tokens is None and cfg.source_sha1 is None


def test_reading_settings_from_a_directory_without_a_run_says_so(tmp_path):
    with pytest.raises(HyperCloneError, match="has no run.json"):
        run_config(tmp_path)


# --------------------------------------------------------------------------- #
# Run logs written before the split
# --------------------------------------------------------------------------- #
def test_a_run_log_written_by_version_0_1_loads_and_prints_its_figures_with_the_paper_recipe():
    """Every line 0.1 printed is still printed, in order; recipes (all "paper") and the equal-token read-out are added."""
    result = load_run(OLD_RUN)
    table, curves, symmetry, fairness = (OLD_RUN / "expected_text.txt").read_text().rstrip("\n").split("\n---\n")
    assert result.table() == table
    assert result.curves_table() == curves and result.curves_table("symmetry") == symmetry
    assert result.fairness == fairness
    assert result.complete and [result.final(n)["step"] for n in result.contestants] == [4, 6, 4]
    assert {s.definition for s in result.speedups()} == {"a", "b"}


def test_a_run_log_written_by_version_0_1_gives_its_settings():
    cfg = run_config(OLD_RUN)
    assert cfg.contestants == ("noisy_symmetric", "random", "source") and cfg.steps_for == {"random": 6}
    assert cfg.checkpoint_every == 2 and cfg.source == "<GPT2LMHeadModel>"


# --------------------------------------------------------------------------- #
# One owner for each concern
# --------------------------------------------------------------------------- #
def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + [ROOT / "app.py"]


def string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_only_the_run_directory_module_names_its_files():
    for path in python_files():
        if path.name != "runs.py":
            assert not {"run.json", "metrics.jsonl", "checkpoints"} & string_constants(path), path


def test_nothing_in_the_package_imports_the_package_root_for_its_version():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level >= 1 and node.module is None
                                                     or node.level == 0 and node.module == "hyperclone"):
                assert "__version__" not in {a.name for a in node.names}, path


def test_the_package_version_is_written_once():
    from hyperclone import __version__
    from hyperclone.version import __version__ as written

    assert __version__ == written
    assert 'version = { attr = "hyperclone.version.__version__" }' in (ROOT / "pyproject.toml").read_text()


# --------------------------------------------------------------------------- #
# Faults
# --------------------------------------------------------------------------- #
def test_a_loss_that_explodes_at_a_huge_learning_rate_is_reported_as_diverged(kit):
    model, tok, corpus = kit
    result = race(model, tokenizer=tok, data=corpus, contestants=("source", "random"), **{**TINY, "lr": 10.0})
    start = max(result.history(n)[0]["val_loss"] for n in ("source", "random"))
    for name in ("source", "random"):
        status, message = result.status(name)
        assert status == "diverged", f"{name}: {status} ({message})"
        assert "more than 2x the highest loss before training" in message or "nan" in message or "inf" in message
        assert all(r["val_loss"] <= 2 * start for r in result.history(name))  # no exploded record kept
    assert result.complete


def test_a_validation_loss_that_explodes_on_the_last_step_is_reported_as_diverged(kit, monkeypatch):
    from hyperclone.training import loop as train

    model, tok, corpus = kit
    real = train.evaluate
    calls = []

    def explodes_after_the_first_evaluation(*args, **kwargs):
        loss, accuracy = real(*args, **kwargs)
        calls.append(loss)
        return (loss if len(calls) == 1 else loss * 1000), accuracy

    monkeypatch.setattr(train, "evaluate", explodes_after_the_first_evaluation)
    result = race(model, tokenizer=tok, data=corpus, contestants=("source",), **{**TINY, "steps": 2})
    status, message = result.status("source")
    assert status == "diverged" and "validation loss became" in message and "step 2" in message


def test_a_run_dir_that_is_a_file_is_refused_in_one_line(kit, tmp_path):
    model, tok, corpus = kit
    (tmp_path / "taken").write_text("not a directory")
    with pytest.raises(HyperCloneError, match="is a file; choose a directory"):
        race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path / "taken", **TINY)
    with pytest.raises(HyperCloneError, match=r"taken, on the way to run directory .*run, is a file; choose a directory"):
        race(model, tokenizer=tok, data=corpus, contestants=PAIR, run_dir=tmp_path / "taken" / "run", **TINY)
    assert (tmp_path / "taken").read_text() == "not a directory"


def test_cli_race_with_a_run_dir_that_is_a_file_exits_2_with_one_line(tmp_path):
    source = save_source(tmp_path)
    (tmp_path / "taken").write_text("not a directory")
    env = {**os.environ, "HYPERCLONE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "hyperclone", "race", "--source", str(source), "--data",
         str(tmp_path / "corpus.txt"), "--run-dir", str(tmp_path / "taken"), "--steps", "2", "--seq-len", "32",
         "--batch-size", "4", "--eval-windows", "4", "--device", "cpu",
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is a file; choose a directory" in errors[0]
    assert (tmp_path / "taken").read_text() == "not a directory"
