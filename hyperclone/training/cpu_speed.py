"""Two process settings that make training on a CPU faster without changing what it computes.

Measured on the micro clone (``benchmarks/results/micro_step_speed.txt``), they are switched on by the
race when it trains on the CPU:

- ``keep_freed_memory``: glibc's allocator gives every block over 128 KiB straight back to the kernel
  when it is freed (and trims the heap's top past 128 KiB), so each training step's large tensors (the
  logits and their gradients: 16 MiB each for the micro clone) come back as fresh pages that fault in,
  one 4 KiB page at a time, zero-filled by the kernel: over a million page faults in 150 steps. Raising
  both thresholds keeps those blocks in the heap for the next step. Bit-identical results; the cost is
  that the process keeps up to ``TRIM_BYTES`` of freed heap instead of returning it.
- ``denormals_flushed``: subnormal floats (below 1.2e-38) are handled in microcode, many times slower
  than normal ones, and AdamW's second moments of rarely seen embedding rows decay into that range late
  in a run. Flushing them to zero changes no value by more than 1.2e-38 (against AdamW's eps of 1e-8).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Iterator

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit: blocks up to this stay in the heap
TRIM_BYTES = 512 * 1024 * 1024  # free heap kept at the top before it goes back to the kernel


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse large freed blocks instead of returning them to the kernel (process-wide).

    True when set; False where there is no glibc ``mallopt`` (macOS, Windows, musl's no-op answers 0).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))


@contextlib.contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """On the CPU, flush subnormal floats to zero inside the block (this thread), then back to torch's default."""
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
