"""Writing so that readers, and runs killed at any moment, see the old content or the new, never half.

``write_atomic`` writes one file; ``atomic_dir`` builds a directory. Both write
into a temporary sibling named after this process (``.NAME.tmp-PID-XXXXXXXX``)
and rename it into place when complete. New files and directories get the
modes the umask gives any new file (safetensors and mkstemp would make them
private). A directory is renamed into place only where nothing is (never over
what another run or the user put there meanwhile): ``rename_noreplace``. A
temporary directory left by a killed run is removed by the next run that writes
beside it, but only when it can prove HyperClone made it (the marker file inside
names this host, its process, which is gone, and a random token); a name alone
proves nothing.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from hyperclone.core.errors import HyperCloneError

log = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}$")  # what temp_sibling names, with its PID
MARKER = ".hyperclone-temp"  # inside each temporary directory while it is written: who made it
_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100  # linux/fs.h, fcntl.h


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
# Renames that never replace
# --------------------------------------------------------------------------- #
@functools.cache
def _renameat2():
    """glibc's ``renameat2``, or None (not Linux, or a C library without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def _rename_with(flags: int, src: Path, dst: Path) -> bool:
    """``renameat2(src, dst, flags)``; False where the system or the filesystem does not offer ``flags``."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):  # EINVAL: a filesystem without these flags
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename the directory ``src`` to ``dst`` in one step, or raise ``FileExistsError`` if ``dst`` exists.

    Linux: ``renameat2(RENAME_NOREPLACE)``. Elsewhere ``dst`` is first claimed with ``mkdir`` (exactly one
    of several runs creates it) and ``src`` renamed onto that empty claim (Windows' rename never replaces).
    """
    if os.name == "nt":
        os.rename(src, dst)  # never replaces there
        return
    if _rename_with(_RENAME_NOREPLACE, src, dst):
        return
    os.mkdir(dst)
    try:
        os.rename(src, dst)
    except BaseException:
        _rmdir_quietly(dst)
        raise


def exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one step (Linux); False where the system cannot."""
    return _rename_with(_RENAME_EXCHANGE, a, b)


def _rmdir_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``, which must not exist or be an empty directory (taken over).

    ``FileExistsError`` when ``target`` is anything else, even when it appeared a moment ago.
    """
    if target.is_dir() and not target.is_symlink():
        try:
            target.rmdir()
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(e.errno, "not empty", str(target)) from None
            raise
    rename_noreplace(tmp, target)


def keep_existing(tmp: Path, target: Path) -> None:
    """``move_into_place``, or drop ``tmp`` when ``target`` exists (another writer of the same content won)."""
    try:
        move_into_place(tmp, target)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- #
# Directories
# --------------------------------------------------------------------------- #
@contextmanager
def atomic_dir(target: str | os.PathLike, publish: Callable[[Path, Path], None] = keep_existing) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``target`` only if the block finishes.

    On any exception (including KeyboardInterrupt) the temporary directory is
    removed and ``target`` is left exactly as it was. At the end
    ``publish(tmp, target)`` puts it in place; by default ``keep_existing``: an
    existing ``target`` is kept and the new content dropped. When ``publish``
    raises, ``tmp`` is removed unless it was swapped with ``target`` already.
    """
    target = Path(target).absolute()
    remove_stale_temp_dirs(target.parent)
    tmp = _make_temp_dir(target)
    mine = tmp.stat().st_ino  # after a swap (``exchange``) the name holds the replaced directory: not ours
    try:
        yield tmp
        (tmp / MARKER).unlink()
        _follow_umask(tmp)
        publish(tmp, target)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink() and tmp.stat().st_ino == mine:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _make_temp_dir(target: Path) -> Path:
    """An empty sibling of ``target`` (but for its marker), with the umask's permissions like any new directory."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = temp_sibling(target)
            try:
                tmp.mkdir()
                break
            except FileExistsError:
                continue  # another run drew the same name
        marker = {"pid": os.getpid(), "host": socket.gethostname(), "dir": tmp.name, "token": secrets.token_hex(16)}
        (tmp / MARKER).write_text(json.dumps(marker))
        return tmp
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


def _left_by_a_dead_run(path: Path) -> bool:
    """Whether ``path`` is a temporary directory HyperClone made on this host whose process is gone.

    The proof is its marker file (a regular file naming this directory, this host, the process in the
    name and a random token); a directory without one is never called stale, whatever its name.
    """
    named = _TEMP_NAME.match(path.name)
    marker = path / MARKER
    if named is None or path.is_symlink() or not path.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    pid = int(named.group(1))
    return (isinstance(record, dict) and record.get("pid") == pid and record.get("dir") == path.name
            and record.get("host") == socket.gethostname()
            and re.fullmatch(r"[0-9a-f]{32}", str(record.get("token"))) is not None and not _process_alive(pid))


def remove_stale_temp_dirs(parent: Path) -> list[str]:
    """Remove temporary directories that HyperClone runs killed before cleaning up left in ``parent``.

    Only directories that prove HyperClone made them, on this host, for a process no
    longer running (``_left_by_a_dead_run``) are removed; each removal is logged (a warning) in one line.
    """
    try:
        stale = [p for p in parent.iterdir() if _left_by_a_dead_run(p)]
    except OSError:
        return []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    if stale:
        names = ", ".join(p.name for p in stale)
        log.warning("removed %d temporary director%s left in %s by an interrupted HyperClone run: %s", len(stale),
                    "y" if len(stale) == 1 else "ies", parent, names)
    return [p.name for p in stale]
