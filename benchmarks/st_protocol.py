"""A Streamlit client at the protocol level: one simulated browser session, without a browser.

It speaks what Streamlit's own frontend speaks (read from the installed ``streamlit`` package: the server's
``web/server/starlette/starlette_websocket.py`` and the frontend bundle
``static/static/js/index.*.js``):

* HTTP first, as a page load does: the page's HTML, the health check (which sets the ``_streamlit_xsrf``
  cookie) and ``/_stcore/host-config``; the JS/CSS bundles are not fetched (a browser caches them after the
  first visit; ``--calibrate`` in ``classroom_load.py`` measures what that leaves out).
* a websocket on ``/_stcore/stream`` with the subprotocol list ``streamlit, <xsrf cookie>`` (the second entry
  is the XSRF token the server checks against the cookie; a third one would name a session to reconnect);
* a ``rerun_script`` BackMsg with the page's query string and page name (``lesson``; later reruns name the
  ``page_script_hash`` of the page shown, from ``navigation`` or ``new_session``, as the browser does), the
  timezone/locale context, and the hashes of the messages it holds in its cache;
* ForwardMsgs as the frontend handles them: a message with ``metadata.cacheable`` is kept by its hash, a
  ``ref_hash`` message is replaced by the cached one, and entries expire as in the frontend's
  ``ForwardMsgCache`` (age in finished script runs > ``maxCachedMessageAge``, fragment runs age only their
  own fragment's messages); ``page_info_changed`` updates the URL's query string;
* ``auto_rerun`` (a ``run_every`` fragment): the frontend runs ``setInterval`` that sends ``rerun_script``
  with the fragment id and ``is_auto_rerun`` every ``interval`` seconds, whether or not the last run has
  finished; ``stop_auto_rerun`` clears it. Done the same way here;
* a click: a ``rerun_script`` whose widget states hold the button's ``trigger_value`` (the button is found by
  its label in the elements drawn last); a slider move sends its ``double_array_value``. Widgets the client
  never touched are left out of the widget states (the server keeps their values), where the browser lists
  every widget's value: a few dozen bytes per rerun.

Per session it records the messages and bytes received (by type), script runs, the live figure's deliveries
(a plotly chart whose key ends with ``live_key``) and how many of them held more points than the one before,
the click -> ``script_finished`` times, and errors (exception elements, error alerts, protocol failures).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

FINISHED = ForwardMsg.ScriptFinishedStatus
MAX_CACHED_MESSAGE_AGE = 2  # Streamlit's default global.maxCachedMessageAge (the frontend reads it from new_session)


@dataclass
class SessionStats:
    """What one session received and measured."""

    messages: int = 0
    bytes: int = 0
    by_type: Counter = field(default_factory=Counter)
    bytes_by_type: Counter = field(default_factory=Counter)
    full_runs: int = 0
    fragment_runs: int = 0
    live_figures: list[float] = field(default_factory=list)  # when each live figure arrived (perf_counter)
    live_growths: list[float] = field(default_factory=list)  # when one held more points than the one before
    clicks: list[tuple[str, float]] = field(default_factory=list)  # (label, seconds to script_finished)
    errors: list[str] = field(default_factory=list)


def element_kind(msg: ForwardMsg) -> str:
    """The message's type; for a delta, the element's type (``delta:plotly_chart``)."""
    kind = msg.WhichOneof("type") or "?"
    if kind == "delta":
        which = msg.delta.WhichOneof("type")
        if which == "new_element":
            return f"delta:{msg.delta.new_element.WhichOneof('type')}"
        return f"delta:{which}"
    return kind


def figure_points(spec: str) -> int:
    """How many points a plotly figure's traces hold (x values over all traces)."""
    try:
        data = json.loads(spec).get("data", [])
    except (ValueError, AttributeError):
        return -1
    return sum(len(t.get("x") or []) for t in data if isinstance(t, dict))


class MessageCache:
    """The frontend's ForwardMsgCache: cacheable messages by hash, aged in finished script runs."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[bytes, int, str]] = {}  # hash -> (payload, run count when used, fragment)
        self.run_count = 0

    def hashes(self) -> list[str]:
        return list(self.messages)

    def process(self, msg: ForwardMsg, payload: bytes) -> ForwardMsg:
        """Cache ``msg`` if cacheable; return the message a ``ref_hash`` stands for (KeyError: a miss)."""
        if msg.WhichOneof("type") != "ref_hash":
            if msg.metadata.cacheable and msg.hash and msg.hash not in self.messages:
                self.messages[msg.hash] = (payload, self.run_count, msg.delta.fragment_id)
            return msg
        data, _, fragment = self.messages[msg.ref_hash]
        self.messages[msg.ref_hash] = (data, self.run_count, fragment)
        full = ForwardMsg()
        full.ParseFromString(data)
        full.metadata.CopyFrom(msg.metadata)
        return full

    def script_finished(self, fragment_ids: list[str], max_age: int = MAX_CACHED_MESSAGE_AGE) -> None:
        self.run_count += 1
        for h, (_, used, fragment) in list(self.messages.items()):
            if fragment_ids and (not fragment or fragment not in fragment_ids):
                continue
            if self.run_count - used > max_age:
                del self.messages[h]


def http_get(url: str, timeout: float) -> tuple[bytes, str | None]:
    """The body of ``url`` and the XSRF cookie it set, if any."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        cookies = r.headers.get_all("Set-Cookie") or []
        body = r.read()
    xsrf = next((c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("_streamlit_xsrf=")), None)
    return body, xsrf


