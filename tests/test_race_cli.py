"""`hyperclone race` end to end, on one process and data-parallel on two (accelerate, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from racekit import save_source

from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.runs import load_run

ARGS = ["--contestants", "noisy_symmetric,random", "--steps", "6", "--batch-size", "4", "--seq-len", "32",
        "--eval-every", "2", "--eval-windows", "4", "--lr", "3e-3", "--warmup", "2", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(scope="module")
def cli_source(tmp_path_factory):
    """The tiny race model saved as a checkpoint, and its corpus file (one per module)."""
    folder = tmp_path_factory.mktemp("cli")
    return save_source(folder), folder / "corpus.txt"


@pytest.fixture(scope="module")
def single(cli_source, tmp_path_factory):
    """One single-process CLI run, the reference for the data-parallel one."""
    source, text = cli_source
    run_dir = tmp_path_factory.mktemp("single") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERCLONE_CACHE", str(run_dir.parent / "cache"))
        rc = main(["race", "--source", str(source), "--data", str(text), "--run-dir", str(run_dir),
                   "--checkpoint-every", "2", *ARGS])
    assert rc == 0
    return run_dir


def test_cli_race_prints_the_table_and_saves_a_chart_next_to_the_log(single, capsys):
    result = load_run(single)
    assert result.complete and (single / "race.html").stat().st_size > 100_000
    assert (single / "metrics.jsonl").exists() and (single / "checkpoints" / "random.pt").exists()
    assert result.config["contestants"] == ["noisy_symmetric", "random"]


def test_cli_resume_reads_the_stored_settings(single, capsys, monkeypatch):
    monkeypatch.setenv("HYPERCLONE_CACHE", str(single.parent / "cache"))
    before = load_run(single).records
    assert main(["race", "--run-dir", str(single), "--resume", "--no-progress"]) == 0  # nothing left to train
    out = capsys.readouterr().out
    assert "speed-up over random init" in out and "noisy_symmetric" in out
    assert load_run(single).records == before
    assert main(["race", "--run-dir", str(single), "--resume", "--steps", "8", "--no-progress"]) == 2
    assert "cannot resume: steps was 6" in capsys.readouterr().err


@pytest.mark.slow
def test_data_parallel_on_two_processes_matches_one_process(cli_source, single, tmp_path):
    """The global batch is split in two equal shards, so the run is the same up to float rounding."""
    source, text = cli_source
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "HYPERCLONE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # On a CPU-only machine, accelerate starts several CPU processes through torchrun (--multi_gpu);
    # its --cpu launcher would start only one (it needs mpirun), which race refuses.
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hyperclone", "race",
           "--source", str(source), "--data", str(text), "--run-dir", str(tmp_path / "run"), *ARGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    parallel, reference = load_run(tmp_path / "run"), load_run(single)
    assert parallel.info["hardware"]["num_processes"] == 2
    assert "2 equal data-parallel shards" in parallel.fairness
    assert [(r["contestant"], r["step"], r["data_sha1"]) for r in parallel.records] == \
        [(r["contestant"], r["step"], r["data_sha1"]) for r in reference.records]
    for p, r in zip(parallel.records, reference.records):
        assert p["val_loss"] == pytest.approx(r["val_loss"], abs=1e-4)
        assert p["val_accuracy"] == pytest.approx(r["val_accuracy"], abs=1e-3)
        if r["train_loss"] is not None:
            assert p["train_loss"] == pytest.approx(r["train_loss"], abs=1e-4)
        if r["symmetry"] is not None:
            # Adam's first steps turn rounding differences of near-zero gradients into full-size
            # updates of tiny weights (biases start at 0), which the cosine between copies sees.
            assert p["symmetry"] == pytest.approx(r["symmetry"], abs=0.05)


def test_accelerate_cpu_launcher_starting_one_process_is_refused(monkeypatch):
    from hyperclone.training.setup import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(HyperCloneError, match="started a single process .* --multi_gpu"):
        make_accelerator("cpu", None)
