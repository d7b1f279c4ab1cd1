"""safetensors checkpoints on disk: their files, their layout, lazy reads, shard writing and the index.

A checkpoint directory is what ``save_pretrained`` writes: ``config.json``,
the weights as one ``model.safetensors`` or as shards named by
``model.safetensors.index.json``, and side files (generation config,
tokenizer). ``read_layout`` matches the stored tensors to the state dict the
config implies, refusing by name what does not fit; ``LazyTensors`` reads one
tensor at a time; ``ShardWriter`` writes a checkpoint shard by shard with its
index. Nothing here clones: ``stream.py`` uses these pieces to grow a model on
disk, ``verify_sampled.py`` to check one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import save_file

from .conversions import MergedTensor, converter_of
from .errors import HyperCloneError, SourceError
from .specs import spec_for

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model", "chat_template.json", "chat_template.jinja",
)
# Any one of these makes a directory loadable with AutoTokenizer.
TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# Buffers some checkpoints carry that models recompute from their config (transformers drops them too).
RECOMPUTED_BUFFERS = ("rotary_emb.inv_freq", "attn.masked_bias", "attention.masked_bias")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def parse_size(size: int | str) -> int:
    """Bytes from ``2GB``/``500MB``/``1GiB``/an int, as transformers reads ``max_shard_size`` (GB = 10**9)."""
    if isinstance(size, bool):
        raise HyperCloneError(f"max shard size must be a size such as 2GB, 500MB or a number of bytes, got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), flags=re.IGNORECASE)
        if not m:
            raise HyperCloneError(f"max shard size must be a size such as 2GB, 500MB or a number of bytes, got {size!r}")
        value = int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])
    if value < 1:
        raise HyperCloneError(f"max shard size must be positive, got {size!r}")
    return value


# --------------------------------------------------------------------------- #
# What a checkpoint directory holds
# --------------------------------------------------------------------------- #
def weight_files(src: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint directory: the index's shards, or ``model.safetensors``.

    Pickle-only checkpoints are refused here (streaming cannot read pickle, and
    loading pickle can run code); the CLI falls back to the in-memory path
    with ``--allow-pickle``.
    """
    src = Path(src)
    if not (src / "config.json").exists():
        raise SourceError(f"no config.json in {src}; is it a checkpoint saved with save_pretrained?")
    index = src / INDEX_FILE
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (src / f).exists()]
        if missing:
            raise SourceError(f"{src} is incomplete: {INDEX_FILE} names {missing[0]}, which is missing")
        return [src / f for f in files]
    if (src / SINGLE_FILE).exists():
        return [src / SINGLE_FILE]
    others = sorted(src.glob("*.safetensors"))
    if others:
        raise SourceError(f"{src} has {others[0].name} but neither {SINGLE_FILE} nor {INDEX_FILE}; "
                          "save it with save_pretrained")
    if any(src.glob("*.bin")) or any(src.glob("*.pt")) or any(src.glob("*.pth")):
        raise SourceError(f"{src} holds only pickle weights (pytorch_model.bin), which streaming cannot read and "
                          "which can run code when loaded; convert them to safetensors or pass --allow-pickle "
                          "(loads in memory) if you trust them")
    raise SourceError(f"no weights ({SINGLE_FILE}) in {src}")


def has_tokenizer(path: Path) -> bool:
    """Whether the directory ``path`` holds a tokenizer (a bare weights checkpoint has none)."""
    return any((path / n).exists() for n in TOKENIZER_MARKERS)


def copy_side_files(src: Path, target: Path) -> list[str]:
    """Copy the generation config and tokenizer files of ``src`` into ``target``; the names copied."""
    copied = []
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, target / name)  # not copy2: new files follow the umask, not the source's mode
            copied.append(name)
    return copied


