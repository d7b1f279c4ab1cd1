"""The Hugging Face hub: whether it answers, fetching files of a model repository into its cache, and pushing a
finished clone to it.

No network at run time unless asked: every fetch is local-cache-only when the
hub does not answer, and every failure is one line naming the repository. A push
is checked (repository id, offline mode, token, the hub answering, the token
accepted) before any work, and uploads only a finished output directory.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from hyperclone.core.errors import HyperCloneError, SourceError, first_line, quoted

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT`` as set now (huggingface_hub reads it once, at import), else the default."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def hub_offline() -> bool:
    """Whether offline mode is asked for (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (``hub_endpoint()``) answers a HEAD request within ``timeout`` seconds.

    Without this check an offline machine spends ~25 s in the hub client's
    retries before failing. Offline mode (``HF_HUB_OFFLINE``) counts as
    unreachable. Any HTTP answer, an error status included, means it answers;
    proxies set in the environment are used as the hub client uses them.
    """
    if hub_offline():
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(hub_endpoint(), method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, refused, timed out, a malformed HF_ENDPOINT
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


def hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub model ``repo_id`` (fetched when the hub answers, else from the cache), or None."""
    try:
        path = hub_snapshot(repo_id, [filename], offline=not hub_reachable()) / filename
    except SourceError:
        return None
    return path if path.is_file() else None


def check_push(repo_id: str) -> str:
    """The token to push to hub model repository ``repo_id`` with, or one line saying why a push cannot work.

    Checked before any work, in this order: the id's form, offline mode, a token
    (``HF_TOKEN`` or a saved login), the hub answering (a short HEAD request), the
    hub accepting the token.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HyperCloneError(f"--push-to-hub {quoted(repo_id)} is not a hub repository id; give NAME or "
                              "OWNER/NAME (letters, digits, '-', '_', '.')") from None
    if hub_offline():
        raise HyperCloneError("cannot push to the Hugging Face hub in offline mode (HF_HUB_OFFLINE is set); unset "
                              "it, or clone without --push-to-hub and upload later")
    token = get_token()
    if not token:
        raise HyperCloneError("no Hugging Face token to push with; set HF_TOKEN or run `hf auth login`, "
                              "then clone again (nothing was cloned)")
    if not hub_reachable(timeout=5.0):
        raise HyperCloneError(f"the Hugging Face hub ({hub_endpoint()}) does not answer; check the network or "
                              "HF_ENDPOINT, or clone without --push-to-hub (nothing was cloned)")
    try:
        HfApi(endpoint=hub_endpoint(), token=token).whoami()
    except Exception as e:  # the hub client raises many types; the user needs one line
        raise HyperCloneError(f"the Hugging Face hub refused the token ({first_line(e, 120)}); set a valid "
                              "HF_TOKEN with write access (nothing was cloned)") from None
    return token


def push_folder(folder: str | os.PathLike, repo_id: str, token: str, private: bool = False,
                files: list[str] | None = None) -> str:
    """Upload the finished output ``folder`` (only its ``files``, when given) to hub model repository ``repo_id``
    (created when missing, ``private`` then); its address. A failure is one line saying the clone is kept and how
    to upload it again."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=url.repo_id, folder_path=folder, allow_patterns=files,
                          commit_message="Upload a HyperClone clone")
    except Exception as e:  # the hub client raises many types; the user needs one line
        raise HyperCloneError(f"the clone is saved at {folder} but uploading it to {repo_id} failed "
                              f"({first_line(e, 120)}); upload it with `hf upload {repo_id} {folder}`") from None
    return str(url)
