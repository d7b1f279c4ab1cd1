"""The dashboard end to end in a real browser: Debian's Chromium driven by Playwright.

Starts ``streamlit run app.py`` on a free localhost port, clicks Clone, waits
for the equivalence result, starts a short race, waits for its curves, and
takes two screenshots. They go to the test's temporary directory, or, with
``HYPERCLONE_UPDATE_SCREENSHOTS=1``, to ``docs/`` (the README shows
``docs/screenshot.png``), so an ordinary test run leaves the work tree clean.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from serving import free_port, served, streamlit_run

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
HANG_GUARD_MS = 300_000  # per browser wait: far above any real wait, so only a hang fails it
DOCS = ROOT / "docs"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)"),
    pytest.mark.slow,  # a real browser and a served dashboard: minutes on 2 cores
]


@pytest.fixture
def server(tmp_path):
    """A dashboard on a free localhost port, with its own run directory; stopped afterwards."""
    port = free_port()
    env = dict(os.environ, HYPERCLONE_RUNS=str(tmp_path / "runs"), HF_HUB_OFFLINE="1")
    with served(streamlit_run("app.py", port), port, ROOT, env, tmp_path / "streamlit.log") as url:
        yield url


def test_clone_check_and_race_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    # Timeouts are hang guards, not speed tests: on a busy 2-core machine (two CPU hogs and another test run beside
    # it) the 6-step race below took over 240 s once, against ~5 s on a quiet one.
    expect.set_options(timeout=HANG_GUARD_MS)
    shots = DOCS if os.environ.get("HYPERCLONE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1200})
            page.set_default_timeout(HANG_GUARD_MS)
            page.goto(server)

            # What a newcomer sees first: the built-in model loaded, the size estimate, a Clone button.
            expect(page.get_by_text("Wide model:", exact=False)).to_be_visible()
            clone_button = page.get_by_role("button", name="Clone", exact=True)
            expect(clone_button).to_be_enabled()
            t0 = time.perf_counter()
            clone_button.click()
            expect(page.get_by_text("equivalence PASSED", exact=False).first).to_be_visible()
            print(f"browser: Clone -> equivalence result in {time.perf_counter() - t0:.2f} s")

            page.get_by_role("tab", name="Equivalence").click()
            expect(page.get_by_text("Equivalence PASSED", exact=False).first).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            page.wait_for_timeout(1500)  # let plotly finish drawing before the picture
            page.screenshot(path=str(shots / "screenshot.png"))

            page.get_by_role("tab", name="Training race").click()
            for label, value in (("Steps", "6"), ("Batch size", "4"), ("Evaluate every", "3")):
                box = page.get_by_label(label, exact=True)
                box.fill(value)
                box.press("Enter")
                expect(box).to_have_value(value)
            page.get_by_label("Sequence length").click()
            page.get_by_role("option", name="64", exact=True).click()
            page.get_by_role("button", name="Start race").click()
            expect(page.get_by_text("Race finished", exact=False).first).to_be_visible(timeout=4 * HANG_GUARD_MS)
            curve = page.locator("[data-testid='stPlotlyChart']").first
            expect(curve.locator(".js-plotly-plot")).to_be_visible()
            assert curve.locator(".scatterlayer .trace").count() == 3  # noisy_symmetric, random, source
            curve.scroll_into_view_if_needed()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "screenshot-race.png"))
        finally:
            browser.close()


CHAPTER_TITLES = ("A vector becomes [x, x]", "A layer becomes a grid of blocks", "The whole model, the same logits",
                  "The race", "Why the copies must drift apart")


def test_the_lesson_in_a_real_browser_chapters_link_and_presenter_view(server, tmp_path):
    """Click through the five chapters, reopen a copied link, and photograph each chapter in presenter view."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=HANG_GUARD_MS)
    shots = DOCS if os.environ.get("HYPERCLONE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(HANG_GUARD_MS)
            outside = []  # the dashboard works offline: nothing may be fetched from anywhere but this server
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
            page.goto(f"{server}/lesson?factor=3&variant=diagonal")
            for number, title in enumerate(CHAPTER_TITLES, start=1):
                expect(page.get_by_role("heading", name=f"{number} · {title}")).to_be_visible()
                expect(page.locator("[data-test-script-state='notRunning']")).to_have_count(1)  # fully drawn
                if number == 2:
                    expect(page.get_by_text("Factor n")).to_be_visible()
                if number < 5:
                    page.get_by_role("button", name="Next ▶").click()
            assert "chapter=5" in page.url and "factor=3" in page.url and "variant=diagonal" in page.url
            page.get_by_role("button", name="Link to this view").click()
            link = page.locator("[data-testid='stCode'] code").last.inner_text().strip()
            assert "chapter=5" in link and "factor=3" in link and "variant=diagonal" in link
            assert not [u for u in outside if not u.startswith(("data:", "blob:"))], outside

            other = browser.new_page(viewport={"width": 1440, "height": 1000})  # a student opening the link
            other.goto(link if link.startswith("http") else f"{server}/lesson{link[link.index('?'):]}")
            expect(other.get_by_role("heading", name=f"5 · {CHAPTER_TITLES[4]}")).to_be_visible()
            other.close()

            projector = browser.new_page(viewport={"width": 1920, "height": 1080})
            for number, title in enumerate(CHAPTER_TITLES, start=1):
                projector.goto(f"{server}/lesson?chapter={number}&presenter=1&factor=2&variant=noisy_symmetric")
                expect(projector.get_by_role("heading", name=f"{number} · {title}")).to_be_visible()
                expect(projector.locator("[data-test-script-state='notRunning']")).to_have_count(1)
                expect(projector.locator("section[data-testid='stSidebar']")).to_be_hidden()
                projector.wait_for_timeout(2000)  # let plotly finish drawing before the picture
                projector.screenshot(path=str(shots / f"lesson-{number}.png"))
        finally:
            browser.close()
