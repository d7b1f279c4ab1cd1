"""Streaming HyperCloning: grow a safetensors checkpoint on disk, shard by shard.

Real checkpoints (1B-8B parameters) often do not fit in RAM next to their
wide clone. Cloning is a memory-bound copy, so the streaming path reads one
source tensor at a time (``safetensors.safe_open``, lazily), grows it with the
very same ``ClonePlan.grow`` as the in-memory ``clone`` (so the results are
identical bit for bit, noise included: it is seeded per tensor name), and
writes output shards of bounded size as soon as they are full. Peak memory is
one output shard plus the tensor being grown, whatever the model's size.

The output is a stock transformers checkpoint (``model-0000X-of-0000N.safetensors``
+ ``model.safetensors.index.json``, or one ``model.safetensors``), with the wide
config, the source's generation config and tokenizer files, and the provenance
record and model card, all written atomically (``export.atomic_dir``).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import save_file

from . import resources
from .clone import ClonePlan, build_model, make_plan
from .errors import HyperCloneError, SourceError
from .specs import spec_for
from .export import atomic_dir, check_output_dir, disk_full_error, is_disk_full, provenance, write_metadata
from .pretrained import from_pretrained
from .growth import Growth

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model", "chat_template.json", "chat_template.jinja",
)
# Buffers some checkpoints carry that models recompute from their config (transformers drops them too).
RECOMPUTED_BUFFERS = ("rotary_emb.inv_freq", "attn.masked_bias", "attention.masked_bias")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


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


@dataclass
class SourceLayout:
    """Where each tensor of the source model's state dict lives on disk.

    ``entries`` is the model's state-dict order (what the in-memory ``clone``
    sees); a tied head maps to the embedding's stored tensor, exactly as the
    loaded model shares it.
    """

    config: Any
    entries: list[tuple[str, Path, str]]  # (state-dict name, file, key in that file)
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    ignored: list[str] = field(default_factory=list)


def _meta_state(config) -> tuple[dict[str, tuple[int, ...]], Any]:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model


def read_layout(src: str | Path, config=None) -> SourceLayout:
    """Match the checkpoint's stored tensors to the state dict its config implies.

    Handles what ``from_pretrained`` handles for our families (keys stored
    without the base-model prefix, buffers the model recomputes, a tied head
    stored once) and refuses anything else by name: a missing weight, an
    unknown one, or a shape that disagrees with the config.
    """
    from .sources import check_weights_agree, load_config, open_safetensors

    src = Path(src)
    files = weight_files(src)
    if config is None:
        config = load_config(src, src / "config.json", trust_remote_code=False)
    expected, meta_model = _meta_state(config)
    to_model_name = _load_renamer(meta_model, expected)
    ignore = list(getattr(meta_model, "_keys_to_ignore_on_load_unexpected", None) or []) + list(RECOMPUTED_BUFFERS)
    stored: dict[str, tuple[Path, str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, torch.dtype] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple, tuple]] = []
    for path in files:
        with open_safetensors(path) as f:
            for key in f.keys():
                name = to_model_name(key)
                if name not in expected:
                    (ignored if any(re.search(p, key) for p in ignore) else unexpected).append(key)
                    continue
                sl = f.get_slice(key)
                shape = tuple(sl.get_shape())
                if shape != expected[name]:
                    mismatched.append((key, shape, expected[name]))
                stored[name] = (path, key)
                shapes[name] = shape
                dtypes[name] = _st_dtype(sl.get_dtype())
    spec = spec_for(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied and spec.lm_head in expected and spec.embed in stored:
        # The loaded model shares one tensor (whatever the file holds under the head's name).
        name = spec.lm_head
        stored[name], shapes[name], dtypes[name] = stored[spec.embed], shapes[spec.embed], dtypes[spec.embed]
    missing = [name for name in expected if name not in stored]
    check_weights_agree(src, config.model_type, missing, unexpected, mismatched)
    entries = [(name, *stored[name]) for name in expected]
    return SourceLayout(config, entries, shapes, dtypes, ignored)


def _load_renamer(meta_model, expected: dict) -> Callable[[str], str]:
    """Checkpoint key -> state-dict name, as ``from_pretrained`` maps it (base-model prefix, legacy renames).

    transformers 5 renames some legacy keys on load (GPT-NeoX ``embed_out`` ->
    ``lm_head``) and back on save; a key that needs a real conversion (merging
    or splitting tensors) cannot be streamed one tensor at a time and is refused.
    """
    prefix = getattr(meta_model, "base_model_prefix", "") or ""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: only the base-model prefix to handle
        return lambda key: key if key in expected or not prefix or f"{prefix}.{key}" not in expected \
            else f"{prefix}.{key}"
    mapping = get_model_conversion_mapping(meta_model)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]

    def rename(key: str) -> str:
        name, converted = rename_source_key(key, renamings, converters, prefix, expected)
        if name not in expected and key in expected:
            name, converted = rename_source_key(key, [], [], prefix, expected)
        if converted is not None:
            raise SourceError(f"{key!r} needs a tensor conversion on load ({converted}), which streaming cannot do; "
                              "use --in-memory")
        return name

    return rename


def _save_renamer(meta_model, names: list[str]) -> dict[str, str]:
    """State-dict name -> key that ``save_pretrained`` would write (transformers 5 restores legacy keys)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return {n: n for n in names}
    placeholders = {n: torch.empty(0) for n in names}
    saved = revert_weight_conversion(meta_model, dict(placeholders))
    by_id = {id(t): k for k, t in saved.items()}
    return {n: by_id.get(id(t), n) for n, t in placeholders.items()}


