"""The notebooks' test harness (nbmake runs each notebook in a kernel, nbclient waits for each cell's reply).

nbclient waits for a cell's execute reply with one ``shell_channel.get_msg(timeout=...)``, a single zmq poll
over the whole per-cell timeout. After a cell that creates ipywidgets (e.g. notebook 02's first ``interact``)
that poll sometimes misses the reply's arrival and only returns when the timeout ends, so the notebook passes
~300 s late (one notebook, 01 or 02, in each of 5 fresh-clone runs on 2026-12-02; jupyter/nbclient#312).
Polling in one-second slices up to the same deadline sees the reply within a second; nothing else about
how a notebook runs or what it must print changes.

Every notebook is marked ``slow`` (each runs for tens of seconds to minutes): ``python -m pytest`` runs them,
the fast loop ``python -m pytest -m "not slow"`` leaves them out.
"""

from __future__ import annotations

import time
from queue import Empty

import pytest
from jupyter_client.channels import AsyncZMQSocketChannel

POLL_SLICE_S = 1.0


async def get_msg_in_slices(self, timeout: float | None = None) -> dict:
    """``AsyncZMQSocketChannel.get_msg`` with the same timeout, polled in slices of ``POLL_SLICE_S``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = POLL_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
        if await self.socket.poll(int(min(POLL_SLICE_S, left) * 1000)):
            return await self._recv()
        if deadline is not None and time.monotonic() >= deadline:
            raise Empty


AsyncZMQSocketChannel.get_msg = get_msg_in_slices


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every notebook (an nbmake item) slow."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
