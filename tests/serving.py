"""Starting a dashboard server for a test: a free localhost port, waiting until it answers, and talking to a
served page over Streamlit's websocket."""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

RECV_GUARD_S = 180.0  # per websocket message: a hang guard, far above a busy machine's slowest script run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, url: str, log: Path, seconds: float = 300) -> None:
    """Return once ``url`` answers Streamlit's health check; raise with the log's tail if it never does (``seconds``:
    a hang guard, far above a busy machine's start-up)."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"streamlit did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def streamlit_run(script: str, port: int) -> list[str]:
    """``streamlit run SCRIPT`` on ``port`` of localhost, headless, without usage statistics."""
    return [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true", "--server.port", str(port),
            "--server.address", "localhost", "--browser.gatherUsageStats", "false"]


@contextlib.contextmanager
def served(command: list, port: int, cwd: Path, env: dict, log_path: Path) -> Iterator[str]:
    """``command`` (a dashboard server on ``port``) running in ``cwd`` with ``env``, its output in ``log_path``:
    its URL once it answers; stopped afterwards."""
    url = f"http://localhost:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(a) for a in command], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(proc, url, log_path)
            yield url
        finally:
            stop(proc)


def serve_args(**kw) -> argparse.Namespace:
    """The arguments of ``hyperclone serve`` (its defaults, changed by ``kw``)."""
    return argparse.Namespace(**{"port": 8501, "lan": False, "token": None, **kw})


class Session:
    """One page of a served dashboard over Streamlit's websocket: send a rerun, read what it drew."""

    def __init__(self, ws, query: str) -> None:
        self.ws, self.query, self.ids = ws, query, {}

    def send(self, **fields) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg(**fields)
        self.ws.send(msg.SerializeToString())

    def run(self, **widgets) -> list[tuple[str, str]]:
        """Rerun with ``widgets`` (key -> value; True clicks a button): the (element type, text) drawn."""
        from streamlit.proto.ClientState_pb2 import ClientState
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        states = [WidgetState(id=self.ids[k], **({"trigger_value": True} if v is True else {"string_value": v}))
                  for k, v in widgets.items()]
        self.send(rerun_script=ClientState(query_string=self.query, widget_states={"widgets": states}))
        drawn = []
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(self.ws.recv(timeout=RECV_GUARD_S))
            if msg.WhichOneof("type") == "script_finished":
                return drawn
            if msg.WhichOneof("type") == "delta" and msg.delta.WhichOneof("type") == "new_element":
                kind = msg.delta.new_element.WhichOneof("type")
                element = getattr(msg.delta.new_element, kind)
                if getattr(element, "id", ""):
                    self.ids[element.id.rsplit("-", 1)[-1]] = element.id
                drawn.append((kind, str(getattr(element, "body", getattr(element, "label", "")))))


@contextlib.contextmanager
def page_session(url: str, query: str) -> Iterator[Session]:
    """A page of the dashboard served at ``url`` (http), opened with ``query`` over a bare websocket."""
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"], max_size=None) as ws:
        yield Session(ws, query)
