"""Writing clones to disk: atomic output directories, provenance record, model card.

Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted or failed run never leaves a half-written
checkpoint at the destination.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import HyperCloneError

PROVENANCE_FILE = "hyperclone.json"


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse a destination that is a file, or a non-empty directory without ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HyperCloneError(f"output {out} exists and is not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HyperCloneError(f"output directory {out} is not empty; pass --overwrite to replace it")
    return out


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block finishes.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed and ``out`` is left exactly as it was.
    """
    out = check_output_dir(out, overwrite).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def provenance(plan, source: str, report=None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record saved beside a clone: where it came from and how it was grown."""
    from .version import __version__

    record = {
        "hyperclone_version": __version__,
        "source": source,
        "family": plan.spec.model_type,
        "factor": plan.factor,
        "ffn_factor": plan.ffn_factor,
        "variant": plan.variant,
        "snr_db": plan.snr_db if plan.variant.startswith("noisy") else None,
        "seed": plan.seed,
        "tie": plan.tie if plan.source_tied else "not tied",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "equivalence": report.to_dict() if report is not None else None,
    }
    record.update(extra or {})
    return record


def model_card(record: dict[str, Any], wide_config, n_params: int | None = None) -> str:
    """A short README.md for the cloned checkpoint."""
    eq = record.get("equivalence")
    if eq:
        check = (
            f"{'passed' if eq['passed'] else 'FAILED'}: max relative logit difference {eq['max_rel_diff']:.2e}, "
            f"top-1 agreement {eq['top1_agreement']:.2%}, mean KL {eq['mean_kl']:.2e} ({eq['dtype']})"
        )
    else:
        check = "not run"
    size = f"{n_params / 1e6:.2f}M parameters" if n_params else ""
    return f"""---
library_name: transformers
tags: [hyperclone, hypercloning]
---
# HyperCloned {record['family']} ({size})

Grown from `{record['source']}` with [HyperClone](https://arxiv.org/abs/2409.12903)-style function-preserving
expansion: hidden size and attention heads x{record['factor']}, FFN x{record['ffn_factor']},
variant `{record['variant']}`{f", SNR {record['snr_db']} dB" if record.get('snr_db') is not None else ''}, seed {record['seed']}.
At initialisation it computes the same logits as its source.

- hidden size: {getattr(wide_config, 'hidden_size', getattr(wide_config, 'n_embd', '?'))}
- equivalence check: {check}
- tied embeddings: {record['tie']}

Load it with stock transformers, no custom code:

```python
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")
```

`{PROVENANCE_FILE}` records the source, factors, variant, seed, package version and the full equivalence report.
"""


def write_metadata(target: Path, record: dict[str, Any], wide_config, n_params: int | None) -> None:
    """Provenance JSON and model card into ``target``."""
    (target / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    (target / "README.md").write_text(model_card(record, wide_config, n_params))


def save_clone(
    model,
    out: str | os.PathLike,
    record: dict[str, Any],
    tokenizer=None,
    overwrite: bool = False,
    max_shard_size: str | int = "2GB",
) -> Path:
    """Save a cloned model as a standard checkpoint with provenance and card, atomically."""
    with atomic_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_metadata(tmp, record, model.config, model.num_parameters())
    return Path(out)