class Session:
    """One simulated student: ``await open()``, then ``watch``, ``click``, ``set_slider``; ``await close()``."""

    def __init__(self, base_url: str, page: str = "lesson", query: str = "chapter=4",
                 live_key: str = "lesson_live_loss", timeout: float = 600.0) -> None:
        self.base, self.page, self.query = base_url.rstrip("/"), page, query
        self.live_key, self.timeout = live_key, timeout
        self.page_hash = ""
        self.stats = SessionStats()
        self.cache = MessageCache()
        self.elements: dict[tuple[int, ...], tuple[int, object]] = {}  # delta path -> (full run number, element)
        self.sticky: dict[str, object] = {}  # widget id -> WidgetState this client set (slider values)
        self.timers: dict[str, tuple[float, asyncio.Task]] = {}
        self.run_started: dict[str, float] = {}  # script_run_id -> when its new_session arrived
        self.full_runs: list[tuple[float, float]] = []  # (start, finish) of each full run that finished
        self.changed = asyncio.Condition()
        self.live_points: int | None = None  # in the live figure received last
        self.full_run_number = 0
        self.ws = None
        self.receiver: asyncio.Task | None = None

    async def open(self) -> float:
        """Load the page as a browser does; seconds until its first script run finished."""
        t0 = time.perf_counter()
        url = f"{self.base}/{self.page}" + (f"?{self.query}" if self.query else "")
        xsrf = None
        for address in (url, f"{self.base}/_stcore/health", f"{self.base}/_stcore/host-config"):
            xsrf = (await asyncio.to_thread(http_get, address, self.timeout))[1] or xsrf  # health sets the cookie
        headers = {"Origin": self.base}
        if xsrf:
            headers["Cookie"] = f"_streamlit_xsrf={xsrf}"
        protocols = ["streamlit"] + ([xsrf] if xsrf else [])
        address = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        self.ws = await websockets.connect(address, subprotocols=protocols, additional_headers=headers, max_size=None,
                                           open_timeout=self.timeout, ping_interval=None)
        self.receiver = asyncio.create_task(self.receive())
        await self.rerun_and_wait(None)
        return time.perf_counter() - t0

    async def close(self) -> None:
        for _, task in self.timers.values():
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.receiver is not None:
            self.receiver.cancel()
            await asyncio.gather(self.receiver, return_exceptions=True)

    async def send_rerun(self, trigger: str | None = None, fragment_id: str = "", auto: bool = False) -> None:
        msg = BackMsg()
        rerun = msg.rerun_script
        rerun.query_string = self.query
        if self.page_hash:
            rerun.page_script_hash = self.page_hash
        else:
            rerun.page_name = self.page
        rerun.fragment_id = fragment_id
        rerun.is_auto_rerun = auto
        rerun.cached_message_hashes.extend(self.cache.hashes())
        rerun.context_info.timezone, rerun.context_info.locale = "UTC", "en-US"
        rerun.context_info.url = f"{self.base}/{self.page}?{self.query}"
        for state in self.sticky.values():
            rerun.widget_states.widgets.add().CopyFrom(state)
        if trigger is not None:
            w = rerun.widget_states.widgets.add()
            w.id, w.trigger_value = trigger, True
        await self.ws.send(msg.SerializeToString())

    async def rerun_and_wait(self, trigger: str | None) -> float:
        """Send a full rerun (with a button's trigger); seconds until a full run started after it finished."""
        t0 = time.perf_counter()
        await self.send_rerun(trigger)
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: any(s >= t0 for s, _ in self.full_runs)),
                                   self.timeout)
        return next(f for s, f in self.full_runs if s >= t0) - t0

    async def receive(self) -> None:
        try:
            async for payload in self.ws:
                await self.handle(payload)
        except websockets.ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code != 1000:
                self.stats.errors.append(f"websocket closed by the server: {e.rcvd.code} {e.rcvd.reason}")
        except Exception as e:  # noqa: BLE001 - recorded: a client that fails is a finding, not a crash
            self.stats.errors.append(f"client error: {type(e).__name__}: {e}")
            raise

    async def handle(self, payload: bytes) -> None:
        msg = ForwardMsg()
        msg.ParseFromString(payload)
        kind = element_kind(msg)
        self.stats.messages += 1
        self.stats.by_type[kind] += 1
        self.stats.bytes += len(payload)
        self.stats.bytes_by_type[kind] += len(payload)
        try:
            msg = self.cache.process(msg, payload)
        except KeyError:
            self.stats.errors.append(f"cached message missing: {msg.ref_hash}")
            return
        which = msg.WhichOneof("type")
        if which == "delta":
            self.on_delta(msg)
        elif which == "new_session":
            self.on_new_session(msg)
        elif which == "navigation":  # st.navigation: the page now shown (new_session names the main script)
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif which == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif which == "auto_rerun":
            self.on_auto_rerun(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif which == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                self.stop_timer(fid)
        elif which == "script_finished":
            await self.on_finished(msg)

    def on_new_session(self, msg: ForwardMsg) -> None:
        self.page_hash = msg.new_session.page_script_hash or self.page_hash
        self.run_started[msg.metadata.run.script_run_id] = time.perf_counter()
        if not msg.metadata.run.fragment_ids:  # a full run: the frontend clears every auto-rerun timer
            self.full_run_number += 1
            for fid in list(self.timers):
                self.stop_timer(fid)

    def on_delta(self, msg: ForwardMsg) -> None:
        if msg.delta.WhichOneof("type") != "new_element":
            return
        element = msg.delta.new_element
        self.elements[tuple(msg.metadata.delta_path)] = (self.full_run_number, element)
        kind = element.WhichOneof("type")
        if kind == "exception":
            self.stats.errors.append(f"exception: {element.exception.type}: {element.exception.message[:200]}")
        elif kind == "alert" and element.alert.format == element.alert.ERROR:
            self.stats.errors.append(f"error box: {element.alert.body[:200]}")
        elif kind == "plotly_chart" and element.plotly_chart.id.endswith(self.live_key):
            self.stats.live_figures.append(time.perf_counter())
            points = figure_points(element.plotly_chart.spec)
            if self.live_points is not None and points > self.live_points:  # (a new race starts with fewer)
                self.stats.live_growths.append(time.perf_counter())
            self.live_points = points

    async def on_finished(self, msg: ForwardMsg) -> None:
        status, run = msg.script_finished, msg.metadata.run
        if status == FINISHED.FINISHED_EARLY_FOR_RERUN:
            return
        self.cache.script_finished(list(run.fragment_ids))
        if run.fragment_ids or status == FINISHED.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
            self.stats.fragment_runs += 1
            return
        self.stats.full_runs += 1
        self.elements = {p: (n, e) for p, (n, e) in self.elements.items() if n == self.full_run_number}
        started = self.run_started.pop(run.script_run_id, None)
        if started is not None:
            async with self.changed:
                self.full_runs.append((started, time.perf_counter()))
                self.changed.notify_all()

    def on_auto_rerun(self, fragment_id: str, interval: float) -> None:
        if not fragment_id or (fragment_id in self.timers and self.timers[fragment_id][0] == interval):
            return
        self.stop_timer(fragment_id)
        self.timers[fragment_id] = (interval, asyncio.create_task(self.every(fragment_id, interval)))

    def stop_timer(self, fragment_id: str) -> None:
        entry = self.timers.pop(fragment_id, None)
        if entry is not None:
            entry[1].cancel()

    async def every(self, fragment_id: str, interval: float) -> None:
        """The browser's ``setInterval``: a fragment rerun every ``interval`` s, finished or not."""
        while True:
            await asyncio.sleep(interval)
            await self.send_rerun(fragment_id=fragment_id, auto=True)

    # ------------------------------------------------------------------ what a student does
    def widget(self, label: str, kind: str = "button"):
        """The last drawn widget of ``kind`` whose label is ``label`` (LookupError if none)."""
        for _, element in reversed(list(self.elements.values())):
            if element.WhichOneof("type") == kind and getattr(element, kind).label == label:
                return getattr(element, kind)
        raise LookupError(f"no {kind} labelled {label!r} on the page")

    def texts(self) -> list[str]:
        """Headings and markdown currently drawn."""
        out = []
        for _, element in self.elements.values():
            kind = element.WhichOneof("type")
            if kind in ("heading", "markdown"):
                out.append(getattr(element, kind).body)
        return out

    async def click(self, label: str) -> float:
        """Click the button labelled ``label``; seconds until the full run it started finished."""
        seconds = await self.rerun_and_wait(self.widget(label).id)
        self.stats.clicks.append((label, seconds))
        return seconds

    async def set_slider(self, label: str, value: float) -> float:
        """Move the slider labelled ``label`` to ``value``; seconds until the run it started finished."""
        state = WidgetState()
        state.id = self.widget(label, "slider").id
        state.double_array_value.data.append(float(value))
        self.sticky[state.id] = state
        seconds = await self.rerun_and_wait(None)
        self.stats.clicks.append((f"{label}={value:g}", seconds))
        return seconds

    async def watch(self, seconds: float) -> None:
        """Stay on the page (the fragment timers keep running) for ``seconds``."""
        await asyncio.sleep(seconds)
