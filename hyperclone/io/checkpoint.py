"""safetensors checkpoints on disk: their files, their layout and lazy reads.

A checkpoint directory is what ``save_pretrained`` writes: ``config.json``,
the weights as one ``model.safetensors`` or as shards named by
``model.safetensors.index.json``, and side files (generation config,
tokenizer). ``read_layout`` matches the stored tensors to the state dict the
config implies, refusing by name what does not fit; ``LazyTensors`` reads one
tensor at a time (``shard_writer.py`` writes one). Nothing here clones:
``stream.py`` uses these pieces to grow a model on disk, ``verify_sampled.py``
to check one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from hyperclone.io.conversions import MergedTensor, converter_of
from hyperclone.core.errors import HyperCloneError, SourceError
from hyperclone.core.pretrained import meta_model, state_shapes
from hyperclone.specs import spec_for

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
SAFETENSORS_DTYPES = {
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
    if name not in SAFETENSORS_DTYPES:
        raise SourceError(f"unsupported safetensors dtype {name}")
    return SAFETENSORS_DTYPES[name]


class LazyTensors:
    """The tensors of a layout by state-dict name, each read from disk when asked for.

    Read with ``os.preadv`` into a fresh tensor rather than through safetensors' memory map: mapped
    pages of the source would stay resident (and count in RSS) while its file is open, so streaming a
    model would hold the whole source; read this way, memory holds only the tensor asked for.
    """

    def __init__(self, layout: SourceLayout) -> None:
        self.where = {name: (path, key) for name, path, key in layout.entries}
        self.merged = layout.merged
        self._files: dict[Path, tuple[int, int, dict[str, Any]]] = {}  # path -> (fd, data start, header)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.merged:
            return self.merged[name].assemble(lambda path, key, shape: self._read(path, key))
        return self._read(*self.where[name])

    def _read(self, path: Path, key: str) -> torch.Tensor:
        """One stored tensor, read into fresh memory with ``preadv`` (no memory map keeps source pages resident)."""
        if path not in self._files:
            self._files[path] = _open_for_reading(path)
        fd, start, header = self._files[path]
        info = header[key]
        begin, end = info["data_offsets"]
        t = torch.empty(info["shape"], dtype=_torch_dtype(info["dtype"]))
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
        if len(data) != end - begin:
            raise SourceError(f"{key!r} in {path} claims {end - begin} bytes for shape {info['shape']}; re-save it")
        done = 0
        while done < len(data):
            n = os.preadv(fd, [data[done:done + 2**26]], start + begin + done)
            if n <= 0:
                raise SourceError(f"{path} ends inside {key!r} (truncated?); re-download or re-save it")
            done += n
        return t

    def close(self) -> None:
        for fd, _, _ in self._files.values():
            os.close(fd)
        self._files.clear()


def _open_for_reading(path: Path) -> tuple[int, int, dict[str, Any]]:
    """(open file descriptor, where the data starts, the parsed header) of a safetensors file."""
    with open_safetensors(path):  # a damaged header is refused here, in safetensors' words
        pass
    fd = os.open(path, os.O_RDONLY)
    try:
        (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        return fd, 8 + n, json.loads(os.pread(fd, n, 8))
    except BaseException:
        os.close(fd)
        raise
