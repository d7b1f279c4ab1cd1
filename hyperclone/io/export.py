"""Writing clones to disk: atomic output directories, provenance record, model card (``model_card.py``).

Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted or failed run never leaves a half-written
checkpoint at the destination. The rename never replaces what appeared at the
destination meanwhile (another run, the user): that is checked again like at
the start. An earlier output is replaced only with ``overwrite`` and only when it
holds nothing but the files its ``hyperclone.json`` says HyperClone wrote.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hyperclone.io.atomic import MARKER, atomic_dir, exchange, move_into_place, rename_noreplace
from hyperclone.core.errors import HyperCloneError, OutputExistsError

log = logging.getLogger(__name__)

PROVENANCE_FILE = "hyperclone.json"
CARD_FILE = "README.md"
# What HyperClone writes, for outputs whose record does not list its files (written before it did).
_WRITTEN_BEFORE = re.compile(r"config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors"
                             r"|model\.safetensors\.index\.json|hyperclone\.json|README\.md")


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
        _check_replaceable(out, overwrite)
    return out


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse the non-empty directory ``out`` unless it is an earlier output holding only HyperClone's files,
    and ``overwrite`` allows replacing it."""
    if not (out / PROVENANCE_FILE).is_file():
        raise HyperCloneError(f"output directory {out} is not empty (and is not an earlier HyperClone "
                              "output); choose a new or empty directory")
    foreign = foreign_entries(out)
    if foreign:
        named = ", ".join(repr(name) for name in foreign[:3]) + (f" and {len(foreign) - 3} more" if foreign[3:] else "")
        raise HyperCloneError(f"output directory {out} holds an earlier HyperClone output and files HyperClone did "
                              f"not write ({named}); move them out of it or choose a new directory (an earlier "
                              "output is replaced only when it holds nothing else)")
    if not overwrite:
        raise OutputExistsError(out)


def hyperclone_files(out: Path) -> set[str]:
    """The names in the earlier output ``out`` that HyperClone wrote: those its record lists.

    A record from before records listed them: the names HyperClone writes (checkpoint, tokenizer, record, card).
    """
    try:
        record = json.loads((out / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        record = None
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, list) and all(isinstance(name, str) for name in files):
        return set(files)
    from hyperclone.io.checkpoint import TOKENIZER_FILES

    return {p.name for p in out.iterdir() if _WRITTEN_BEFORE.fullmatch(p.name) or p.name in TOKENIZER_FILES}


def foreign_entries(out: Path) -> list[str]:
    """The names in ``out`` that HyperClone did not write (it writes only regular files, no folders or links)."""
    ours = hyperclone_files(out)
    return sorted(p.name for p in out.iterdir() if p.name not in ours or p.is_symlink() or not p.is_file())


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
    out = check_output_dir(out, overwrite, src)
    with atomic_dir(out.resolve(), _publisher(out, overwrite)) as tmp:
        yield tmp


def _publisher(out: Path, overwrite: bool):
    """How the finished temporary directory becomes ``out``: renamed where nothing is; whatever appeared at
    ``out`` meanwhile is refused like at the start, or (an earlier output, with ``overwrite``) replaced."""
    def publish(tmp: Path, target: Path) -> None:
        for _ in range(3):
            try:
                return move_into_place(tmp, target)
            except FileExistsError:
                check_output_dir(out, overwrite)  # e.g. another run finished first: one line, its output kept
            if target.is_dir() and any(target.iterdir()):  # an earlier output that overwrite may replace
                return _replace_output(tmp, target)
        raise OutputExistsError(out)
    return publish


def _replace_output(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target`` in one step, then delete the replaced output's HyperClone files."""
    if exchange(tmp, target):
        old = tmp  # the swap left the replaced output under the temporary name
    else:
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        target.rename(old)
        try:
            rename_noreplace(tmp, target)
        except BaseException:
            rename_noreplace(old, target)
            raise
    _discard_replaced(old, target)


def _discard_replaced(old: Path, target: Path) -> None:
    """Delete the files HyperClone wrote in the output just replaced (now ``old``); keep anything else, and say so."""
    try:
        ours = hyperclone_files(old)
        for path in old.iterdir():
            if path.name in ours and path.is_file() and not path.is_symlink():
                path.unlink()
        old.rmdir()
    except OSError:
        kept = target.with_name(f"{target.name}.kept-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")
        try:
            rename_noreplace(old, kept)
        except OSError:
            kept = old
        log.warning("files HyperClone did not write were added to %s while it was replaced; they are kept in %s",
                    target, kept)


def disk_full_error(out: str | os.PathLike, need_bytes: int | None = None) -> HyperCloneError:
    """The one line for a disk that filled up while writing ``out`` (after ``atomic_output`` cleaned up)."""
    need = ""
    if need_bytes is not None:
        from hyperclone.core.resources import human_bytes

        need = f" (free at least {human_bytes(need_bytes)})"
    return HyperCloneError(f"no space left on the device while writing {out}; nothing was written there{need}")


def provenance(plan, source: str, report=None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record saved beside a clone: where it came from and how it was grown."""
    from hyperclone.version import __version__

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


def write_metadata(target: Path, record: dict[str, Any], wide_config, n_params: int | None) -> None:
    """Seal the clone in ``target``, the last files written: its config loses ``auto_map`` (the clone is made of
    transformers' own classes and needs none of the source's code); the provenance JSON lists every file
    HyperClone wrote (what ``--overwrite`` may later replace); the model card."""
    dropped = _drop_auto_map(target / "config.json")
    files = sorted({p.name for p in target.iterdir() if p.name != MARKER} | {PROVENANCE_FILE, CARD_FILE})
    record = {**record, **({"auto_map_dropped": dropped} if dropped else {}), "files": files}
    (target / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    from hyperclone.io.model_card import model_card, output_name

    model_card(record, wide_config, n_params, output_name(target), PROVENANCE_FILE).save(target / CARD_FILE)


def _drop_auto_map(config_file: Path) -> Any:
    """Remove ``auto_map`` from the saved config; what it held (None when it had none)."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "auto_map" not in config:
        return None
    dropped = config.pop("auto_map")
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dropped


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
