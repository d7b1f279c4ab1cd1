"""Where source models come from: the built-in assets, a local checkpoint, a hub id.

``load_source`` is the one door: it resolves a name, refuses what it cannot
clone (an unsupported family, pickle checkpoints unless asked, remote code) in
one line before loading any weights, and returns ``(model, tokenizer)`` in
float32 on the best available device. The built-in models are small trained
checkpoints shipped in ``hyperclone/assets`` so everything works offline.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hyperclone.io.checkpoint import (INDEX_FILE, SINGLE_FILE, TOKENIZER_FILES, check_weights_agree, has_tokenizer, open_safetensors,
                         weight_files)
from hyperclone.core.errors import MissingSourceError, SourceError, first_line, shown
from hyperclone.io.hub import hub_reachable, hub_snapshot
from hyperclone.core.pretrained import from_pretrained
from hyperclone.assets import ASSETS_DIR
from hyperclone.specs.moe import check_expert_counts

BUILTIN_NAMES = ("tiny-gpt2-stdlib", "tiny-llama-stdlib", "micro-gpt2-stdlib", "micro-llama-stdlib")


# --------------------------------------------------------------------------- #
# Catalogue
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SourceInfo:
    """What the dashboard and ``hyperclone sources`` show about a source model."""

    name: str
    family: str  # transformers model_type
    params: int
    size_mb: float
    val_loss: float | None = None  # built-in only: measured on the built-in validation split
    val_accuracy: float | None = None
    builtin: bool = True
    note: str = ""
    purpose: str = ""  # what a built-in model is for, in one line (its card's)


def builtin_dir(name: str) -> Path:
    """Directory of a built-in model (whether or not it has been built)."""
    return ASSETS_DIR / name


def read_card(name: str) -> dict:
    """The measured figures of a built-in model (``card.json``, written by the build)."""
    path = builtin_dir(name) / "card.json"
    if not path.exists():
        raise MissingSourceError(
            f"built-in model '{name}' is missing ({path}); rebuild it with "
            "`python -m hyperclone.cli.build_assets`"
        )
    return json.loads(path.read_text())


def list_sources() -> list[SourceInfo]:
    """The built-in models with their size and validation loss (from each card)."""
    out = []
    for name in BUILTIN_NAMES:
        card = read_card(name)
        out.append(
            SourceInfo(
                name=name,
                family=card["family"],
                params=card["params"],
                size_mb=round((builtin_dir(name) / SINGLE_FILE).stat().st_size / 2**20, 2),
                val_loss=card["val_loss"],
                val_accuracy=card["val_accuracy"],
                note=card.get("summary", ""),
                purpose=card.get("purpose", ""),
            )
        )
    return out


def __getattr__(name: str) -> Any:
    # BUILTIN is read from the cards on first use, so importing this module
    # never fails even when the assets are being rebuilt.
    if name == "BUILTIN":
        return {s.name: s for s in list_sources()}
    raise AttributeError(name)


def _hub(name: str, family: str, params_m: float, note: str = "") -> SourceInfo:
    # Size as float32 weights, since that is how load_source loads them.
    params = int(params_m * 1e6)
    return SourceInfo(name, family, params, round(params * 4 / 2**20, 1), builtin=False, note=note)


# Curated hub checkpoints for the dashboard (needs network). Parameter counts
# are the published totals, rounded; all ship safetensors.
HUB_PRESETS: list[SourceInfo] = [
    _hub("EleutherAI/pythia-70m", "gpt_neox", 70.4, "Pythia suite, one of the paper's families"),
    _hub("EleutherAI/pythia-160m", "gpt_neox", 162.3),
    _hub("openai-community/gpt2", "gpt2", 124.4, "tied embeddings"),
    _hub("facebook/opt-125m", "opt", 125.2, "one of the paper's families"),
    _hub("HuggingFaceTB/SmolLM2-135M", "llama", 134.5, "GQA, tied embeddings"),
    _hub("HuggingFaceTB/SmolLM2-360M", "llama", 361.8),
    _hub("Qwen/Qwen2.5-0.5B", "qwen2", 494.0, "GQA with q/k/v biases"),
    _hub("Qwen/Qwen3-0.6B", "qwen3", 596.0, "per-head q/k norms"),
    _hub("google/gemma-3-270m", "gemma3_text", 268.1, "gated: accept the licence on the hub first"),
    _hub("allenai/OLMo-1B-hf", "olmo", 1176.8, "non-parametric LayerNorm; the paper's family"),
    _hub("allenai/OLMo-2-0425-1B", "olmo2", 1484.9, "q/k norms over the whole projection"),
    _hub("microsoft/Phi-3-mini-4k-instruct", "phi3", 3821.1, "fused qkv_proj and gate_up_proj"),
]


# --------------------------------------------------------------------------- #
# Devices
# --------------------------------------------------------------------------- #
def default_device() -> torch.device:
    """cuda if present, else Apple mps, else cpu: the fastest place that works."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    # float32 by default: cloning is verified by comparing logits, and half
    # precision would make "identical" mean "close".
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise SourceError(f"unknown dtype '{dtype}' for model weights; use float32, bfloat16, float16, float64 or auto")
    return value


