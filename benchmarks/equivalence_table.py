"""Max relative logit difference of x2 clones, per family (CPU, fp32, tiny random models from tests/families.py).

Usage: python benchmarks/equivalence_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from families import CASES, MOE_CASES, tiny_model  # noqa: E402

from hyperclone import clone, verify  # noqa: E402

VARIANTS = ("symmetric", "noisy_symmetric")

if __name__ == "__main__":
    print(f"{'case':<18}{'family':<13}" + "".join(f"{v:>18}" for v in VARIANTS) + "   top-1 / layers")
    for case_id, model_type, kwargs, _ in CASES + MOE_CASES:
        source = tiny_model(model_type, kwargs)
        reports = [verify(source, clone(source, 2, variant=v, seed=0)) for v in VARIANTS]
        assert all(r.passed for r in reports), case_id
        ok = all(r.top1_agreement == 1.0 and r.layers_passed for r in reports)
        print(f"{case_id:<18}{model_type:<13}" + "".join(f"{r.max_rel_diff:>18.2e}" for r in reports)
              + f"   {'100% / all equal' if ok else 'MISMATCH'}")