def open_safetensors(path: str | os.PathLike):
    """``safe_open`` on one weights file, or a one-line error naming the file when it is not valid safetensors."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt")
    except SafetensorError as e:
        reason = str(e).strip().removeprefix("Error while deserializing header: ")
        raise SourceError(f"not a valid safetensors file: {path} ({reason}); re-download or re-save it") from None


def _name_order(name: str) -> list:
    # layers.2 before layers.10
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def check_weights_agree(where: Any, model_type: str, missing: Iterable[str] = (), unexpected: Iterable[str] = (),
                        mismatched: Iterable[tuple[str, tuple, tuple]] = ()) -> None:
    """Refuse, naming the first culprit, a checkpoint whose weights disagree with its config.

    ``mismatched`` holds (name, stored shape, shape the config implies). Shared by the in-memory load
    (transformers' loading info) and the streaming layout, so both refuse the same checkpoints.
    """
    missing, unexpected = sorted(missing, key=_name_order), sorted(unexpected, key=_name_order)
    mismatched = sorted(mismatched, key=lambda m: _name_order(m[0]))

    def more(items: list) -> str:
        return f" (and {len(items) - 1} more)" if len(items) > 1 else ""

    if unexpected:
        raise SourceError(f"{where} stores {unexpected[0]!r}, which a {model_type} model with this config does not "
                          f"have{more(unexpected)}; refusing to guess where it goes")
    if mismatched:
        name, stored, expected = mismatched[0]
        raise SourceError(f"{name!r} has shape {tuple(stored)} in {where} but the config implies {tuple(expected)}"
                          f"{more(mismatched)}; the checkpoint and its config.json disagree")
    if missing:
        raise SourceError(f"{where} lacks the weight {missing[0]!r} that its config implies{more(missing)}; "
                          "the checkpoint and its config.json disagree")


# --------------------------------------------------------------------------- #
# Layout: which stored tensor is which weight of the model
# --------------------------------------------------------------------------- #
@dataclass
class SourceLayout:
    """Where each tensor of the source model's state dict lives on disk.

    ``entries`` is the model's state-dict order (what the in-memory ``clone``
    sees); a tied head maps to the embedding's stored tensor, exactly as the
    loaded model shares it. A tensor that ``from_pretrained`` merges from several
    stored ones (v5 MoE experts) is in ``merged``; its entry names its first part.
    """

    config: Any
    entries: list[tuple[str, Path, str]]  # (state-dict name, file, key in that file)
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    ignored: list[str] = field(default_factory=list)
    merged: dict[str, MergedTensor] = field(default_factory=dict)

    def common_dtype(self) -> torch.dtype:
        """The floating dtype most tensors are stored in (float32 when none is floating)."""
        dtypes = [d for d in self.dtypes.values() if d.is_floating_point]
        return max(set(dtypes), key=dtypes.count) if dtypes else torch.float32


def meta_model(config) -> torch.nn.Module:
    """The model ``config`` describes, on the meta device: its weight names and shapes, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Each state-dict name of ``model`` with its shape, in state-dict order."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def read_layout(src: str | Path, config) -> SourceLayout:
    """Match the checkpoint's stored tensors to the state dict its config implies.

    Handles what ``from_pretrained`` handles for our families (keys stored
    without the base-model prefix, buffers the model recomputes, a tied head
    stored once, per-expert tensors merged into v5's fused experts) and refuses
    anything else by name: a missing weight, an unknown one, or a shape that
    disagrees with the config.
    """
    src = Path(src)
    files = weight_files(src)
    model = meta_model(config)
    expected = state_shapes(model)
    to_model_name = _load_renamer(model, expected)
    ignore = list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []) + list(RECOMPUTED_BUFFERS)
    stored: dict[str, tuple[Path, str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple, tuple]] = []
    merged: dict[str, MergedTensor] = {}
    converter = converter_of(model)
    for path in files:
        with open_safetensors(path) as f:
            for key in f.keys():
                name, pattern = to_model_name(key)
                if name not in expected:
                    (ignored if any(re.search(p, key) for p in ignore) else unexpected).append(key)
                    continue
                sl = f.get_slice(key)
                shape = tuple(sl.get_shape())
                if pattern is not None:  # one of the stored tensors merged into ``name`` (e.g. one expert's)
                    merged.setdefault(name, MergedTensor(name, converter(pattern))).add(pattern, path, key, shape)
                    dtypes[name] = _torch_dtype(sl.get_dtype())
                    continue
                if shape != expected[name]:
                    mismatched.append((key, shape, expected[name]))
                stored[name] = (path, key)
                shapes[name] = shape
                dtypes[name] = _torch_dtype(sl.get_dtype())
    for name, m in merged.items():
        stored[name], shapes[name] = m.first, m.shape()
        if shapes[name] != expected[name]:
            mismatched.append((name, shapes[name], expected[name]))
    spec = spec_for(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, source in spec.sources_of(expected, tied):
        if name != source and name in expected and source in stored:
            # The loaded model shares one tensor (whatever the file holds under the head's name).
            stored[name], shapes[name], dtypes[name] = stored[source], shapes[source], dtypes[source]
    missing = [name for name in expected if name not in stored]
    check_weights_agree(src, config.model_type, missing, unexpected, mismatched)
    entries = [(name, *stored[name]) for name in expected]
    return SourceLayout(config, entries, shapes, dtypes, ignored, merged)


def _load_renamer(model: torch.nn.Module, expected: dict) -> Callable[[str], tuple[str, str | None]]:
    """Checkpoint key -> (state-dict name, the converter pattern it matched or None), as ``from_pretrained`` maps it.

    transformers renames some legacy keys on load (GPT-NeoX ``embed_out`` ->
    ``lm_head``) and back on save; a key that a conversion merges with others
    (v5 MoE experts) names the fused tensor and the converter's pattern.
    """
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    prefix = getattr(model, "base_model_prefix", "") or ""
    mapping = get_model_conversion_mapping(model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]

    def rename(key: str) -> tuple[str, str | None]:
        name, pattern = rename_source_key(key, renamings, converters, prefix, expected)
        if name not in expected and key in expected:
            name, pattern = rename_source_key(key, [], [], prefix, expected)
        return name, pattern

    return rename


def _torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (``F32``, ``BF16``, ...)."""
    if name not in _SAFETENSORS_DTYPES:
        raise SourceError(f"unsupported safetensors dtype {name}")
    return _SAFETENSORS_DTYPES[name]


class LazyTensors:
    """The tensors of a layout by state-dict name, each read from disk when asked for (one handle per file)."""

    def __init__(self, layout: SourceLayout) -> None:
        self.where = {name: (path, key) for name, path, key in layout.entries}
        self.merged = layout.merged
        self._handles: dict[Path, Any] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.merged:
            return self.merged[name].assemble(lambda path, key, shape: self._read(path, key))
        return self._read(*self.where[name])

    def _read(self, path: Path, key: str) -> torch.Tensor:
        if path not in self._handles:
            self._handles[path] = open_safetensors(path)
        return self._handles[path].get_tensor(key)

    def close(self) -> None:
        self._handles.clear()


# --------------------------------------------------------------------------- #
# Writing a checkpoint shard by shard
# --------------------------------------------------------------------------- #
class ShardWriter:
    """Collect grown tensors and write a shard as soon as the next tensor would overflow it.

    Shards are written by one background thread (``save_file`` releases the
    GIL), so growing the next tensors overlaps writing the previous shard. To
    keep the memory bound (one output shard plus the tensors being grown), the
    shard being written and the one being filled together hold at most
    ``max_shard_size`` bytes: the next shard fills only into the room the one
    being written leaves, then ``add`` waits for the write to finish. At most one
    shard is ever being written, and a failed write (disk full) is raised to
    the caller at the next ``add``, ``flush`` or ``close``.

    Shards get provisional names and are renamed ``model-0000X-of-0000N`` (or
    ``model.safetensors`` when there is one) once N is known; the index carries
    the metadata transformers expects.
    """

    def __init__(self, target: Path, max_shard_size: int, on_shard: Callable[[str, int], None] | None = None):
        self.target, self.max_bytes, self.on_shard = target, max_shard_size, on_shard
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[tuple[Path, list[str], int]] = []
        self.total_bytes = 0
        self.total_params = 0
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future, str, int] | None = None  # (write, shard file name, bytes)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_bytes:
            self.flush()
        elif self._inflight is not None and (self._inflight[0].done()
                                             or self._inflight[2] + self.pending_bytes + nbytes > self.max_bytes):
            self._wait()  # a shard is being written: together they hold no more than one full shard
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += nbytes
        self.total_bytes += nbytes
        self.total_params += tensor.numel()

    def flush(self) -> None:
        """Hand the pending tensors to the writer thread as the next shard (after the previous one is written)."""
        self._wait()
        if not self.pending:
            return
        path = self.target / f".shard-{len(self.files) + 1:05d}.safetensors"
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperclone-shard-writer")
        # save_file is looked up at call time (tests replace it to simulate a full disk).
        future = self._pool.submit(lambda tensors, p: save_file(tensors, p, metadata={"format": "pt"}),
                                   self.pending, str(path))
        self._inflight = (future, path.name, self.pending_bytes)
        self.files.append((path, list(self.pending), self.pending_bytes))
        self.pending, self.pending_bytes = {}, 0

    def _wait(self) -> None:
        """Wait for the shard being written, if any; re-raise its error (e.g. ENOSPC) here."""
        if self._inflight is None:
            return
        future, name, nbytes = self._inflight
        self._inflight = None
        future.result()
        if self.on_shard is not None:
            self.on_shard(name, nbytes)

    def abort(self) -> None:
        """Stop after an error: wait for the write in flight (so nothing writes into a removed dir), drop the rest."""
        self.pending, self.pending_bytes = {}, 0
        if self._inflight is not None:
            try:
                self._inflight[0].result()
            except BaseException:  # the caller is already raising the first error
                pass
            self._inflight = None
        self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self) -> list[str]:
        """Write the last shard, give every shard its final name, write the index; the shard names."""
        self.flush()
        self._wait()
        self._shutdown()
        n = len(self.files)
        if n == 1:
            self.files[0][0].rename(self.target / SINGLE_FILE)
            return [SINGLE_FILE]
        weight_map: dict[str, str] = {}
        names = []
        for i, (path, keys, _) in enumerate(self.files, 1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.target / final)
            names.append(final)
            weight_map.update({k: final for k in keys})
        index = {"metadata": {"total_parameters": self.total_params, "total_size": self.total_bytes},
                 "weight_map": dict(sorted(weight_map.items()))}
        (self.target / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return names
