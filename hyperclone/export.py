"""Writing clones to disk: atomic output directories, provenance record, model card.

Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted or failed run never leaves a half-written
checkpoint at the destination.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .atomic import atomic_dir
from .errors import HyperCloneError, OutputExistsError

PROVENANCE_FILE = "hyperclone.json"


def check_output_dir(out: str | os.PathLike, overwrite: bool = False, src: str | os.PathLike | None = None) -> Path:
    """Refuse an output HyperClone must not replace, before anything is loaded or written.

    Refused always: a file; the current or home directory, or a directory
    holding either; the source ``src`` itself, a directory inside it or one
    holding it (symlinks resolved); a non-empty directory that is not an
    earlier HyperClone output (no ``hyperclone.json``). An earlier HyperClone
    output is replaced only with ``overwrite``.
    """
    out = Path(out).expanduser()
    where = out.resolve()
    if out.exists() and not out.is_dir():
        raise HyperCloneError(f"output {out} exists and is not a directory; choose another path")
    for mine, what in ((Path.cwd(), "the current directory"), (Path.home(), "your home directory")):
        if _holds(where, mine.resolve()):
            raise HyperCloneError(f"output {out} is {what} or holds it; choose a new directory for the clone")
    if src is not None:
        source = Path(src).expanduser().resolve()
        if _holds(where, source) or _holds(source, where):
            raise HyperCloneError(f"output {out} is the source {src}, inside it or holds it; choose a new "
                                  "directory outside the source")
    if out.is_dir() and any(out.iterdir()):
        if not (out / PROVENANCE_FILE).is_file():
            raise HyperCloneError(f"output directory {out} is not empty (and is not an earlier HyperClone "
                                  "output); choose a new or empty directory")
        if not overwrite:
            raise OutputExistsError(out)
    return out


def _holds(outer: Path, inner: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (both resolved)."""
    return inner == outer or outer in inner.parents


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC/EDQUOT, as an OSError or as the SafetensorError that safetensors raises while writing."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(e)
    return type(e).__name__ == "SafetensorError" and any(
        s in text for s in ("No space left", "os error 28", "Disk quota exceeded", "os error 122"))


@contextmanager
def atomic_output(out: str | os.PathLike, overwrite: bool = False, src: str | os.PathLike | None = None
                  ) -> Iterator[Path]:
    """Yield a temporary directory that becomes the clone output ``out`` only if the block finishes.

    ``out`` is checked first (``check_output_dir``, with the source ``src``);
    then ``atomic.atomic_dir``: on any exception (including KeyboardInterrupt)
    the temporary directory is removed and ``out`` is left exactly as it was.
    """
    with atomic_dir(check_output_dir(out, overwrite, src)) as tmp:
        yield tmp


def disk_full_error(out: str | os.PathLike, need_bytes: int | None = None) -> HyperCloneError:
    """The one line for a disk that filled up while writing ``out`` (after ``atomic_output`` cleaned up)."""
    need = ""
    if need_bytes is not None:
        from .resources import human_bytes

        need = f" (free at least {human_bytes(need_bytes)})"
    return HyperCloneError(f"no space left on the device while writing {out}; nothing was written there{need}")


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
        "depth": plan.growth.depth,
        "depth_every": plan.growth.depth_every if plan.growth.depth > 1 and not plan.growth.stack else None,
        "stack": plan.growth.stack,
        "function_preserving": plan.growth.function_preserving,
        "layers": plan.growth.describe_depth() or "as the source's",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "equivalence": report.to_dict() if report is not None else None,
    }
    record.update(extra or {})
    return record


def model_card(record: dict[str, Any], wide_config, n_params: int | None = None) -> str:
    """A short README.md for the cloned checkpoint."""
    eq = record.get("equivalence")
    preserving = record.get("function_preserving", True)
    if eq:
        verdict = "passed" if eq["passed"] else "FAILED" if preserving else "not expected to match"
        check = (
            f"{verdict}: max relative logit difference {eq['max_rel_diff']:.2e}, "
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
{"At initialisation it computes the same logits as its source." if preserving else
 "Its layers are the source's stacked: NOT function-preserving by design (its logits differ from the source's)."}
{f"{chr(10)}- layers: {record['layers']}" if record.get("depth", 1) > 1 else ""}
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
    src: str | os.PathLike | None = None,
) -> Path:
    """Save a cloned model as a standard checkpoint with provenance and card, atomically.

    ``src``: the source checkpoint directory, if any, which ``out`` must not be, be inside or hold.
    """
    try:
        with atomic_output(out, overwrite, src) as tmp:
            model.save_pretrained(tmp, max_shard_size=max_shard_size)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_metadata(tmp, record, model.config, model.num_parameters())
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(out) from None
        raise
    return Path(out)
