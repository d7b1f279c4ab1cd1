"""Will it fit? Parameter counts of a wide model and the memory free on a device."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import torch

from hyperclone.core.errors import HyperCloneError


def count_parameters(config) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory used)."""
    from hyperclone.core.pretrained import meta_model

    return sum(p.numel() for p in meta_model(config).parameters())


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def wide_parameters(config, growth) -> int:
    """Parameters of the clone ``growth`` makes of a ``config`` model, without building it: counted on the meta
    device at depth 1, then layer by layer (the average layer's count) for the layers depth adds, so that an
    absurd depth costs nothing to count."""
    from dataclasses import replace

    from hyperclone.core.clone import config_for_layers, make_plan

    n_layers = int(config.num_hidden_layers)
    growth.check_layer_count(n_layers)
    make_plan(config, growth)  # the source can take this growth (family, depth)
    flat = make_plan(config, replace(growth, depth=1, depth_every=1, stack=False)).wide_config()
    total = count_parameters(flat)
    added = growth.layer_count(n_layers) - n_layers
    if added:
        one, two = (count_parameters(config_for_layers(flat, layers)) for layers in ([0], [0, 0]))
        total += added * (total - (2 * one - two)) // n_layers  # 2 * one - two: what is not in a layer
    return total


def wide_model_bytes(plan, dtype: torch.dtype) -> tuple[int, int]:
    """(parameters, bytes) of the wide model ``plan`` produces, without building it."""
    n = count_parameters(plan.wide_config())
    return n, n * dtype_bytes(dtype)


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, their gradients and AdamW's two moments
# Floats one training step keeps per token for the backward pass: per layer 30 x the hidden size, and 4 x the
# vocabulary (logits and loss); the built-in models' measured peaks are within 10% of this (2-4x, 16-64 x 256).
ACTIVATION_FLOATS_PER_LAYER, ACTIVATION_FLOATS_PER_VOCAB = 30, 4


def activation_bytes(config, growth, tokens: int) -> int:
    """Estimated float32 activations of one training step of ``tokens`` tokens of the clone ``growth`` makes."""
    hidden = int(config.hidden_size) * growth.factor
    layers = growth.layer_count(int(config.num_hidden_layers))
    per_token = ACTIVATION_FLOATS_PER_LAYER * hidden * layers + ACTIVATION_FLOATS_PER_VOCAB * int(config.vocab_size)
    return 4 * tokens * per_token


def training_bytes(config, growth, tokens: int) -> tuple[int, int]:
    """(parameters, bytes) of training the clone ``growth`` makes of a ``config`` model on ``tokens`` tokens a
    step with AdamW: weights, gradients, optimizer state and activations, estimated without building it."""
    n = wide_parameters(config, growth)
    return n, TRAINING_BYTES_PER_PARAMETER * n + activation_bytes(config, growth, tokens)


# Where a cgroup's memory files are seen from inside it (v2 unified, then v1); the namespace root in a container.
_V2_ROOT, _V1_ROOT = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
CGROUP_DIRS = (_V2_ROOT, _V1_ROOT)
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def free_bytes(device: torch.device | str) -> int:
    """Memory a new allocation can use on ``device``.

    For cpu/mps the least of: the RAM the kernel calls available, the room left under this process's
    address-space and data limits (``ulimit -v``/``-d``), and the room left under its cgroup's memory limit
    (containers, systemd slices). Any of them, when hit, fails an allocation.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(min(psutil.virtual_memory().available, _rlimit_room(), _cgroup_room()))


def _rlimit_room() -> float:
    """Bytes left under RLIMIT_AS (virtual size) and RLIMIT_DATA (data segment); inf when unlimited."""
    try:
        import resource
    except ImportError:  # not on Windows
        return math.inf
    import psutil

    used = psutil.Process().memory_info()
    room = math.inf
    for which, in_use in ((resource.RLIMIT_AS, used.vms), (getattr(resource, "RLIMIT_DATA", None), used.data)):
        if which is None:
            continue
        soft, _hard = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY and soft >= 0:
            room = min(room, max(0, soft - in_use))
    return room


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _reclaimable(stat: Path) -> int:
    """Page cache the kernel drops before failing an allocation (inactive file pages in memory.stat)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0
    fields = dict(line.split(maxsplit=1) for line in lines if " " in line)
    value = fields.get("inactive_file", fields.get("total_inactive_file", "0")).strip()
    return int(value) if value.isdigit() else 0


def _own_cgroup_dirs() -> list[Path]:
    """This process's cgroup directories, from /proc/self/cgroup (when /sys/fs/cgroup is the host's root)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    dirs = []
    for line in lines:
        _id, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if path.strip("/") and (controllers == "" or "memory" in controllers.split(",")):
            dirs.append((_V2_ROOT if controllers == "" else _V1_ROOT) / path.strip("/"))
    return dirs


def _cgroup_room() -> float:
    """Bytes left under the cgroup memory limit (v2 memory.max, or v1 memory.limit_in_bytes); inf if none."""
    room = math.inf
    for where in (*CGROUP_DIRS, *_own_cgroup_dirs()):
        for limit_file, usage_file in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit, usage = _read_number(where / limit_file), _read_number(where / usage_file)
            if limit is None or limit >= _UNLIMITED or usage is None:
                continue
            room = min(room, max(0, limit - max(0, usage - _reclaimable(where / "memory.stat"))))
    return room


OUT_OF_MEMORY_PHRASES = ("can't allocate memory", "cannot allocate memory", "out of memory", "not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure: MemoryError, the allocators' RuntimeErrors, or a failed
    memory map (an ``OSError`` with errno ENOMEM, or safetensors' "unable to mmap ...: Cannot allocate memory")."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    if isinstance(error, OSError):
        return error.errno == errno.ENOMEM
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(phrase in text for phrase in OUT_OF_MEMORY_PHRASES)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


CLONE_HINT = "use a smaller factor, a smaller dtype (--dtype bfloat16), stream from disk, or pass --force"


def check_fits_in_memory(required: int, device: torch.device | str, what: str = "the wide model",
                         force: bool = False, hint: str = CLONE_HINT) -> None:
    """Refuse, with the numbers and ``hint`` (what to do), an allocation larger than the free memory (unless
    ``force``)."""
    available = free_bytes(device)
    if required > available and not force:
        raise HyperCloneError(
            f"{what} needs {human_bytes(required)} but only {human_bytes(available)} is free on {device}; {hint}")


def check_clone_fits(model: torch.nn.Module, growth) -> None:
    """Refuse, before anything is grown, a clone of ``model`` (``Growth``) that does not fit in free memory."""
    weight = next(model.parameters())
    n = wide_parameters(model.config, growth)
    check_fits_in_memory(n * weight.element_size(), weight.device,
                         f"the x{growth.factor} clone ({n / 1e6:.1f}M parameters)", hint="use a smaller factor or depth")
