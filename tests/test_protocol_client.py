"""The protocol-level load client (``benchmarks/st_protocol.py``) against a served dashboard.

Three simulated students open the lesson's chapter 4 over Streamlit's own websocket protocol, as the
browser does. Each must get a finished script run with no exception or error box; one clicks Next and must
receive chapter 5's heading; one opens chapter 2 and moves the factor slider. It proves the client and the
server's session handling work (what ``benchmarks/classroom_load.py`` relies on), not a speed: the timeouts
are hang guards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from serving import free_port, stop, wait_until_healthy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from st_protocol import Session  # noqa: E402

from hyperclone.dashboard.lesson_page import BOARD_SECONDS  # noqa: E402

HANG_GUARD_S = 300.0  # per wait: far above a busy 2-core machine's, so only a hang fails it


@pytest.fixture
def server(tmp_path):
    """A dashboard on a free localhost port, with its own run directory; stopped afterwards."""
    port = free_port()
    env = dict(os.environ, HYPERCLONE_RUNS=str(tmp_path / "runs"), HF_HUB_OFFLINE="1")
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "localhost", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    try:
        wait_until_healthy(proc, url, tmp_path / "streamlit.log")
        yield url
    finally:
        stop(proc)
        log.close()


async def poll_until(done) -> None:
    while not done():
        await asyncio.sleep(0.2)


async def three_students(url: str) -> list[Session]:
    sessions = [Session(url, query="chapter=4", timeout=HANG_GUARD_S) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in sessions))
    watcher = sessions[1]  # no race trains: its board still polls (it will show the next race without a reload)
    await asyncio.wait_for(poll_until(lambda: watcher.stats.fragment_runs >= 2), HANG_GUARD_S)
    await sessions[0].click("Next ▶")
    slider = Session(url, query="chapter=2", timeout=HANG_GUARD_S)
    await slider.open()
    await slider.set_slider("Factor n", 3)
    for s in [*sessions, slider]:
        await s.close()
    return [*sessions, slider]


def test_three_protocol_students_open_the_lesson_click_next_and_move_the_factor(server):
    *students, slider = asyncio.run(asyncio.wait_for(three_students(server), 4 * HANG_GUARD_S))
    for s in [*students, slider]:
        assert s.stats.errors == [], s.stats.errors  # no exception element, error box or protocol failure
        assert s.stats.full_runs >= 1 and s.stats.messages > 0 and s.stats.bytes > 0
        assert s.stats.by_type["script_finished"] >= 1
    assert all("4 · The race" in s.texts() for s in students[1:])  # the two that did not click
    assert students[1].stats.fragment_runs >= 2  # the board polled with no race training (issue 26)
    assert [interval for interval, _ in students[1].timers.values()] == [BOARD_SECONDS]
    assert "5 · Why the copies must drift apart" in students[0].texts()
    assert "4 · The race" not in students[0].texts()  # the chapter 4 elements are gone from the page
    assert "chapter=5" in students[0].query  # the server rewrote the URL, as a browser's address bar shows
    assert [label for label, _ in students[0].stats.clicks] == ["Next ▶"]
    assert "factor=3" in slider.query and slider.stats.full_runs == 2  # the slider's value reached the script
