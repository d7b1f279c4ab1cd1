"""Clones are bit-identical to the clones this version of HyperClone made before any refactor.

The hashes in ``data/clone_hashes.json`` were written by ``python tests/test_clone_hashes.py --write``
on the code as it stood before the architecture redesign. Rewrite them only for a change that is
*meant* to change the bits of a clone, and say so in the commit.

Bit-identity across machines: the source weights are small dyadic numbers (k/8), so every product,
quotient by 2 and sum of squares below is exact in float32 whatever the CPU's summation order or
vector width; elementwise quotients by 3 are correctly rounded by IEEE 754 on every CPU. The noise of
the noisy variants is drawn in float64 from seeded CPU generators.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from families import CASES, make_config
from transformers import AutoModelForCausalLM

from hyperclone import clone

HASHES = Path(__file__).parent / "data" / "clone_hashes.json"
FAMILIES = ("gpt2", "llama-gqa", "phi3", "gemma", "gpt_neox", "llama-tied")
# (variant, factor, ffn_factor): the noisy variants only at factor 2, where the noise power is exact.
SETTINGS = [("symmetric", 2, 3), ("symmetric", 3, 2), ("diagonal", 3, 2), ("diagonal", 2, 2),
            ("noisy_symmetric", 2, 2), ("noisy_diagonal", 2, 2)]


def dyadic_model(case_id: str) -> torch.nn.Module:
    """A tiny model of ``case_id`` whose every parameter is k/8 with |k| <= 8 (no norm weight is 0)."""
    _, model_type, kwargs, _ = next(c for c in CASES if c[0] == case_id)
    model = AutoModelForCausalLM.from_config(make_config(model_type, kwargs))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randint(1, 9, p.shape, generator=gen) * (1 - 2 * torch.randint(0, 2, p.shape, generator=gen))
                    / 8.0)
    return model.eval()


def state_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def current_hashes() -> dict[str, str]:
    out = {}
    for case_id in FAMILIES:
        source = dyadic_model(case_id)
        for variant, factor, ffn_factor in SETTINGS:
            out[f"{case_id}/{variant}/{factor}x{ffn_factor}"] = state_hash(
                clone(source, factor, ffn_factor, variant=variant, seed=7))
    return out


def test_clones_are_bit_identical_to_the_stored_hashes():
    stored = json.loads(HASHES.read_text())
    now = current_hashes()
    assert set(now) == set(stored)
    changed = sorted(k for k in now if now[k] != stored[k])
    assert not changed, f"clones changed bits: {changed}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    HASHES.write_text(json.dumps(current_hashes(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {HASHES}")