def check_device(device: torch.device | str | None = None) -> torch.device:
    """The device ``device`` names (None or "auto": the best available), or a one-line error saying why not.

    The one device check of the CLI, the API and the dashboard, made before any work.
    """
    if device is None or device == "auto":
        return default_device()
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        where = None
    if where is None or where.type not in ("cpu", "cuda", "mps"):
        raise SourceError(f"unknown device {str(device)!r}; use cuda, mps, cpu or auto (the best one available)")
    if where.type == "cuda":
        if not torch.cuda.is_available():
            why = "was built without CUDA" if torch.version.cuda is None else "finds no CUDA GPU"
            raise SourceError(f"CUDA is not available on this machine (torch {torch.__version__} {why}); "
                              "use device cpu, or auto for the best one available")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise SourceError(f"there is no {where}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              "numbered from cuda:0")
    mps = getattr(torch.backends, "mps", None)
    if where.type == "mps" and not (mps is not None and mps.is_available()):
        raise SourceError("Apple MPS is not available on this machine; use device cpu, or auto for the best one "
                          "available")
    return where


def _supported() -> list[str]:
    from hyperclone.specs import supported_families

    return list(supported_families())


def check_family(config: Any, what: str) -> None:
    """Refuse, in one line naming ``what``, a config of a family hyperclone cannot clone."""
    model_type = getattr(config, "model_type", None)
    supported = _supported()
    if model_type not in supported:
        raise SourceError(
            f"{what} is a '{model_type}' model, which hyperclone cannot clone; "
            f"supported families: {', '.join(sorted(supported))}"
        )


def load_config(where: str | os.PathLike, what: str | None = None, trust_remote_code: bool = False, **kwargs: Any):
    """``AutoConfig.from_pretrained``, naming a model type transformers does not know, or an MoE config that
    cannot route its tokens (``specs.moe.check_expert_counts``), in one line."""
    from transformers import AutoConfig

    try:
        config = from_pretrained(AutoConfig, where, trust_remote_code, **kwargs)
    except ValueError as e:
        made_up = re.search(r"model type `([^`]*)`", str(e))
        if made_up is None or "does not recognize" not in str(e):
            raise
        raise SourceError(
            f"unknown model type {made_up.group(1)!r} in {what or where}: not a transformers architecture; "
            f"supported families: {', '.join(sorted(_supported()))}"
        ) from None
    check_expert_counts(config, what or where)
    return config


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #
def _looks_like_local(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything existing on disk, or written
    # like a path, is a local directory (so a typo gives "not found", not a
    # confusing hub error).
    return (
        os.path.exists(name)
        or name.startswith((".", "~", "/"))
        or os.path.isabs(name)
        or name.endswith(("/", os.sep))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or ("/" in name and Path(name).expanduser().parent.is_dir())  # "runs/clone": under a local directory
    )


def resolve_source(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """(origin, where) of a source: ``("builtin", dir)``, ``("local", dir)`` or ``("hub", id)``."""
    name = str(name_or_path)
    if name in BUILTIN_NAMES:
        path = builtin_dir(name)
        if not (path / "config.json").exists():
            raise MissingSourceError(
                f"built-in model '{name}' is missing ({path}); rebuild it with "
                "`python -m hyperclone.cli.build_assets`"
            )
        return "builtin", str(path)
    if _looks_like_local(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise MissingSourceError(
                f"source model not found (no such directory: {shown(name)}); give a saved checkpoint directory, "
                f"a hub id, or a built-in model ({', '.join(BUILTIN_NAMES)})"
            )
        if not path.is_dir():
            raise SourceError(f"source model must be a directory (with config.json), not a file: {shown(name)}")
        check_source_files(path)
        return "local", str(path)
    return "hub", name


_SOURCE_FILES = ("config.json", "generation_config.json", INDEX_FILE, *TOKENIZER_FILES)  # and the weights


def check_source_files(path: str | os.PathLike) -> None:
    """Refuse, in one line, a source whose files read or copied into a clone are not regular files inside it
    (``tokenizer.json -> /etc/hostname`` would leak into an export); HF cache snapshots may link into ``blobs``."""
    root = Path(path).resolve()
    blobs = root.parent.parent / "blobs"  # root is resolved: no link above blobs
    allowed = [root, *([blobs] if root.parent.name == "snapshots" and blobs.is_dir() and not blobs.is_symlink() else [])]
    for entry in sorted(Path(path).iterdir()):
        if entry.name not in _SOURCE_FILES and entry.suffix not in (".safetensors", ".bin", ".pt"):
            continue
        try:
            real = entry.resolve(strict=True)
            what = "" if stat.S_ISREG(real.stat().st_mode) else f"not a regular file ({real})"
        except (OSError, RuntimeError):  # a dangling link, or a loop
            real, what = None, "a link that leads nowhere"
        if not what and not any(real.is_relative_to(where) for where in allowed):
            what = f"a link to {real}, outside the source"
        if what:
            raise SourceError(f"source file {entry} is {what}; nothing was read or written. Replace it with a copy "
                              "of the file it should hold, if you trust it")


def _check_local_weights(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").exists():
        raise SourceError(f"no config.json in {path}; is it a checkpoint saved with save_pretrained?")
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        if not allow_pickle:
            raise SourceError(
                f"{path} holds only pickle weights (pytorch_model.bin), which can run code when "
                "loaded; convert them to safetensors or pass --allow-pickle (allow_pickle=True) "
                "if you trust them"
            )
        return
    raise SourceError(f"no weights (model.safetensors) in {path}")


def load_source(
    name_or_path: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Load a source model and its tokenizer, ready to clone.

    ``name_or_path``: a built-in name (``tiny-gpt2-stdlib``,
    ``tiny-llama-stdlib``), a local checkpoint directory, or a Hugging Face hub
    id. The family is checked against ``supported_families()`` from the
    config alone, before any weights are read. safetensors only unless
    ``allow_pickle``; remote code only if ``trust_remote_code``. ``device``
    None picks cuda, then mps, then cpu; ``dtype`` None means float32. The
    model is returned in eval mode.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = check_device(device)
    torch_dtype = _torch_dtype(dtype)
    origin, where = resolve_source(name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}

    if origin == "hub":
        config = _hub_config(where, kwargs)
    else:
        _check_local_weights(Path(where), allow_pickle)
        config = load_config(where, f"{Path(where) / 'config.json'}", **kwargs)
    check_family(config, f"'{name_or_path}'")

    try:
        # Mismatched shapes are reported (not raised) so that the one check below names them.
        model, loading = from_pretrained(
            AutoModelForCausalLM, where, dtype=torch_dtype, use_safetensors=None if allow_pickle else True,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    except SafetensorError as e:
        _refuse_broken_weights(origin, where, e)
    except pickle.UnpicklingError:
        raise SourceError(
            f"the pickle weights of '{name_or_path}' hold arbitrary Python objects, which torch's safe loader "
            "(weights_only) blocked; nothing in them was run. Convert them to safetensors with the code that "
            "wrote them"
        ) from None
    except OSError as e:
        if origin == "hub" and not allow_pickle and "safetensors" in str(e).lower():
            raise SourceError(
                f"'{where}' has no safetensors weights on the hub; pass --allow-pickle "
                "(allow_pickle=True) to load its pickle weights if you trust them"
            ) from None
        raise SourceError(f"could not load the weights of '{name_or_path}': {first_line(e)}") from None
    check_weights_agree(where, config.model_type, loading["missing_keys"], loading["unexpected_keys"],
                        loading["mismatched_keys"])
    tokenizer = None
    if origin == "hub" or has_tokenizer(Path(where)):  # a bare weights checkpoint has no tokenizer
        tokenizer = from_pretrained(AutoTokenizer, where, **kwargs)
    return model.to(device).eval(), tokenizer


def _hub_config(repo_id: str, kwargs: dict[str, Any]):
    """The config of hub model ``repo_id``, or one line saying why it cannot be had.

    Offline, only the local Hugging Face cache is used: ``kwargs`` (the loading
    arguments) gains ``local_files_only`` so that the weights come from there too.
    """
    if not hub_reachable():
        kwargs["local_files_only"] = True  # a model already in the HF cache still loads
    try:
        return load_config(repo_id, f"'{repo_id}'", **kwargs)
    except SourceError:
        raise
    except Exception as e:
        if kwargs.get("local_files_only"):
            raise SourceError(
                f"could not reach the Hugging Face hub to fetch '{repo_id}' (and it is not in "
                f"the local cache); offline, use a built-in model: {', '.join(BUILTIN_NAMES)}"
            ) from None
        raise SourceError(f"could not load '{repo_id}' from the Hugging Face hub: {first_line(e)}") from None


def _refuse_broken_weights(origin: str, where: str, error: Exception) -> None:
    """Name the weights file that safetensors could not read (a truncated download, a garbage header)."""
    if origin != "hub":
        for path in sorted(Path(where).glob("*.safetensors")):
            with open_safetensors(path):
                pass
    reason = str(error).strip().removeprefix("Error while deserializing header: ")
    raise SourceError(f"not a valid safetensors file in {where} ({reason}); re-download or re-save it") from None

# --------------------------------------------------------------------------- #
# Where a streamable checkpoint comes from (CLI)
# --------------------------------------------------------------------------- #
def streamable_source(name: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> Path | None:
    """The local safetensors directory to stream ``name`` from, or None to load it in memory instead.

    Built-in names and local directories are used in place; a hub id is
    fetched into the Hugging Face cache (config first, to refuse an
    unsupported family before downloading weights; then only the safetensors
    shards the index names). None means "pickle-only, and allowed": streaming
    cannot read pickle, so the caller falls back to the in-memory path.
    """
    origin, where = resolve_source(name)
    path = Path(where) if origin != "hub" else _download_checkpoint(where, trust_remote_code)
    if path is None:
        if allow_pickle:
            return None
        raise SourceError(f"'{where}' has no safetensors weights on the hub; pass --allow-pickle "
                          "(loads its pickle weights in memory) if you trust them")
    try:
        weight_files(path)
    except SourceError:
        if allow_pickle and (any(path.glob("*.bin")) or any(path.glob("*.pt"))):
            return None
        raise
    return path


def _download_checkpoint(repo_id: str, trust_remote_code: bool = False) -> Path | None:
    """Fetch hub model ``repo_id``'s config, then (for a family we clone) its safetensors; None if it has none."""
    offline = not hub_reachable()
    path = hub_snapshot(repo_id, ["config.json", "generation_config.json", INDEX_FILE, *TOKENIZER_FILES], offline)
    if not (path / "config.json").exists():
        raise SourceError(f"'{repo_id}' on the hub has no config.json")
    check_family(load_config(path, f"'{repo_id}'", trust_remote_code=trust_remote_code), f"'{repo_id}'")
    if (path / INDEX_FILE).exists():
        shards = sorted(set(json.loads((path / INDEX_FILE).read_text())["weight_map"].values()))
    else:
        shards = [SINGLE_FILE]
    path = hub_snapshot(repo_id, shards, offline)
    if not any((path / s).exists() for s in shards):
        return None  # no safetensors on the hub: in memory with --allow-pickle, else weight_files refuses
    check_source_files(path)
    return path


def format_sources(supported: list[str] | None = None) -> str:
    """The text of ``hyperclone sources``: built-in models, then the hub presets.

    Hub presets whose family is not in ``supported`` (default:
    ``supported_families()``) are marked, so nobody downloads a model only to be
    told it cannot be cloned.
    """
    supported = _supported() if supported is None else supported
    lines = ["built-in (offline):"]
    lines.append(f"  {'name':<20} {'family':<8} {'params':>8} {'size':>8}  {'val loss':>8}  {'val acc':>7}")
    for s in list_sources():
        lines.append(
            f"  {s.name:<20} {s.family:<8} {s.params / 1e6:>7.2f}M {s.size_mb:>6.2f}MB  "
            f"{s.val_loss:>8.3f}  {s.val_accuracy:>7.1%}" + (f"  for {s.purpose}" if s.purpose else "")
        )
    lines.append("  (validation loss in nats/token and next-token accuracy on the built-in validation split)")
    lines.append("hub presets (need network):")
    for s in HUB_PRESETS:
        mark = "" if s.family in supported else "  [family not supported]"
        params = f"{s.params / 1e6:.0f}M" if s.params < 1e9 else f"{s.params / 1e9:.2f}B"
        lines.append(f"  {s.name:<36} {s.family:<9} {params:>6} {s.size_mb:>8.0f}MB fp32  {s.note}{mark}".rstrip())
    return "\n".join(lines)
