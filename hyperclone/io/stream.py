"""Streaming HyperCloning: grow a safetensors checkpoint on disk, one tensor at a time.

Real checkpoints (1B-8B parameters) often do not fit in RAM next to their
wide clone. Cloning is a memory-bound copy, so the streaming path reads one
source tensor at a time (``safetensors.safe_open``, lazily), grows it with the
very same ``ClonePlan.grow`` as the in-memory ``clone`` (so the results are
identical bit for bit, noise included: it is seeded per tensor name), and
writes it straight to its place in its output shard: the shards, their headers
and every offset are planned from the wide config before anything is grown
(``shard_writer.ShardWriter``). A writer thread overlaps writing with growing
through a queue bounded by the largest tensor, so peak memory is about the
largest wide tensor plus the one being grown, whatever the model's size or
``max_shard_size``.

With a ``device`` (e.g. cuda) each source tensor is copied there, grown, and
copied back to be written. The symmetric and diagonal variants are expected
to give the CPU's bits (one correctly rounded division per element); the noisy
ones draw the same noise (on the CPU, seeded per tensor) but scale it by a
mean computed on the device, so they may differ from the CPU's in the last
bits. ``benchmarks/gpu_check.py`` section 4 compares them (not yet run on a GPU).

The output is a stock transformers checkpoint (``model-0000X-of-0000N.safetensors``
+ ``model.safetensors.index.json``, or one ``model.safetensors``), with the wide
config, the source's generation config and tokenizer files, and the provenance
record and model card, all written atomically (``export.atomic_output``). The checkpoint
files themselves are ``checkpoint.py``'s (layout, lazy reads) and ``shard_writer.py``'s.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from hyperclone.core import resources  # looked up at call time: tests replace resources.free_bytes
from hyperclone.io.checkpoint import LazyTensors, SourceLayout, copy_side_files, parse_size, read_layout, weight_files
from hyperclone.core.pretrained import meta_model, state_shapes
from hyperclone.core.clone import ClonePlan, make_plan
from hyperclone.io.conversions import saved_form
from hyperclone.core.errors import HyperCloneError
from hyperclone.io.export import atomic_output, check_output_dir, disk_full_error, is_disk_full, provenance, write_metadata
from hyperclone.core.growth import Growth
from hyperclone.io.shard_writer import QUEUE_FLOOR, ShardWriter
from hyperclone.io.sources import check_device, check_source_files, load_config
from hyperclone.io.verify_sampled import verify_streamed

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


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
    grown_on: str = "cpu"  # the device the growth arithmetic ran on

    @property
    def passed(self) -> bool:
        """False only when a check ran and failed (an unverified clone, or a stacked one that differs, is not)."""
        return self.report is None or bool(self.report.as_expected)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise HyperCloneError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def grown_tensors(plan: ClonePlan, layout: SourceLayout, dtype: torch.dtype | None = None,
                  before: Callable[[str], None] | None = None, grow_on: torch.device | None = None
                  ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, wide tensor) one at a time, each read lazily and grown by ``plan.grow``.

    The names and their sources follow the loaded model's state dict, so this
    yields what ``grow_state(plan, model.state_dict().items())`` yields for the
    model loaded in ``dtype`` (default: as stored), without holding the model.
    ``before(name)`` runs before each source tensor is read (the writer waits there for room).
    ``grow_on``: the device the growth arithmetic runs on (None: the CPU); each tensor is moved
    there after the cast, so the grown tensors live there (the writer copies them back).
    """
    tensors = LazyTensors(layout)
    try:
        with torch.no_grad():
            for name, source in plan.sources_of(tensors.where):
                if before is not None:
                    before(name)
                t = tensors[source if plan.depth > 1 else name]  # a tied head: the layout maps it to the embedding
                if dtype is not None and t.is_floating_point() and t.dtype != dtype:
                    t = t.to(dtype)
                if grow_on is not None:
                    t = t.to(grow_on)
                yield name, plan.grow(name, t)
                del t
    finally:
        tensors.close()


