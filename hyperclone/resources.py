"""Will it fit? Parameter counts of a wide model and the memory free on a device."""

from __future__ import annotations

import torch

from .errors import HyperCloneError


def count_parameters(config) -> int:
    """Parameters of the model a config describes, counted on the meta device (no memory used)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def free_bytes(device: torch.device | str) -> int:
    """Memory a new allocation can use on ``device`` (RAM for cpu/mps)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_fits(required: int, device: torch.device | str, what: str = "the wide model", force: bool = False) -> None:
    """Refuse, with the numbers, an allocation larger than the free memory (unless ``force``)."""
    available = free_bytes(device)
    if required > available and not force:
        raise HyperCloneError(
            f"{what} needs {human_bytes(required)} but only {human_bytes(available)} is free on {device}; "
            "use a smaller factor, a smaller dtype (--dtype bfloat16), stream from disk, or pass --force"
        )
