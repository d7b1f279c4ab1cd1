"""``hyperclone eval`` and ``evaluate_tasks``: real lm-evaluation-harness runs, offline, on a 20-item task.

The task (tests/data/lm_eval/tiny_mc.yaml) is an lm-eval YAML over a local JSONL file, read through lm-eval's
own local-dataset support (``dataset_path: json``). A function-preserving clone must give every choice of
every example the log-likelihood its source gives it, up to float32 rounding, and so the same accuracy; a
stacked clone computes another function and need not.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from racekit import one_line_refusal

from hyperclone import Growth, clone, evaluate_tasks
from hyperclone.cli.main import main
from hyperclone.views.harness import load_for_eval, prepare_tasks
from hyperclone.io.sources import load_source
from hyperclone.core.verify import TOLERANCE, rounding_tolerance

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tests" / "data" / "lm_eval"  # tiny_mc.yaml names its data relative to the repository root
TASK = "tiny_mc"


@pytest.fixture(scope="module")
def tiny_mc():
    """The task, its data read once (from the repository root, where its YAML's data_files points)."""
    here = os.getcwd()
    os.chdir(REPO)
    try:
        return prepare_tasks(TASK, TASKS)
    finally:
        os.chdir(here)


def loglikelihood_tolerance(model, tokenizer, docs: list[dict]) -> float:
    """How far a clone's log-likelihood of a choice may lie from its source's in float32.

    Each continuation token's log-probability is logit - logsumexp(logits): the clone's logits lie within
    ``TOLERANCE[float32]`` x the logit scale of the source's (verify's budget), which moves the log-probability
    by at most twice that, and each log-sum-exp over the vocabulary rounds (random-walk rule). A choice sums
    at most ``tokens`` of them. The logit scale and token counts are measured on this task's own texts.
    """
    texts = [d["question"] + " " + c for d in docs for c in d["choices"]]
    ids = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
    scale = logits.abs().max().item()
    tokens = max(len(tokenizer(" " + c)["input_ids"]) + 1 for d in docs for c in d["choices"])
    per_token = 2 * TOLERANCE[torch.float32] * scale + rounding_tolerance(torch.float32, logits.shape[-1])
    return tokens * per_token


def _docs() -> list[dict]:
    return [json.loads(line) for line in (TASKS / "tiny_mc.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-gpt2-stdlib", "tiny-llama-stdlib"])
def test_a_clone_scores_exactly_what_its_source_scores(name, tiny_mc):
    source, tokenizer = load_source(name, device="cpu")
    tol = loglikelihood_tolerance(source, tokenizer, _docs())
    assert tol < 0.01, tol  # a tolerance this loose would hide real differences

    scored = evaluate_tasks(source, tiny_mc, tokenizer, name=name)
    wide = evaluate_tasks(clone(source, factor=2), tiny_mc, tokenizer, name=f"{name} x2")
    src, x2 = (torch.tensor(r.loglikelihoods[TASK], dtype=torch.float64) for r in (scored, wide))
    assert src.shape == (20, 4) and bool(torch.isfinite(src).all())
    assert (src - x2).abs().max().item() <= tol
    best_two = src.topk(2, dim=1).values
    assert (best_two[:, 0] - best_two[:, 1]).min().item() > 2 * tol  # no near-tie: the accuracy must agree exactly
    for metric in ("acc,none", "acc_norm,none"):
        assert wide.metrics[TASK][metric] == scored.metrics[TASK][metric]
    right = (src.argmax(dim=1) == torch.tensor(scored.targets[TASK])).double().mean().item()
    assert math.isclose(scored.accuracy(TASK), right)  # lm-eval's acc is the argmax of these log-likelihoods

    stacked = evaluate_tasks(clone(source, growth=Growth(depth=2, stack=True)), tiny_mc, tokenizer)
    stacked_ll = torch.tensor(stacked.loglikelihoods[TASK], dtype=torch.float64)
    assert stacked_ll.shape == (20, 4)
    assert (src - stacked_ll).abs().max().item() > tol  # another function: the comparison above can fail


def test_cli_writes_the_result_into_a_clone_output_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "x2"
    assert main(["clone", "tiny-gpt2-stdlib", str(out), "--in-memory"]) == 0
    before = sorted(p.name for p in out.iterdir())
    assert main(["eval", str(out), "--include-path", str(TASKS), "--tasks", TASK, "--limit", "5"]) == 0
    written = out / f"eval-{TASK}.json"
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, written.name])  # no temp file left
    result = json.loads(written.read_text())
    assert result["tasks"] == [TASK] and result["model"] == str(out)
    assert len(result["loglikelihoods"][TASK]) == 5 and all(len(row) == 4 for row in result["loglikelihoods"][TASK])
    assert result["metrics"][TASK]["acc,none"] == result["lm_eval"]["results"][TASK]["acc,none"]
    assert "|tiny_mc|" in capsys.readouterr().out  # lm-eval's table was printed

    assert main(["eval", "tiny-gpt2-stdlib", "--include-path", str(TASKS), "--tasks", TASK, "--limit", "2"]) == 0
    assert "not saved" in capsys.readouterr().out  # a source is never written to unless --out says where


def test_a_race_checkpoint_is_evaluated_with_its_trained_weights(tmp_path, monkeypatch, capsys):
    from hyperclone import race
    from hyperclone.training.runs import read_checkpoint

    run = tmp_path / "run"
    race("tiny-gpt2-stdlib", contestants=("symmetric",), steps=2, batch_size=2, seq_len=32, warmup=1, eval_every=2,
         eval_windows=2, device="cpu", run_dir=run, checkpoint_every=2)
    model, _ = load_for_eval(run / "checkpoints" / "symmetric.pt")
    saved = read_checkpoint(run, "symmetric")["model"]
    assert all(torch.equal(t, saved[k]) for k, t in model.state_dict().items())

    monkeypatch.chdir(REPO)
    assert main(["eval", str(run), "--contestant", "symmetric", "--include-path", str(TASKS), "--tasks", TASK,
                 "--limit", "3"]) == 0
    assert json.loads((run / f"eval-symmetric-{TASK}.json").read_text())["metrics"][TASK]["sample_len"] == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--tasks", TASK, "--include-path", str(TASKS)]) == 2
    assert "name a contestant" in capsys.readouterr().err


@pytest.mark.slow
def test_refusals_are_one_line(tmp_path, capsys):
    one_line_refusal("no task 'no_such_task'", prepare_tasks, "no_such_task", TASKS)
    one_line_refusal("not an lm-eval task name", prepare_tasks, "a;b")
    one_line_refusal("not a directory", prepare_tasks, TASK, tmp_path / "missing")
    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: hyperclone-tests/no-such-dataset\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{c}}'\ndoc_to_target: 0\n")
    one_line_refusal("local cache only; pass --download", prepare_tasks, "hub_task", tmp_path)  # never fetched
    assert main(["eval", "tiny-gpt2-stdlib", "--tasks", TASK, "--contestant", "x"]) == 2
    assert "--contestant applies to a race run" in capsys.readouterr().err


def test_without_lm_eval_the_command_says_how_to_install_it():
    code = ("import sys; sys.modules['lm_eval'] = None\n"
            "from hyperclone.cli.main import main\n"
            "sys.exit(main(['eval', 'tiny-gpt2-stdlib', '--tasks', 'arc_easy']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "pip install 'hyperclone[eval]'" in done.stderr
