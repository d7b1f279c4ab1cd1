"""What the dashboard's pages share: one-line errors, where runs live, the view in the URL, presenter style."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

import streamlit as st

from hyperclone.errors import HyperCloneError, first_line
from hyperclone.growth import Growth
from hyperclone.resources import is_out_of_memory
from hyperclone.runs import is_run_dir

log = logging.getLogger("hyperclone.app")


def error_line(e: BaseException, doing: str) -> str:
    """A one-line message for ``e``, raised while ``doing`` something."""
    if isinstance(e, HyperCloneError):
        msg = str(e)
    elif is_out_of_memory(e):
        msg = f"out of memory while {doing}; use a smaller factor, bfloat16, or another device"
    else:
        first = first_line(e)
        msg = f"{doing} failed ({type(e).__name__}: {first}); check the inputs and try again (details in the terminal)"
        log.error("%s failed", doing, exc_info=e)
    return " ".join(msg.split())


def runs_dir() -> Path:
    """Where races are saved: ``$HYPERCLONE_RUNS``, default ``runs/`` beside the app."""
    return Path(os.environ.get("HYPERCLONE_RUNS") or Path(__file__).resolve().parent.parent / "runs")


def past_runs() -> list[Path]:
    """The run directories under ``runs_dir()``, newest first (by name: they start with a timestamp)."""
    root = runs_dir()
    found = [p for p in root.iterdir() if is_run_dir(p)] if root.is_dir() else []
    return sorted(found, key=lambda p: p.name, reverse=True)


def safe_name(source: str) -> str:
    """A source name as a file-name fragment (``org/model`` -> ``model``, odd characters -> ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name or source).strip("-")


def owner_id() -> str:
    """This browser session's id: what its races and outputs are owned by."""
    return st.session_state.setdefault("owner_id", secrets.token_hex(8))


def growth_params(growth: Growth) -> dict[str, str | None]:
    """The growth settings as URL parameters, with the CLI's names (None: left out)."""
    return {"factor": str(growth.factor), "ffn_factor": None if growth.ffn_factor == growth.factor else
            str(growth.ffn_factor), "variant": growth.variant, "snr_db": f"{growth.snr_db:g}", "seed": str(growth.seed),
            "depth": str(growth.depth) if growth.depth > 1 else None, "stack": "1" if growth.stack else None}


def growth_from_params(params: Mapping[str, Any], default: Growth | None = None) -> Growth:
    """The ``Growth`` a URL describes (missing values from ``default``); a one-line error for a bad value."""
    base = default or Growth(2, None, "symmetric")
    try:
        factor = int(params.get("factor", base.factor))
        ffn = params.get("ffn_factor")
        return Growth(factor, int(ffn) if ffn not in (None, "") else None, str(params.get("variant", base.variant)),
                      float(params.get("snr_db", base.snr_db)), int(params.get("seed", base.seed)),
                      depth=int(params.get("depth", base.depth)), stack=params.get("stack") == "1")
    except ValueError as e:
        raise HyperCloneError(f"a growth setting in the link is not a number ({first_line(e)})") from None


def write_params(state: Mapping[str, str | None]) -> bool:
    """Make the URL hold ``state`` (None removes a key); True when it changed."""
    params = st.query_params
    changed = False
    for key, value in state.items():
        if value is None and key in params:
            del params[key]
            changed = True
        elif value is not None and params.get(key) != value:
            params[key] = value
            changed = True
    return changed


def query_link(state: Mapping[str, str | None]) -> str:
    """The full link to the view ``state`` describes, on this server."""
    base = str(getattr(st.context, "url", "") or "").split("?")[0]
    return f"{base}?{urlencode({k: v for k, v in state.items() if v is not None})}"


PRESENTER_CSS = """
<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"] {
  display: none !important;
}
html, body, .stMarkdown, .stCaption, p, li, label, button { font-size: 22px !important; }
h3 { font-size: 34px !important; }
.block-container { padding-top: 0.6rem !important; padding-bottom: 0.5rem !important; max-width: 100% !important; }
</style>
"""


def apply_presenter_style(on: bool) -> None:
    """For a projector: no sidebar or header, larger text (figures take ``font_size`` themselves)."""
    if on:
        st.html(PRESENTER_CSS)
