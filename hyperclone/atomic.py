"""Writing so that readers, and runs killed at any moment, see the old content or the new, never half.

``write_atomic`` writes one file; ``atomic_dir`` builds a directory. Both write
into a temporary sibling named after this process (``.NAME.tmp-PID-XXXXXXXX``)
and rename it into place when complete. New files and directories get the
modes the umask gives any new file (safetensors and mkstemp would make them
private). A temporary directory left by a killed run is removed by the next
run that writes beside it, once its process is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import HyperCloneError

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")  # what temp_sibling names, with its PID


def temp_sibling(path: Path) -> Path:
    """A fresh name beside ``path`` for writing it: ``.NAME.tmp-PID-XXXXXXXX``."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Write ``content`` (bytes, text as UTF-8, or a function writing to a binary file) to ``path`` atomically.

    The data is fsynced before the rename and the rename after it, so after a
    crash ``path`` holds the old content or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = temp_sibling(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as to any new file
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- #
# Directories
# --------------------------------------------------------------------------- #
@contextmanager
def atomic_dir(target: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``target`` only if the block finishes.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed and ``target`` is left exactly as it was. An existing ``target`` is
    replaced; with ``replace=False`` it is kept instead and the new content
    dropped (another writer of the same content finished first).
    """
    target = Path(target).absolute()
    remove_stale_temp_dirs(target.parent)
    tmp = _make_temp_dir(target)
    try:
        yield tmp
        _follow_umask(tmp)
        if replace or not target.exists():
            _move_into_place(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # still there only when an existing target was kept


def _move_into_place(tmp: Path, target: Path, replace: bool) -> None:
    if not target.exists():
        try:
            tmp.rename(target)
            return
        except OSError:
            if replace or not target.exists():
                raise
            return  # another writer got there between the check and the rename: keep theirs
    old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _make_temp_dir(target: Path) -> Path:
    """An empty sibling of ``target`` named after this process, with the umask's permissions like any new directory."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = temp_sibling(target)
            try:
                tmp.mkdir()
                return tmp
            except FileExistsError:
                continue  # another run drew the same name
    except OSError as e:
        raise HyperCloneError(f"cannot write {target}: {_reason(e)}; choose a directory you can write to") from None


def _reason(e: OSError) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return f"{e.filename} is not a directory" if e.filename else "a part of the path is not a directory"
    return f"{e.strerror or type(e).__name__} ({e.filename})" if e.filename else (e.strerror or str(e))


def _follow_umask(tmp: Path) -> None:
    """Give what was written under ``tmp`` the modes the umask gives new files (safetensors writes 0600).

    ``tmp`` was made with ``mkdir``, so its own mode already shows the umask.
    """
    umask = 0o777 & ~stat.S_IMODE(tmp.stat().st_mode)
    for path in tmp.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale_temp_dirs(parent: Path) -> list[str]:
    """Remove temporary directories that HyperClone runs killed before cleaning up left in ``parent``.

    Only names HyperClone makes (``.NAME.tmp-PID-XXXXXXXX``) whose process is
    no longer running are removed; each removal is reported on stderr in one line.
    """
    try:
        stale = [p for p in parent.iterdir() if (m := _TEMP_NAME.match(p.name)) and p.is_dir()
                 and not p.is_symlink() and not _process_alive(int(m.group(1)))]
    except OSError:
        return []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    if stale:
        names = ", ".join(p.name for p in stale)
        print(f"note: removed {len(stale)} temporary director{'y' if len(stale) == 1 else 'ies'} left in {parent} "
              f"by an interrupted HyperClone run: {names}", file=sys.stderr)
    return [p.name for p in stale]
