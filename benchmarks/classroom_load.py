"""A class on one server: N browser sessions on the lesson while a race trains.

    python benchmarks/classroom_load.py [--sessions 20] [--watch 60]

Starts ``hyperclone serve --lan`` (classroom mode) on a free port, opens a teacher page that starts
the lesson's quick race with the teacher token, then N student pages (Debian's Chromium, one
browser context each, all at once) on chapter 4. It prints:

* whether every student page shows the live race and its curve gains points while watched;
* click -> result times: each student clicks Next (chapter 4 -> 5) and Back, timed until the new
  chapter's heading is drawn; p50, p95, max over all clicks;
* the server's responsiveness: the health endpoint's latency, sampled every second meanwhile;
* errors seen on any page (Streamlit error boxes, exceptions, console errors).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from serving import free_port, stop, wait_until_healthy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "classroom-benchmark"
CHAPTER4, CHAPTER5 = "4 · The race", "5 · Why the copies must drift apart"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def points_in_live_curve(page) -> int:
    """How many points the live race's loss figure holds (all traces)."""
    return await page.evaluate("""() => {
        const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
        const live = charts.filter(c => c.closest('[data-testid="stVerticalBlock"]')?.innerText.includes('Live on'));
        const chart = live[0] || charts[charts.length - 1];
        return chart && chart.data ? chart.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0;
    }""")


async def student(browser, url: str, watch: float, clicks: list[float], problems: list[str], updates: list[bool],
                  delay: float):
    """One student: opens chapter 4, watches the live curve, clicks Next and Back; failures are recorded."""
    await asyncio.sleep(delay)  # a class opens the link within seconds, not at the same millisecond
    try:
        await student_session(browser, url, watch, clicks, problems, updates)
    except Exception as e:  # noqa: BLE001 - a session that fails is a finding, not a crash of the benchmark
        problems.append(f"session failed: {str(e).splitlines()[0][:200]}")


async def student_session(browser, url: str, watch: float, clicks: list[float], problems: list[str],
                          updates: list[bool]):
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(600_000)
    page = await context.new_page()
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    # Streamlit probes <page>/_stcore/health and host-config before the root ones on a page URL: expected 404s.
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and "/lesson/_stcore/" not in r.url else None)
    await page.goto(f"{url}/lesson?chapter=4", timeout=600_000)
    await expect(page.get_by_text("Live on this server")).to_be_visible(timeout=300_000)
    first = await points_in_live_curve(page)
    deadline = time.time() + watch
    grew = False
    while time.time() < deadline and not grew:
        await page.wait_for_timeout(2000)
        grew = await points_in_live_curve(page) > first
    updates.append(grew)
    for button, heading in (("Next ▶", CHAPTER5), ("◀ Back", CHAPTER4)):
        t0 = time.perf_counter()
        await page.get_by_role("button", name=button).click()
        await expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=120_000)
        clicks.append(time.perf_counter() - t0)
    for box in await page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").all():
        problems.append(f"page error: {(await box.inner_text())[:200]}")
    await context.close()


async def health_sampler(url: str, latencies: list[float], done: asyncio.Event) -> None:
    while not done.is_set():
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=60).read())
            latencies.append(time.perf_counter() - t0)
        except OSError:  # no answer within a minute: counted as a minute (the machine did not respond)
            latencies.append(60.0)
        await asyncio.sleep(1.0)


async def run(url: str, sessions: int, watch: float, stagger: float) -> dict:
    from playwright.async_api import async_playwright, expect

    clicks, problems, updates, latencies = [], [], [], []
    done = asyncio.Event()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        teacher = await browser.new_page(viewport={"width": 1280, "height": 720})
        await teacher.goto(f"{url}/lesson?chapter=4&token={TOKEN}", timeout=600_000)
        await teacher.get_by_role("button", name="Start the quick race").click(timeout=300_000)
        await expect(teacher.get_by_text("Your race")).to_be_visible(timeout=300_000)
        sampler = asyncio.create_task(health_sampler(url, latencies, done))
        t0 = time.perf_counter()
        await asyncio.gather(*(student(browser, url, watch, clicks, problems, updates, delay=i * stagger)
                               for i in range(sessions)))
        wall = time.perf_counter() - t0
        done.set()
        await sampler
        await browser.close()
    return {"clicks": clicks, "problems": problems, "updates": updates, "latencies": latencies, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--watch", type=float, default=60.0, help="seconds each page watches for its curve to grow")
    ap.add_argument("--stagger", type=float, default=1.0, help="seconds between two students opening the link")
    args = ap.parse_args()
    port = free_port()
    runs = Path(tempfile.mkdtemp(prefix="hyperclone-classroom-"))
    env = dict(os.environ, HYPERCLONE_RUNS=str(runs), HF_HUB_OFFLINE="1")
    log = runs / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hyperclone.cli", "serve", "--lan", "--port", str(port),
                                 "--token", TOKEN], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        wait_until_healthy(proc, url, log)
        r = asyncio.run(run(url, args.sessions, args.watch, args.stagger))
    finally:
        stop(proc)
    clicks, lat = r["clicks"], r["latencies"]
    print(f"machine: {os.cpu_count()} CPUs, shared by the server, the race and all {args.sessions + 1} browser pages "
          f"(Chromium); {args.sessions} students opening the link {args.stagger:g} s apart + 1 teacher")
    print(f"curves updated while watched: {sum(r['updates'])} of {args.sessions} sessions "
          f"({len(r['updates'])} got as far as watching)")
    if clicks:
        print(f"click -> result ({len(clicks)} clicks): p50 {statistics.median(clicks):.2f} s, "
              f"p95 {percentile(clicks, 0.95):.2f} s, max {max(clicks):.2f} s")
    print(f"server health latency ({len(lat)} samples): p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {percentile(lat, 0.95) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms")
    seen = Counter(p for p in r["problems"] if not p.startswith("console: Failed to load resource"))
    print(f"errors: {sum(seen.values())}" + "".join(f"\n  {n} x {p}" for p, n in seen.most_common(10)))
    print(f"wall time of the student phase: {r['wall']:.1f} s")


if __name__ == "__main__":
    main()
