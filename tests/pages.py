"""Opening the dashboard's pages headless (Streamlit's AppTest), the one way every test does it."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
EXPLORER = str(ROOT / "app.py")  # the explorer page, as `streamlit run app.py` starts it
# The lesson page has no script of its own: a page that renders it (as the served dashboard does).
LESSON = (f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom hyperclone.dashboard import lesson_page as lesson\n"
          "lesson.render()\n")
# Per script run: a hang guard only, far above a busy 2-core machine's slowest run (a race tab timing a step
# beside two other test runs), never a speed test.
HANG_GUARD_S = 300


def open_page(page: str = EXPLORER, **params: str) -> AppTest:
    """``page`` (EXPLORER or LESSON) opened once with ``params`` in its address; opening it raised nothing."""
    if page == EXPLORER:
        at = AppTest.from_file(EXPLORER, default_timeout=HANG_GUARD_S)
    else:
        at = AppTest.from_string(page, default_timeout=HANG_GUARD_S)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def param(at: AppTest, key: str) -> str | None:
    """The value ``key`` has in the page's address now (None where it has none)."""
    value = at.query_params.get(key)
    return value[0] if isinstance(value, list) and value else value or None


def one_error(at: AppTest) -> str:
    """The one error the page shows: one line, no traceback (and the script raised nothing)."""
    assert not at.exception, at.exception
    lines = [e.value for e in at.error]
    assert len(lines) == 1 and "\n" not in lines[0].strip() and "Traceback" not in lines[0], lines
    return lines[0]