def _check_resources(out: Path, layout: SourceLayout, wide_shapes: dict[str, tuple[int, ...]],
                     dtype: torch.dtype | None, force: bool, grow_on: torch.device | None = None) -> int:
    """Refuse, with numbers, a clone whose working set or output does not fit; the output's bytes."""
    elem = max((resources.dtype_bytes(dtype or d) for d in layout.dtypes.values()), default=4)
    sizes = [math.prod(s) * elem for s in wide_shapes.values()]
    total, largest = sum(sizes), max(sizes, default=0)
    if force:
        return total
    need_ram = max(largest, QUEUE_FLOOR) + largest  # what the writer holds + the tensor being grown (its source)
    free_ram = resources.free_bytes("cpu")
    if need_ram > free_ram:
        raise HyperCloneError(
            f"streaming needs {resources.human_bytes(need_ram)} of RAM (about twice the largest tensor: one being "
            f"written, one being grown) but only {resources.human_bytes(free_ram)} is free on cpu; free some memory "
            "or pass --force"
        )
    free_there = resources.free_bytes(grow_on) if grow_on is not None and grow_on.type != "cpu" else None
    if free_there is not None and 2 * largest > free_there:
        raise HyperCloneError(
            f"growing on {grow_on} needs {resources.human_bytes(2 * largest)} there (the largest tensor, grown, and "
            f"its source) but only {resources.human_bytes(free_there)} is free; use --device cpu or pass --force"
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
    return total


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
    ``device``: where growth and the check run (None: growth on the CPU, the check on the best device).
    A checkpoint with its own Python code is refused unless ``trust_remote_code``.
    """
    t0 = time.perf_counter()
    src = Path(src)
    say = progress or (lambda msg: None)
    device = None if device is None else check_device(device)  # before any work, not after writing the shards
    max_bytes = parse_size(max_shard_size)
    dtype = _resolve_dtype(dtype)
    verify_mode = _verify_mode(verify)
    out = check_output_dir(out, overwrite, src)
    check_source_files(src)  # nothing outside the source is read or copied into the clone
    weight_files(src)  # refuse pickle-only/empty checkpoints before reading the config's family
    config = load_config(src, src / "config.json", trust_remote_code=trust_remote_code)
    plan = make_plan(config, growth)
    layout = read_layout(src, config)
    wide_config = plan.wide_config()
    wide_config.dtype = dtype or layout.common_dtype()  # what the shards will hold, as save_pretrained records
    plan.growth.check_noise_fits({dtype} if dtype else set(layout.dtypes.values()))  # before any work
    wide_shapes, save_as = _wide_names(wide_config)
    total_out = _check_resources(out, layout, wide_shapes, dtype, force, device)
    try:
        with atomic_output(out, overwrite, src) as tmp:
            result = _write_tensors(plan, layout, tmp, wide_shapes, save_as, max_bytes, dtype, say, device)
            _write_config_and_side_files(src, tmp, wide_config, say)
            if verify_mode:
                say("  verifying ...")
                result.verification, result.report = verify_streamed(
                    src, tmp, plan, layout, verify_mode, device, dtype or layout.common_dtype(), text, trust_remote_code)
            _write_record(tmp, result, plan, source_name or str(src), wide_config, max_bytes)
    except Exception as e:
        if is_disk_full(e):
            raise disk_full_error(out, total_out) from None
        raise
    result.out, result.seconds = out, time.perf_counter() - t0
    return result


def _write_config_and_side_files(src: Path, tmp: Path, wide_config, say: Callable[[str], None]) -> None:
    """The wide config, and the source's generation config and tokenizer files (checked by ``check_source_files``)."""
    wide_config.save_pretrained(tmp)
    side = copy_side_files(src, tmp)
    say(f"  wrote config{', ' + ', '.join(side) if side else ''}")


def _verify_mode(verify: bool | str) -> str | None:
    """The ``verify_streamed`` mode ``verify`` asks for (None: no check), or a one-line refusal."""
    if verify not in (False, True, "auto", "full", "sample"):
        raise HyperCloneError(f"verify must be False, True, 'auto', 'full' or 'sample', got {verify!r}")
    return None if verify is False else "auto" if verify is True else verify


def _wide_names(wide_config) -> tuple[dict[str, tuple[int, ...]], Callable]:
    """The wide model's state-dict shapes, and (name, tensor) -> the tensors ``save_pretrained`` writes for it."""
    wide_meta = meta_model(wide_config)
    shapes = state_shapes(wide_meta)
    return shapes, saved_form(wide_meta, list(shapes))


def _write_tensors(plan: ClonePlan, layout: SourceLayout, tmp: Path, wide_shapes: dict[str, tuple[int, ...]],
                   save_as: Callable, max_bytes: int, dtype: torch.dtype | None,
                   say: Callable[[str], None], grow_on: torch.device | None = None) -> StreamResult:
    """Grow every tensor straight into its place in the shards under ``tmp``; what was written (not yet verified).

    The whole layout (shards, headers, offsets) is planned from the wide shapes first, then each grown
    tensor is checked against it and handed to the writer thread, which writes it and drops it.
    """
    entries, parts = _planned_entries(plan, layout, wide_shapes, save_as, dtype)
    n_written = [0]

    def shard_done(name: str, nbytes: int) -> None:
        n_written[0] += 1
        say(f"  shard {n_written[0]} written ({resources.human_bytes(nbytes)})")

    writer = ShardWriter(tmp, entries, max_bytes, shard_done)
    out_dtypes: set[torch.dtype] = set()
    try:
        for name, tensor in grown_tensors(plan, layout, dtype, lambda n: writer.reserve(*parts[n]), grow_on):
            if tuple(tensor.shape) != wide_shapes[name]:
                raise HyperCloneError(f"{name}: grown to {tuple(tensor.shape)} but the wide config "
                                      f"implies {wide_shapes[name]} (a spec bug; please report it)")
            for key, piece in save_as(name, tensor).items():  # v5 MoE experts: one stored tensor per expert
                writer.add(key, piece)
            out_dtypes.add(tensor.dtype)
            del tensor
        shards = writer.close()
    except BaseException:
        writer.abort()  # no write may still be running when atomic_output removes the temp dir
        raise
    names = sorted(str(d).replace("torch.", "") for d in out_dtypes)
    out_dtype = names[0] if len(names) == 1 else "mixed: " + ", ".join(names)
    verification = {"method": "none", "note": "not verified; run `hyperclone verify SRC OUT` to compare logits"}
    return StreamResult(tmp, shards, len(entries), writer.total_params, writer.total_bytes, out_dtype, 0.0,
                        verification, grown_on=str(grow_on or "cpu"))


def _planned_entries(plan: ClonePlan, layout: SourceLayout, wide_shapes: dict[str, tuple[int, ...]],
                     save_as: Callable, dtype: torch.dtype | None
                     ) -> tuple[list[tuple[str, tuple, torch.dtype]], dict[str, list[str]]]:
    """(stored key, shape, dtype) of every tensor the clone will hold, in the order they are grown, and the
    stored keys of each grown tensor (one, or one per expert for a v5 MoE expert stack).

    Each keeps its source's stored dtype (``dtype`` replaces floating ones, as ``grown_tensors`` casts).
    """
    sources = plan.sources_of(name for name, _, _ in layout.entries)
    _check_structure(plan, wide_shapes, {wide for wide, _ in sources})
    entries, parts = [], {}
    for wide, source in sources:
        stored = layout.dtypes[source if plan.depth > 1 or wide not in layout.dtypes else wide]
        out = dtype if dtype is not None and stored.is_floating_point else stored
        form = save_as(wide, torch.empty(wide_shapes[wide], dtype=out, device="meta"))
        parts[wide] = list(form)
        entries += [(key, tuple(t.shape), out) for key, t in form.items()]
    return entries, parts


def _write_record(tmp: Path, result: StreamResult, plan: ClonePlan, source: str, wide_config, max_bytes: int) -> None:
    """Provenance (with how the clone was checked) and model card, into ``tmp``."""
    verification = result.verification
    verification["structure"] = (f"all {result.n_tensors} tensors present with the shapes the wide config "
                                 "implies (planned before writing, checked as each was written)")
    record = provenance(plan, source, result.report, {
        "mode": "streaming", "dtype": result.dtype, "grown_on": result.grown_on, "max_shard_size": max_bytes,
        "shards": len(result.shards),
        "verification": verification,
    })
    write_metadata(tmp, record, wide_config, result.n_params)  # the card says how it was checked


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
