"""The one door to transformers' ``from_pretrained``: remote code is opt-in, and nothing ever prompts.

A checkpoint whose ``config.json`` (or ``tokenizer_config.json``) has an
``auto_map`` ships its own Python code. Left to its default
(``trust_remote_code=None``), transformers asks "[y/N]" on a terminal and runs
that code on "y" (and fails with a traceback without a terminal). Every load
here passes ``trust_remote_code`` as an explicit bool, so transformers either
uses its own classes or refuses, and the refusal becomes one line naming the
flag. Importing this module is cheap (no torch, no transformers).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

from hyperclone.core.errors import SourceError

if TYPE_CHECKING:
    import torch

# transformers and accelerate build models under process-wide patches (``init_empty_weights`` replaces
# ``nn.Module.register_parameter``; skipped initialisation replaces ``torch.nn.init``), so two threads
# building models at once (two dashboard pages, a page and a race) can corrupt each other: a loaded model
# left on the meta device, or a random init silently skipped. Every model built in hyperclone holds this.
MODEL_BUILDING = threading.RLock()


def needs_remote_code(where: str | os.PathLike) -> SourceError:
    """The one-line refusal for a checkpoint that can only load by running its own code."""
    return SourceError(
        f"{where} needs to run its own Python code to load (its config names custom classes in auto_map); "
        "nothing of it was run. Pass --trust-remote-code (trust_remote_code=True) only if you trust that code"
    )


@contextlib.contextmanager
def quiet_weight_loading():
    """No "Loading weights" progress bar while a local checkpoint loads (downloads happen before, with their own
    bars): it is noise beside HyperClone's one-line output. Under ``MODEL_BUILDING``, so no other load races it;
    transformers' setting is put back afterwards. ``hyperclone -v`` keeps the bar."""
    import logging

    from transformers.utils import logging as hf_logging

    if logging.getLogger("hyperclone").isEnabledFor(logging.DEBUG) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def from_pretrained(auto_class: Any, where: str | os.PathLike, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(where, **kwargs)`` with ``trust_remote_code`` always an explicit bool.

    ``auto_class`` is ``AutoConfig``, ``AutoTokenizer`` or ``AutoModelForCausalLM``.
    A checkpoint that needs its own code, without ``trust_remote_code``,
    raises ``SourceError`` (transformers refuses before importing any of it).
    """
    trust = bool(trust_remote_code)  # never None: None is what makes transformers prompt
    try:
        with MODEL_BUILDING, quiet_weight_loading():
            return auto_class.from_pretrained(where, trust_remote_code=trust, **kwargs)
    except ValueError as e:
        if not trust and "trust_remote_code" in str(e):
            raise needs_remote_code(where) from None
        raise


def meta_model(config) -> "torch.nn.Module":
    """The model ``config`` describes, on the meta device: its weight names and shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with MODEL_BUILDING, torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def state_shapes(model: "torch.nn.Module") -> dict[str, tuple[int, ...]]:
    """Each state-dict name of ``model`` with its shape, in state-dict order."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
