"""The symmetry measure: 1.0 for exact copies, below 1.0 once noise breaks the symmetry."""

from __future__ import annotations

import pytest
import torch
from families import CASE_IDS, CASES, LLAMA_KW, tiny_model

from hyperclone import clone
from hyperclone.core.symmetry import symmetry, symmetry_by_tensor
from hyperclone.core.verify import rounding_tolerance


def cosine_tolerance(model) -> float:
    """A cosine of identical copies is 1 up to the rounding of its sums of squares (float32), none longer than
    the model's largest tensor: the random-walk bound over that many positive terms."""
    return rounding_tolerance(torch.float32, max(p.numel() for p in model.parameters()))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_exact_variants_have_identical_copies(case):
    _, model_type, kwargs, _ = case
    source = tiny_model(model_type, kwargs)
    for variant in ("symmetric", "diagonal"):
        wide = clone(source, 2, 3, variant=variant)
        values = symmetry_by_tensor(wide, 2, 3)
        assert values and min(values.values()) > 1 - cosine_tolerance(wide), (variant, min(values, key=values.get))


def test_noisy_copies_match_the_snr():
    """Two output copies carry independent noise of power P/10: cosine P / (P + P/10) = 1/1.1 = 0.909."""
    source = tiny_model("llama", dict(LLAMA_KW, hidden_size=64, intermediate_size=128))
    wide = clone(source, 2, variant="noisy_symmetric", snr_db=10.0)
    values = symmetry_by_tensor(wide, 2)
    grid = [v for k, v in values.items() if k.endswith("proj.weight")]
    assert sum(grid) / len(grid) == pytest.approx(1 / 1.1, abs=0.02)
    assert symmetry(wide, 2) < 0.95


def test_symmetry_falls_when_one_copy_changes():
    source = tiny_model("gpt2", CASES[0][2])
    wide = clone(source, 2)
    assert symmetry(wide, 2) == pytest.approx(1.0, abs=cosine_tolerance(wide))
    with torch.no_grad():
        wide.transformer.h[0].mlp.c_fc.weight[:, :10] += 1.0  # perturb the first copy only
    assert symmetry(wide, 2) < 1.0
