"""A class on one server: N simulated students at the protocol level and 2 real browsers, while a race trains.

    python benchmarks/classroom_load.py [--sessions 1,10,20,30,50] [--watch 60] [--browsers 2]
    python benchmarks/classroom_load.py --calibrate [--watch 30]

Starts ``hyperclone serve --lan`` (classroom mode) on a free port. A teacher session (``st_protocol.Session``
with ``?token=``) starts the lesson's quick race, and starts it again whenever it finishes, so a race trains
throughout. First the server runs the race alone for ``--idle`` seconds (the race's idle-server speed, and
which server threads train: those that use CPU then, the main thread aside). Then, for each N:

* N protocol students (``benchmarks/st_protocol.py``: Streamlit's own websocket protocol, so each costs the
  server what a browser's session costs, and this process almost nothing) open ``/lesson?chapter=4`` a
  ``--stagger`` apart, watch for ``--watch`` s (answering the live board's ``run_every`` fragment as the
  browser does), click Next and Back, then open chapter 2 and move the "Factor n" slider to 3;
* beside them ``--browsers`` real Chromium pages (Debian's, Playwright) open chapter 4, watch, click Next and
  Back: click -> new chapter heading drawn, and whether their live curve gains points;
* meanwhile: the server's CPU (user+sys of the server process, its threads and children, from ``/proc``;
  split into the race's threads and the rest, "serving"), its RSS, the health endpoint's latency every
  second, and the race's tokens/s from its ``metrics.jsonl`` (token increments over the time between
  consecutive records of a run, so a race's start-up does not count).

It prints one table row per N. ``--calibrate`` checks the protocol client against reality instead: one
protocol session and one Chromium page, each alone on the same URL doing the same (open chapter 4, watch,
Next, Back) while the race trains; for each, the serving CPU seconds and the websocket messages received,
and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from serving import free_port, stop, wait_until_healthy  # noqa: E402
from st_protocol import Session  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TOKEN = "classroom-benchmark"
CHAPTER4, CHAPTER5 = "4 · The race", "5 · Why the copies must drift apart"
START, STOP_LABEL = "Start the quick race", "Stop"
SERVE = [sys.executable, "-c", "import sys; from hyperclone.cli import main; sys.exit(main())"]
TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- the server, read from /proc
def cpu_seconds(stat_line: str) -> float:
    """user + system seconds from a ``/proc/.../stat`` line (fields 14 and 15, after the command's ``)``)."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:  # a thread or child that ended meanwhile
        return None


def descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (children, grandchildren...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := read(f"/proc/{entry.name}/stat")):
            parents.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        out.extend(kids := parents.get(todo.pop(), []))
        todo.extend(kids)
    return out


def server_cpu(pid: int) -> tuple[float, dict[int, float]]:
    """(CPU seconds of the server and its children so far, CPU seconds of each of the server's threads)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        if stat := read(f"{task}/stat"):
            threads[int(task.name)] = cpu_seconds(stat)
    total = cpu_seconds(read(f"/proc/{pid}/stat") or "x) " + "0 " * 20)
    total += sum(cpu_seconds(s) for c in descendants(pid) if (s := read(f"/proc/{c}/stat")))
    return total, threads


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its children, MB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        for line in (read(f"/proc/{p}/status") or "").splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class CpuWindow:
    """Server CPU over a window: all of it, the race's threads' share, the rest ("serving")."""

    def __init__(self, pid: int, race_threads: set[int]) -> None:
        self.pid, self.race_threads = pid, race_threads
        self.t0 = time.perf_counter()
        self.total0, self.threads0 = server_cpu(pid)

    def result(self) -> dict:
        wall = time.perf_counter() - self.t0
        total, threads = server_cpu(self.pid)
        race = sum(threads.get(t, 0.0) - self.threads0.get(t, 0.0) for t in self.race_threads)
        used = total - self.total0
        return {"wall": wall, "cpu": used, "race_cpu": race, "serving_cpu": used - race}

    def busy_threads(self, share: float) -> set[int]:
        """Threads other than the main one that used more than ``share`` of one core since the start."""
        wall = time.perf_counter() - self.t0
        _, threads = server_cpu(self.pid)
        return {t for t, s in threads.items() if t != self.pid and s - self.threads0.get(t, 0.0) > share * wall}


def race_rate(runs: Path, t0: float, t1: float) -> float:
    """The races' tokens per second of training between wall times ``t0`` and ``t1`` (all runs in ``runs``): the
    tokens between consecutive records of a run, over their time, both counted pro rata inside the window."""
    tokens = seconds = 0.0
    for metrics in runs.glob("*/metrics.jsonl"):
        last_tokens, last_time = {}, None
        for line in (read(str(metrics)) or "").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("event") != "metrics":
                continue
            if last_time is not None and r["time"] > last_time:  # the part of this interval inside the window
                inside = max(0.0, min(r["time"], t1) - max(last_time, t0))
                tokens += (r["tokens"] - last_tokens.get(r["contestant"], 0)) * inside / (r["time"] - last_time)
                seconds += inside
            last_tokens[r["contestant"]], last_time = r["tokens"], r["time"]
    return tokens / seconds if seconds else float("nan")


async def health_sampler(url: str, latencies: list[float], done: asyncio.Event) -> None:
    while not done.is_set():
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url}/_stcore/health", timeout=60).read())
            latencies.append(time.perf_counter() - t0)
        except OSError:  # no answer within a minute: counted as a minute (the machine did not respond)
            latencies.append(60.0)
        await asyncio.sleep(1.0)


# --------------------------------------------------------------------------- the teacher and the students
async def teacher(url: str, done: asyncio.Event, problems: list[str]) -> None:
    """The teacher's page: starts the quick race, and again each time it finishes, until ``done``."""
    session = Session(url, query=f"chapter=4&token={TOKEN}")
    await session.open()
    try:
        while not done.is_set():
            try:
                button = session.widget(START)
            except LookupError:
                button = None
            if button is not None and not button.disabled:
                await session.click(START)
            await asyncio.sleep(1.0)
    finally:
        problems.extend(f"teacher: {e}" for e in session.stats.errors)
        await session.close()


async def protocol_student(url: str, watch: float, delay: float, chapter2: bool = True) -> dict:
    """One simulated student: chapter 4, watch, Next, Back; then (``chapter2``) chapter 2 and the factor slider
    to 3."""
    await asyncio.sleep(delay)
    out = {"clicks": [], "errors": [], "open": None, "gains": 0, "figures": 0, "gaps": [], "messages": 0, "bytes": 0}
    sessions = [Session(url, query="chapter=4")]
    try:
        session = sessions[0]
        out["open"] = await session.open()
        t0 = time.perf_counter()
        await session.watch(watch)
        t1 = time.perf_counter()
        out["gains"] = sum(t >= t0 for t in session.stats.live_growths)
        seen = [t0, *(t for t in session.stats.live_figures if t >= t0), t1]
        out["figures"], out["gaps"] = len(seen) - 2, [b - a for a, b in zip(seen, seen[1:])]
        out["clicks"] += [await session.click("Next ▶"), await session.click("◀ Back")]
        if CHAPTER4 not in session.texts():
            out["errors"].append("Back did not return to chapter 4")
        await session.close()
        if chapter2:
            sessions.append(session := Session(url, query="chapter=2"))
            await session.open()
            out["clicks"].append(await session.set_slider("Factor n", 3))
    except Exception as e:  # noqa: BLE001 - a session that fails is a finding, not a crash of the benchmark
        why = str(e).splitlines()[0][:200] if str(e) else ""
        out["errors"].append(f"session failed: {type(e).__name__}: {why}")
    finally:
        for session in sessions:
            await session.close()
            out["messages"] += session.stats.messages
            out["bytes"] += session.stats.bytes
            out["errors"] += session.stats.errors
    return out


async def points_in_live_curve(page) -> int:
    """How many points the live race's loss figure holds (all traces)."""
    return await page.evaluate("""() => {
        const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
        const live = charts.filter(c => c.closest('[data-testid="stVerticalBlock"]')?.innerText.includes('Live on'));
        const chart = live[0] || charts[charts.length - 1];
        return chart && chart.data ? chart.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0;
    }""")


async def browser_student(browser, url: str, watch: float) -> dict:
    """One real page: chapter 4, watch the live curve, Next and Back timed until the new heading is drawn."""
    from playwright.async_api import expect

    out = {"clicks": [], "errors": [], "gains": 0, "messages": 0, "bytes": 0}
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    context.set_default_timeout(600_000)
    page = await context.new_page()
    page.on("console", lambda m: out["errors"].append(f"console: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text else None)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: count_frame(out, f)))
    try:
        await page.goto(f"{url}/lesson?chapter=4", timeout=600_000)
        await expect(page.get_by_text("Live on this server")).to_be_visible(timeout=300_000)
        points, deadline = await points_in_live_curve(page), time.time() + watch
        while time.time() < deadline:
            await page.wait_for_timeout(1000)
            now = await points_in_live_curve(page)
            out["gains"], points = out["gains"] + (now > points), now  # (a new race starts with fewer points)
        for button, heading in (("Next ▶", CHAPTER5), ("◀ Back", CHAPTER4)):
            t0 = time.perf_counter()
            await page.get_by_role("button", name=button).click()
            await expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=120_000)
            out["clicks"].append(time.perf_counter() - t0)
        for box in await page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").all():
            out["errors"].append(f"page error: {(await box.inner_text())[:200]}")
    except Exception as e:  # noqa: BLE001 - recorded
        out["errors"].append(f"browser session failed: {str(e).splitlines()[0][:200]}")
    finally:
        await context.close()
    return out


def count_frame(out: dict, payload) -> None:
    out["messages"] += 1
    out["bytes"] += len(payload if isinstance(payload, (bytes, str)) else b"")


# --------------------------------------------------------------------------- one load level, the idle race
class Server:
    """The served dashboard as the benchmark sees it: its URL, process id, run directory, race threads."""

    def __init__(self, url: str, pid: int, runs: Path) -> None:
        self.url, self.pid, self.runs = url, pid, runs
        self.race_threads: set[int] = set()
        self.idle_rate = float("nan")


async def idle_race(server: Server, seconds: float) -> dict:
    """The race alone on the server (the teacher's page only): its speed, and which threads train."""
    t0 = time.time()
    while not any(server.runs.glob("*/metrics.jsonl")) and time.time() - t0 < 600:  # the race has started
        await asyncio.sleep(1.0)
    window, t0 = CpuWindow(server.pid, set()), time.time()
    await asyncio.sleep(seconds)
    server.race_threads |= window.busy_threads(0.05)
    window.race_threads = server.race_threads
    server.idle_rate = race_rate(server.runs, t0, time.time())
    return {**window.result(), "rate": server.idle_rate, "rss": rss_mb(server.pid)}


async def load_level(server: Server, n: int, args, browser) -> dict:
    """N protocol students and the real pages at once; what the server and they measured."""
    latencies, done = [], asyncio.Event()
    rss0, peak, t0 = rss_mb(server.pid), [0.0], time.time()
    window, client0 = CpuWindow(server.pid, server.race_threads), time.process_time()
    sampler = asyncio.create_task(health_sampler(server.url, latencies, done))

    async def rss_watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(server.pid))
            await asyncio.sleep(2.0)

    watcher = asyncio.create_task(rss_watch())
    pages = [browser_student(browser, server.url, args.watch) for _ in range(args.browsers if browser else 0)]
    results = await asyncio.gather(*(protocol_student(server.url, args.watch, i * args.stagger) for i in range(n)),
                                   *pages)
    cpu, t1 = window.result(), time.time()
    done.set()
    await asyncio.gather(sampler, watcher)
    return {"n": n, "students": results[:n], "pages": results[n:], "health": latencies, **cpu,
            "client_cpu": time.process_time() - client0, "rss0": rss0, "rss_peak": peak[0],
            "rss_after": rss_mb(server.pid), "rate": race_rate(server.runs, t0, t1)}


def summary(level: dict, idle_rate: float, watch: float) -> dict:
    """One table row from a level's raw figures."""
    students, pages = level["students"], level["pages"]
    clicks = [c for s in students for c in s["clicks"]]
    gains = [s["gains"] * 10 / watch for s in students if s["open"] is not None]
    figures = [s["figures"] * 10 / watch for s in students if s["open"] is not None]
    gaps = [max(s["gaps"]) for s in students if s["gaps"]]
    errors = [e for s in students + pages for e in s["errors"]]
    return {
        "N": level["n"], "cpu": 100 * level["cpu"] / level["wall"],
        "serving": 100 * level["serving_cpu"] / level["wall"], "race_cpu": 100 * level["race_cpu"] / level["wall"],
        "rss": level["rss_peak"], "per_session": (level["rss_peak"] - level["rss0"]) / level["n"],
        "open50": statistics.median([s["open"] for s in students if s["open"] is not None] or [float("nan")]),
        "click50": statistics.median(clicks or [float("nan")]), "click95": percentile(clicks, 0.95),
        "bclick50": statistics.median([c for p in pages for c in p["clicks"]] or [float("nan")]),
        "bclick95": percentile([c for p in pages for c in p["clicks"]], 0.95),
        "gains50": statistics.median(gains or [float("nan")]), "gains_min": min(gains or [float("nan")]),
        "figs50": statistics.median(figures or [float("nan")]), "gap_ok": sum(g <= 10.0 for g in gaps),
        "pages_grew": sum(p["gains"] > 0 for p in pages), "pages": len(pages),
        "health50": 1000 * statistics.median(level["health"] or [float("nan")]),
        "health95": 1000 * percentile(level["health"], 0.95), "errors": len(errors), "error_list": errors,
        "idle_rate": idle_rate, "rate": level["rate"], "rate_pct": 100 * level["rate"] / idle_rate if idle_rate else float("nan"),
        "client_cpu": level["client_cpu"],
        "msgs": statistics.median([s["messages"] for s in students] or [0]),
        "kb": statistics.median([s["bytes"] for s in students] or [0]) / 1024,
    }


COLUMNS = (  # header, key(s), format
    ("N", "N", "{:>3}"), ("CPU % all/serving/race", ("cpu", "serving", "race_cpu"), "{:>4.0f}/{:>4.0f}/{:>4.0f}"),
    ("RSS MB", "rss", "{:>6.0f}"), ("MB/sess", "per_session", "{:>6.1f}"), ("open p50 s", "open50", "{:>6.2f}"),
    ("click p50/p95 s", ("click50", "click95"), "{:>5.2f}/{:>5.2f}"),
    ("browser p50/p95 s", ("bclick50", "bclick95"), "{:>5.2f}/{:>5.2f}"),
    ("figs/10s", "figs50", "{:>5.2f}"), ("fig gap<=10s", "gap_ok", "{:>4}"),
    ("gains/10s p50/min", ("gains50", "gains_min"), "{:>4.2f}/{:>4.2f}"),
    ("pages grew", ("pages_grew", "pages"), "{}/{}"),
    ("health p50/p95 ms", ("health50", "health95"), "{:>5.0f}/{:>5.0f}"),
    ("errors", "errors", "{:>3}"),
    ("race tok/s: idle, loaded (%)", ("idle_rate", "rate", "rate_pct"), "{:>5.0f}, {:>5.0f} ({:>3.0f}%)"),
    ("msgs/KB per student", ("msgs", "kb"), "{:>5.0f}/{:>5.0f}"), ("client CPU s", "client_cpu", "{:>5.1f}"),
)


def table(rows: list[dict]) -> str:
    """The rows as a fixed-width table (one line per N)."""
    cells = [[h for h, _, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(*(row[k] for k in (keys if isinstance(keys, tuple) else (keys,))))
                      for _, keys, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


async def calibrate(server: Server, args, browser, idle: dict) -> list[str]:
    """One protocol session, then one Chromium page, alone on the same URL doing the same, twice each."""
    await protocol_student(server.url, 5.0, 0.0, chapter2=False)  # warm-up: caches filled for both kinds
    idle_serving = idle["serving_cpu"] / idle["wall"]  # the teacher's page and the server idling
    lines, seen = [], {"protocol": [], "chromium": []}
    for kind in ("protocol", "chromium", "protocol", "chromium"):
        window = CpuWindow(server.pid, server.race_threads)
        out = await (protocol_student(server.url, args.watch, 0.0, chapter2=False) if kind == "protocol"
                     else browser_student(browser, server.url, args.watch))
        cpu = window.result()
        net = cpu["serving_cpu"] - idle_serving * cpu["wall"]
        seen[kind].append((net, out["messages"], out["bytes"]))
        lines.append(f"{kind:>8}: {cpu['wall']:6.1f} s, serving CPU {cpu['serving_cpu']:6.2f} s ({net:6.2f} s above "
                     f"the idle server), {out['messages']} messages, {out['bytes'] / 1024:.0f} KB received, "
                     f"errors {len(out['errors'])}" + "".join(f"\n          {e}" for e in out["errors"][:5]))
    p, c = ([statistics.mean(v[i] for v in seen[k]) for i in range(3)] for k in ("protocol", "chromium"))
    lines.append(f"protocol / chromium (means of 2): serving CPU above idle {p[0]:.2f} / {c[0]:.2f} s = "
                 f"{p[0] / c[0]:.2f}; messages {p[1]:.0f} / {c[1]:.0f} = {p[1] / c[1]:.2f}; "
                 f"bytes {p[2] / 1024:.0f} / {c[2] / 1024:.0f} KB = {p[2] / c[2]:.2f}")
    return lines


async def run(server: Server, args) -> tuple[dict, list]:
    """The teacher's race, the idle baseline, then each load level (or the calibration)."""
    from playwright.async_api import async_playwright

    done, problems = asyncio.Event(), []
    race = asyncio.create_task(teacher(server.url, done, problems))
    try:
        idle = await idle_race(server, args.idle)
        async with async_playwright() as p:
            browser = None
            if args.browsers or args.calibrate:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            if args.calibrate:
                return idle, await calibrate(server, args, browser, idle)
            levels = []
            for n in args.sessions:
                before = idle if not levels else await idle_race(server, args.idle)  # the machine's load drifts
                levels.append({**await load_level(server, n, args, browser), "idle_rate": before["rate"]})
                print(f"N={n} measured ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
            return idle, levels
    finally:
        done.set()
        await race
        if problems:
            print("teacher problems:", *problems[:5], sep="\n  ")


def report(args, idle: dict, levels: list[dict]) -> None:
    print(f"machine: {os.cpu_count()} CPUs (server, race, this client and {args.browsers} Chromium pages share "
          f"them); load average before: {args.load_before}; watch {args.watch:g} s, students {args.stagger:g} s apart")
    share = {k: 100 * idle[k] / idle["wall"] for k in ("cpu", "race_cpu", "serving_cpu")}
    print(f"idle server (teacher's page only, race training, {idle['wall']:.0f} s): CPU {share['cpu']:.0f}% (race "
          f"threads {share['race_cpu']:.0f}%, serving {share['serving_cpu']:.0f}%), race {idle['rate']:.0f} tokens/s, "
          f"RSS {idle['rss']:.0f} MB")
    rows = [summary(level, level["idle_rate"], args.watch) for level in levels]
    print(table(rows))
    print("CPU %: of one core (200 = both), over the level; serving = all minus the race's threads. MB/sess: (peak RSS"
          " - RSS before) / N. click: protocol students' Next, Back and slider, to script_finished; browser: Next and"
          " Back to the new heading drawn. figs/10s: live race figures a student received per 10 s watched (p50);"
          " fig gap<=10s: students who never waited >10 s for one; gains/10s: figures that held more points than the"
          " one before. race tok/s: idle = the race alone for --idle s just before the level.")
    for row in rows:
        if row["error_list"]:
            seen = {}
            for e in row["error_list"]:
                seen[e] = seen.get(e, 0) + 1
            print(f"errors at N={row['N']}:" + "".join(f"\n  {k} x {e}" for e, k in list(seen.items())[:10]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 20, 30, 50],
                    help="protocol students per level, comma-separated (default 1,10,20,30,50)")
    ap.add_argument("--watch", type=float, default=60.0, help="seconds each student watches the live race")
    ap.add_argument("--stagger", type=float, default=0.2, help="seconds between two students opening the link")
    ap.add_argument("--browsers", type=int, default=2, help="real Chromium pages beside the students at each level")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds the race trains alone first (its idle speed)")
    ap.add_argument("--calibrate", action="store_true",
                    help="compare one protocol session with one Chromium page instead (CPU, messages)")
    args = ap.parse_args()
    args.load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    port = free_port()
    runs = Path(tempfile.mkdtemp(prefix="hyperclone-classroom-"))
    env = dict(os.environ, HYPERCLONE_RUNS=str(runs), HF_HUB_OFFLINE="1")
    log = runs / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([*SERVE, "serve", "--lan", "--port", str(port), "--token", TOKEN], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://localhost:{port}", proc.pid, runs)
    try:
        wait_until_healthy(proc, server.url, log)
        idle, result = asyncio.run(run(server, args))
    finally:
        stop(proc)
    if args.calibrate:
        print(f"calibration: one session alone on /lesson?chapter=4 (open, watch {args.watch:g} s, Next, Back) while"
              f" the race trains; load average before: {args.load_before}")
        print("\n".join(result))
    else:
        report(args, idle, result)


if __name__ == "__main__":
    main()
