"""One dashboard server for a class: races queued one at a time, each owned by its session, and a teacher token.

``RaceQueue`` runs the races of one server process in a single background thread: at most one
trains at a time, the others wait in the order they were asked for, and each page sees its own
race's place in the line. A race belongs to the session that asked for it: only that session (or
the teacher) can stop it, so one student's Stop never ends another's race.

Classroom mode (``hyperclone serve --lan``) is described by two environment variables the
``serve`` command sets for the dashboard: ``HYPERCLONE_CLASSROOM=1`` and
``HYPERCLONE_TEACHER_TOKEN``. In that mode starting a race, or cloning a source that is not
built in, needs the teacher token; everyone else only reads. A student's export goes only into
its page's own folder (``CLASS_EXPORTS/<page id>/<name>``, a name, never a path), within
``PAGE_EXPORTS`` exports and ``PAGE_EXPORT_BYTES`` per page and ``CLASS_EXPORT_BYTES`` for the class.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from hyperclone.core.errors import HyperCloneError, first_line

CLASSROOM_ENV = "HYPERCLONE_CLASSROOM"
TOKEN_ENV = "HYPERCLONE_TEACHER_TOKEN"


TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{8,200}")  # URL-safe as typed: the teacher adds ?token=... to a link
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # one folder name: no separator, no hidden file
CLASS_EXPORTS = Path("out") / "class"  # students' exports, one folder per page (relative to the server's folder)
PAGE_EXPORTS = 3  # exports one page may keep (replacing one of its own with Overwrite adds none)
PAGE_EXPORT_BYTES = 2**30  # bytes one page's exports may take together
CLASS_EXPORT_BYTES = 4 * 2**30  # bytes all students' exports may take together (a reload makes a new page)
PAGE_ZIP_BYTES = 2**28  # a student's export is offered as a zip up to this size (zips are built in server memory)
_EXPORT_LOCK = threading.Lock()  # one student's export is checked and written at a time


def new_token() -> str:
    """A fresh teacher token: 12 URL-safe characters, hard to guess, easy to read out."""
    return secrets.token_urlsafe(9)


def classroom_mode(environ: dict | None = None) -> bool:
    """Whether this server was started for a class (``hyperclone serve --lan``)."""
    return (environ if environ is not None else os.environ).get(CLASSROOM_ENV) == "1"


def check_token(token: str) -> str:
    """``token`` when it can be the teacher token (8 to 200 URL-safe characters: it is typed into a link)."""
    if len(token) < 8:
        raise HyperCloneError("--token must be at least 8 characters (or leave it out to get a new one)")
    if not TOKEN_CHARS.fullmatch(token):
        raise HyperCloneError("--token may hold only the letters A-Z and a-z, digits and . _ ~ - (at most 200), "
                              "since it is typed into a link; choose another, or leave it out to get a new one")
    return token


def _utf8(text: str) -> bytes:
    return str(text).encode("utf-8", "surrogatepass")  # any text a link can carry, compared as bytes


def is_teacher(given: str | None, environ: dict | None = None) -> bool:
    """Whether ``given`` is the teacher token (any other text, non-ASCII included, is not). Outside
    classroom mode everyone is the teacher."""
    env = environ if environ is not None else os.environ
    if not classroom_mode(env):
        return True
    expected = env.get(TOKEN_ENV) or ""
    return bool(expected) and bool(given) and secrets.compare_digest(_utf8(given), _utf8(expected))


def teacher_only(action: str) -> str:
    """The one-line refusal of ``action`` to a page without the teacher token."""
    return (f"{action} needs the teacher token in classroom mode; ask your teacher, "
            "or watch the races already running")


def check_teacher(given: str | None, action: str, environ: dict | None = None) -> None:
    """A one-line refusal when ``action`` needs the teacher token and ``given`` is not it."""
    if not is_teacher(given, environ):
        raise HyperCloneError(teacher_only(action))


def check_export_name(name: str) -> str:
    """``name`` when it names one folder (a student's export): a one-line refusal for a path or odd text."""
    if not EXPORT_NAME.fullmatch(name) or ".." in name:
        raise HyperCloneError("an export name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
                              "or digit (no '/' or '..'): it is saved in this page's own folder; type a name")
    return name


def _bytes_under(path: Path) -> int:
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def page_export_path(owner: str, name: str, nbytes: int, root: Path | None = None) -> Path:
    """Where a page's export ``name`` of about ``nbytes`` goes: ``root/<owner>/<name>``; a one-line refusal
    when the name is not one, or the export would pass the page's or the class's limits."""
    root = CLASS_EXPORTS if root is None else Path(root)
    if not re.fullmatch(r"[0-9a-f]{8,64}", owner):
        raise HyperCloneError("this page has no export folder; reload the page")
    page, target = root / owner, root / owner / check_export_name(name)
    kept = [p for p in page.iterdir() if EXPORT_NAME.fullmatch(p.name) and p != target] if page.is_dir() else []
    if len(kept) >= PAGE_EXPORTS:
        names = ", ".join(sorted(p.name for p in kept))
        raise HyperCloneError(f"this page already keeps {len(kept)} exports (at most {PAGE_EXPORTS} per page in a "
                              f"class); save over one of them with Overwrite: {names}")
    mine = sum(_bytes_under(p) for p in kept) + nbytes
    everyone = _bytes_under(root) - _bytes_under(target) + nbytes
    if mine > PAGE_EXPORT_BYTES or everyone > CLASS_EXPORT_BYTES:
        raise HyperCloneError(f"no room for this export ({nbytes / 2**20:.0f} MiB): a page may keep "
                              f"{PAGE_EXPORT_BYTES / 2**30:g} GiB of exports and the class "
                              f"{CLASS_EXPORT_BYTES / 2**30:g} GiB; save a smaller clone, or over one of yours")
    return target


@contextmanager
def page_export(owner: str, name: str, nbytes: int, root: Path | None = None) -> Iterator[Path]:
    """``page_export_path``, held while the export is written: one student's export at a time, so two
    pages cannot both take the last room."""
    with _EXPORT_LOCK:
        yield page_export_path(owner, name, nbytes, root)


@dataclass
class RaceJob:
    """One race asked for by one session: its place in the queue, then its outcome.

    ``state``: queued, running, then finished, stopped or failed (``error`` says why, in one line).
    """

    id: int
    owner: str
    run_dir: Path
    start: Callable[[threading.Event], Any] = field(repr=False)
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    state: str = "queued"
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


class RaceQueue:
    """The races of one server, trained one at a time in the order they were submitted."""

    def __init__(self, describe_error: Callable[[BaseException], str] = first_line) -> None:
        self._lock = threading.Condition()
        self._waiting: deque[RaceJob] = deque()
        self._jobs: dict[int, RaceJob] = {}
        self._ids = itertools.count(1)
        self._describe_error = describe_error
        self._worker = threading.Thread(target=self._work, name="hyperclone-race-queue", daemon=True)
        self._worker.start()

    def submit(self, owner: str, run_dir: Path, start: Callable[[threading.Event], Any]) -> RaceJob:
        """Queue a race: ``start(stop_event)`` trains it (in the queue's thread) and returns when it ends.

        One active race per session: a second one is refused until the first ends or is stopped.
        """
        with self._lock:
            mine = [j for j in self._jobs.values() if j.owner == owner and j.active]
            if mine:
                raise HyperCloneError("this page already has a race queued or running; stop it first")
            job = RaceJob(next(self._ids), owner, Path(run_dir), start)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._lock.notify_all()
            return job

    def position(self, job: RaceJob) -> int:
        """0 while the race trains (or has ended); k when k races are ahead of it in the line."""
        with self._lock:
            if job.state != "queued":
                return 0
            ahead = list(self._waiting).index(job) if job in self._waiting else 0
            return ahead + int(self.running() is not None)

    def running(self) -> RaceJob | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.state == "running"), None)

    def latest(self, owner: str) -> RaceJob | None:
        """The session's most recent race, whatever its state."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.owner == owner]
            return mine[-1] if mine else None

    def stop(self, job: RaceJob, by: str, teacher: bool = False) -> None:
        """Stop (or take out of the line) ``job``; only its own session or the teacher may."""
        if by != job.owner and not teacher:
            raise HyperCloneError("this race belongs to another page; only its owner or the teacher can stop it")
        with self._lock:
            if job.state == "queued" and job in self._waiting:
                self._waiting.remove(job)
                job.state = "stopped"
            job.stop_event.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no race is queued or running (for tests and shutdown); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not any(j.active for j in self._jobs.values()), timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting))
                job = self._waiting.popleft()
                job.state = "running"
            try:
                job.start(job.stop_event)
                outcome, error = ("stopped" if job.stop_event.is_set() else "finished"), None
            except BaseException as e:  # noqa: BLE001 - reported on the owner's page
                outcome, error = "failed", self._describe_error(e)
            with self._lock:
                job.state, job.error = outcome, error
                self._lock.notify_all()


_SHARED: RaceQueue | None = None
_SHARED_LOCK = threading.Lock()


def shared_queue() -> RaceQueue:
    """The one race queue of this process, shared by every page of the dashboard."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = RaceQueue()
        return _SHARED