def _st_dtype(name: str) -> torch.dtype:
    table = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
    if name not in table:
        raise SourceError(f"unsupported safetensors dtype {name}")
    return table[name]


class _Reader:
    """Lazy tensor access across source shards, one open handle per file."""

    def __init__(self) -> None:
        self._handles: dict[Path, Any] = {}

    def get(self, path: Path, key: str) -> torch.Tensor:
        if path not in self._handles:
            from .sources import open_safetensors

            self._handles[path] = open_safetensors(path)
        return self._handles[path].get_tensor(key)

    def close(self) -> None:
        self._handles.clear()


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


@dataclass
class StreamResult:
    """What a streaming clone wrote and how it was checked."""

    out: Path
    shards: list[str]
    n_tensors: int
    n_params: int
    n_bytes: int
    dtype: str
    seconds: float
    verification: dict[str, Any]
    report: Any = None  # the EquivalenceReport when a logit check ran

    @property
    def passed(self) -> bool:
        """False only when a check ran and failed (an unverified clone is not a failure)."""
        return self.report is None or bool(self.report.passed)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise HyperCloneError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def grown_tensors(plan: ClonePlan, layout: SourceLayout, dtype: torch.dtype | None = None
                  ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, wide tensor) one at a time, each read lazily and grown by ``plan.grow``.

    The names and their sources follow the loaded model's state dict, so this
    yields what ``grow_state(plan, model.state_dict().items())`` yields for the
    model loaded in ``dtype`` (default: as stored), without holding the model.
    """
    reader = _Reader()
    where = {name: (path, key) for name, path, key in layout.entries}
    try:
        with torch.no_grad():
            for name in plan.names(where):
                t = reader.get(*where[name])
                if dtype is not None and t.is_floating_point() and t.dtype != dtype:
                    t = t.to(dtype)
                yield name, plan.grow(name, t)
                del t
    finally:
        reader.close()


def _check_resources(out: Path, layout: SourceLayout, wide_shapes: dict[str, tuple[int, ...]],
                     max_shard: int, dtype: torch.dtype | None, force: bool) -> tuple[int, int]:
    """Refuse, with numbers, a clone whose working set or output does not fit; (out bytes, largest tensor)."""
    import math

    elem = max((resources.dtype_bytes(dtype or d) for d in layout.dtypes.values()), default=4)
    sizes = [math.prod(s) * elem for s in wide_shapes.values()]
    total, largest = sum(sizes), max(sizes, default=0)
    if force:
        return total, largest
    need_ram = min(max_shard, total) + 2 * largest  # one shard + the tensor being grown and its temporaries
    free_ram = resources.free_bytes("cpu")
    if need_ram > free_ram:
        raise HyperCloneError(
            f"streaming needs {resources.human_bytes(need_ram)} of RAM (one output shard plus the largest tensor "
            f"being grown) but only {resources.human_bytes(free_ram)} is free on cpu; lower --max-shard-size "
            "or pass --force"
        )
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    free_disk = shutil.disk_usage(parent).free
    if total > free_disk:
        raise HyperCloneError(
            f"the clone needs {resources.human_bytes(total)} on disk but only {resources.human_bytes(free_disk)} "
            f"is free at {parent}; free some space or write elsewhere (or pass --force)"
        )
    return total, largest


def _copy_side_files(src: Path, target: Path) -> list[str]:
    copied = []
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copyfile(src / name, target / name)  # not copy2: new files follow the umask, not the source's mode
            copied.append(name)
    return copied


def stream_clone(
    src: str | Path,
    out: str | Path,
    growth: Growth | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
    verify: bool | str = False,
    device: str | torch.device | None = None,
    source_name: str | None = None,
    force: bool = False,
    text: str | None = None,
    progress: Callable[[str], None] | None = None,
    trust_remote_code: bool = False,
) -> StreamResult:
    """Clone the safetensors checkpoint directory ``src`` into ``out`` without loading either model.

    ``growth``: how to grow, a ``Growth`` (None: ``Growth()``, x2 symmetric);
    the result equals ``clone(model, growth=growth)`` bit for bit. ``dtype``
    None keeps each tensor's stored dtype (noise is drawn in fp32 and cast).
    ``verify``: False; True/"auto" = compare logits of the full models when
    both fit in free memory, else of a truncated model made of sampled layers;
    "full" or "sample" to force one. The outcome is recorded in the provenance.
    A checkpoint with its own Python code is refused unless ``trust_remote_code``.
    """
    from .sources import check_device, load_config

    t0 = time.perf_counter()
    src = Path(src)
    say = progress or (lambda msg: None)
    if device is not None:
        device = check_device(device)  # before any work, not when verifying after the shards are written
    max_bytes = parse_size(max_shard_size)
    dtype = _resolve_dtype(dtype)
    if verify not in (False, True, "auto", "full", "sample"):
        raise HyperCloneError(f"verify must be False, True, 'auto', 'full' or 'sample', got {verify!r}")
    out = check_output_dir(out, overwrite, src)
    weight_files(src)  # refuse pickle-only/empty checkpoints before reading the config's family
    config = load_config(src, src / "config.json", trust_remote_code=trust_remote_code)
    plan = make_plan(config, growth)
    layout = read_layout(src, config)
    wide_config = plan.wide_config()
    wide_config.dtype = dtype or _common_dtype(layout)  # what the shards will hold, as save_pretrained records
    wide_shapes, wide_meta = _meta_state(wide_config)
    save_names = _save_renamer(wide_meta, list(wide_shapes))
    del wide_meta
    total_out, _ = _check_resources(out, layout, wide_shapes, max_bytes, dtype, force)

    n_tensors = 0
    out_dtypes: set[torch.dtype] = set()
    writer: ShardWriter | None = None
    written: set[str] = set()
    try:
        with atomic_dir(out, overwrite, src) as tmp:
            n_written = [0]

            def shard_done(name: str, nbytes: int) -> None:
                n_written[0] += 1
                say(f"  shard {n_written[0]} written ({resources.human_bytes(nbytes)})")

            writer = ShardWriter(tmp, max_bytes, shard_done)
            try:
                for name, tensor in grown_tensors(plan, layout, dtype):
                    expected = wide_shapes.get(name)
                    if expected is not None and tuple(tensor.shape) != expected:
                        raise HyperCloneError(f"{name}: grown to {tuple(tensor.shape)} but the wide config "
                                              f"implies {expected} (a spec bug; please report it)")
                    writer.add(save_names.get(name, name), tensor)
                    written.add(name)
                    out_dtypes.add(tensor.dtype)
                    n_tensors += 1
                    del tensor
                shards = writer.close()
            except BaseException:
                writer.abort()  # no write may still be running when atomic_dir removes the temp dir
                raise
            _check_structure(plan, wide_shapes, written)
            wide_config.save_pretrained(tmp)
            side = _copy_side_files(src, tmp)
            say(f"  wrote config{', ' + ', '.join(side) if side else ''}")
            out_dtype = str(next(iter(out_dtypes))).replace("torch.", "") if len(out_dtypes) == 1 else \
                "mixed: " + ", ".join(sorted(str(d).replace("torch.", "") for d in out_dtypes))
            verification, report = {"method": "none",
                                    "note": "not verified; run `hyperclone verify SRC OUT` to compare logits"}, None
            if verify:
                say("  verifying ...")
                verification, report = verify_streamed(
                    src, tmp, plan, layout, mode="auto" if verify is True else verify, device=device,
                    dtype=dtype or _common_dtype(layout), text=text, trust_remote_code=trust_remote_code)
            verification["structure"] = (f"all {n_tensors} tensors present with the shapes the wide config "
                                         "implies (checked while writing)")
            record = provenance(plan, source_name or str(src), report, {
                "mode": "streaming", "dtype": out_dtype, "max_shard_size": max_bytes, "shards": len(shards),
                "verification": verification,
            })
            write_metadata(tmp, record, wide_config, writer.total_params)
            with (tmp / "README.md").open("a") as card:
                card.write(f"\nVerification: {verification['method']}"
                           f"{' - ' + verification['note'] if verification.get('note') else ''}.\n")
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(out, total_out) from None
        raise
    return StreamResult(out, shards, n_tensors, writer.total_params, writer.total_bytes, out_dtype,
                        time.perf_counter() - t0, verification, report)


def _common_dtype(layout: SourceLayout) -> torch.dtype:
    dtypes = [d for d in layout.dtypes.values() if d.is_floating_point]
    return max(set(dtypes), key=dtypes.count) if dtypes else torch.float32


def _check_structure(plan: ClonePlan, wide_shapes: dict[str, tuple[int, ...]], written: set[str]) -> None:
    """Every tensor the wide config implies was written (a tied head may be shared)."""
    missing = set(wide_shapes) - written
    if plan.keep_tied:
        missing.discard(plan.spec.lm_head)
    if missing:
        raise HyperCloneError(f"the clone lacks {sorted(missing)[:3]} that the wide config implies (a spec bug)")
    extra = written - set(wide_shapes)
    if extra:
        raise HyperCloneError(f"the clone has {sorted(extra)[:3]} that the wide config does not have (a spec bug)")


# --------------------------------------------------------------------------- #
# Verification after streaming
# --------------------------------------------------------------------------- #
_LAYER = re.compile(r"^(.*?\.)(\d+)(\..*)$")


def sample_layers(n_layers: int) -> list[int]:
    """First, middle and last layer: where a wrong rule or a truncated shard would show first."""
    return sorted({0, n_layers // 2, n_layers - 1}) if n_layers > 0 else []


def verify_streamed(
    src: str | Path,
    out: str | Path,
    plan: ClonePlan,
    layout: SourceLayout | None = None,
    mode: str = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    text: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[dict[str, Any], Any]:
    """Compare a streamed clone's logits and hidden states with its source's.

    ``full`` loads both models; ``sample`` builds both models truncated to
    the first, middle and last layers (plus embeddings, final norm and head),
    reading only those tensors from disk, so every written tensor of those
    layers is checked end to end through a forward pass; ``auto`` picks full
    when both models fit in free memory. Returns (record, report).
    """
    from .sources import check_device, load_config
    from .verify import verify

    src, out = Path(src), Path(out)
    layout = layout or read_layout(src)
    device = check_device(device)
    dtype = dtype or _common_dtype(layout)
    wide_config = load_config(out, trust_remote_code=False)  # written by us: never custom code
    elem = resources.dtype_bytes(dtype)
    src_bytes = sum(_numel(s) for s in layout.shapes.values()) * elem
    out_bytes = sum(_numel(s) for s in _meta_state(wide_config)[0].values()) * elem
    need_full = int((src_bytes + out_bytes) * 1.2)
    free = resources.free_bytes(device)
    if mode == "auto":
        mode = "full" if need_full <= free else "sample"
    n_layers = int(plan.source_config.num_hidden_layers)
    if mode == "full":
        layers = list(range(n_layers))
        why = f"both models loaded ({resources.human_bytes(src_bytes + out_bytes)})"
    else:
        layers = sample_layers(n_layers)
        why = (f"the full models need ~{resources.human_bytes(need_full)} and {resources.human_bytes(free)} is free "
               f"on {device}; checked a {len(layers)}-layer model made of layers {layers} of {n_layers} plus "
               "the embeddings, final norm and head")
    src_model = _load_layers(layout.config, _source_tensors(layout), layers, dtype)
    wide_model = _load_layers(wide_config, _source_tensors(read_layout(out, wide_config)), layers, dtype)
    input_ids = None
    if text is not None:
        from transformers import AutoTokenizer

        from .sources import _has_tokenizer

        if not _has_tokenizer(src):
            raise HyperCloneError(f"--text needs a tokenizer, and {src} has none")
        tokenizer = from_pretrained(AutoTokenizer, src, trust_remote_code=trust_remote_code)
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
        if input_ids.numel() == 0:
            raise HyperCloneError("the verification text encodes to no tokens; give a non-empty text")
    report = verify(src_model.to(device).eval(), wide_model.to(device).eval(), input_ids=input_ids,
                    approximate=plan.keep_tied, layer_numbers=layers)
    del src_model, wide_model
    record = {"method": "full" if mode == "full" else "sampled layers", "layers": layers, "n_layers": n_layers,
              "device": str(device), "passed": bool(report.passed), "note": why}
    return record, report


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _source_tensors(layout: SourceLayout) -> Callable[[str], torch.Tensor]:
    reader = _Reader()
    where = {name: (path, key) for name, path, key in layout.entries}
    return lambda name: reader.get(*where[name])


def _truncated_config(config, layers: list[int]):
    cfg = copy.deepcopy(config)
    n = int(config.num_hidden_layers)
    if len(layers) == n:
        return cfg
    cfg.num_hidden_layers = len(layers)
    layer_types = getattr(cfg, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == n:
        cfg.layer_types = [layer_types[i] for i in layers]
    return cfg


def _load_layers(config, get: Callable[[str], torch.Tensor], layers: list[int], dtype: torch.dtype):
    """A model of ``config`` holding only ``layers`` (renumbered 0..k-1), read tensor by tensor."""
    cfg = _truncated_config(config, layers)
    names, _ = _meta_state(cfg)
    state = {}
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for name in names:
        m = _LAYER.match(name)
        src_name = f"{m.group(1)}{layers[int(m.group(2))]}{m.group(3)}" if m else name
        if tied and name.endswith("lm_head.weight"):
            continue  # build_model ties it
        t = get(src_name)
        state[name] = t.to(dtype) if t.is_floating_point() else t
    return build_model(cfg, state)


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
    from .sources import resolve_source

    kind, where = resolve_source(name)
    path = Path(where) if kind != "hub" else _download(where, trust_remote_code)
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


def _download(repo_id: str, trust_remote_code: bool = False) -> Path | None:
    from huggingface_hub import snapshot_download

    from .sources import _check_family, hub_reachable

    offline = not hub_reachable()

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
        except Exception as e:  # the hub client raises many types; the user needs one line
            if offline:
                raise SourceError(f"could not reach the Hugging Face hub to fetch '{repo_id}' (and it is not in "
                                  "the local cache)") from None
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SourceError(f"could not fetch '{repo_id}' from the Hugging Face hub: {reason}") from None

    from .sources import load_config

    path = fetch(["config.json", "generation_config.json", INDEX_FILE, *TOKENIZER_FILES])
    if not (path / "config.json").exists():
        raise SourceError(f"'{repo_id}' on the hub has no config.json")
    _check_family(load_config(path, f"'{repo_id}'", trust_remote_code=trust_remote_code), f"'{repo_id}'")
    if (path / INDEX_FILE).exists():
        shards = sorted(set(json.loads((path / INDEX_FILE).read_text())["weight_map"].values()))
    else:
        shards = [SINGLE_FILE]
    path = fetch(shards)
    if not any((path / s).exists() for s in shards):
        return None  # no safetensors on the hub: in memory with --allow-pickle, else weight_files refuses
    return path
