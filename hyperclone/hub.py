"""The Hugging Face hub: whether it answers, and fetching files of a model repository into its cache.

No network at run time unless asked: every fetch is local-cache-only when the
hub does not answer, and every failure is one line naming the repository.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import SourceError, first_line


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout`` seconds.

    Without this check an offline machine spends ~25 s in the hub client's
    retries before failing. Offline mode (``HF_HUB_OFFLINE``) counts as
    unreachable; behind a proxy we cannot tell, so we assume reachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_snapshot(repo_id: str, patterns: list[str], offline: bool) -> Path:
    """The local directory holding the files of ``repo_id`` matching ``patterns`` (fetched unless ``offline``)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except Exception as e:  # the hub client raises many types; the user needs one line
        if offline:
            raise SourceError(f"could not reach the Hugging Face hub to fetch '{repo_id}' (and it is not in "
                              "the local cache)") from None
        raise SourceError(f"could not fetch '{repo_id}' from the Hugging Face hub: {first_line(e)}") from None
