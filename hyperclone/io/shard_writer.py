"""Writing a safetensors checkpoint one tensor at a time, each straight to its place in its shard file.

Everything about the output is known before any tensor exists: the names,
shapes and dtypes of the wide model's tensors, hence the shards (split as
``save_pretrained`` splits), their headers and every tensor's byte offset.
``ShardWriter`` writes each tensor there as soon as it is made and drops it,
so memory holds about one tensor (plus a small queue), whatever the shard
size. The files are standard safetensors (metadata ``{"format": "pt"}``)
with the standard index, loadable by ``from_pretrained``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from hyperclone.io.checkpoint import INDEX_FILE, SAFETENSORS_DTYPES, SINGLE_FILE
from hyperclone.core.errors import HyperCloneError

_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
QUEUE_FLOOR = 16 * 2**20  # the writer may hold this much, or the largest tensor when that is larger
_CHUNK = 64 * 2**20


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of the open file ``fd`` (in chunks; short writes continued)."""
    done = 0
    while done < len(data):
        n = os.pwrite(fd, data[done:done + _CHUNK], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"short write at byte {offset + done}")
        done += n


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to the disk now, and not to keep them
    cached once written (``POSIX_FADV_DONTNEED``; on Linux it starts writeback of dirty pages). Advisory: a no-op
    where the call does not exist or fails.

    Without it the disk idles until the page cache holds about a tenth of RAM in dirty pages, then the writer is
    throttled; with it the disk works from the first tensor on, and a multi-GB clone does not fill the page cache
    (benchmarks/clone_speed.py measures both ways)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def plan_shards(entries: Iterable[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int
                ) -> list[list[tuple[str, tuple[int, ...], torch.dtype]]]:
    """(key, shape, dtype) in order, grouped greedily into shards of at most ``max_bytes`` (a bigger tensor alone)."""
    shards: list[list] = []
    size = 0
    for key, shape, dtype in entries:
        n = tensor_bytes(shape, dtype)
        if not shards or (shards[-1] and size + n > max_bytes):
            shards.append([])
            size = 0
        shards[-1].append((key, tuple(shape), dtype))
        size += n
    return shards


def safetensors_header(tensors: list[tuple[str, tuple[int, ...], torch.dtype]]) -> tuple[bytes, dict[str, int]]:
    """The header of a safetensors file holding ``tensors``, and each key's byte offset in the file.

    As ``save_file`` lays them out: metadata ``{"format": "pt"}``, the header padded to 8 bytes, wider
    dtypes first so every tensor starts aligned to its element size.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offsets, pos = {}, 0
    for key, shape, dtype in sorted(tensors, key=lambda t: -t[2].itemsize):
        n = tensor_bytes(shape, dtype)
        header[key] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [pos, pos + n]}
        offsets[key], pos = pos, pos + n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, {k: 8 + len(raw) + o for k, o in offsets.items()}


class ShardWriter:
    """Write a safetensors checkpoint one tensor at a time, each straight to its place in its shard file.

    ``entries`` (key, shape, dtype) fix everything before any tensor exists: the shards (greedy, up to
    ``max_shard_size`` each, as ``save_pretrained`` splits), their final names, headers and every offset.
    One background thread writes (``os.pwrite`` releases the GIL), so making the next tensor overlaps
    writing the previous ones, and asks the kernel to start writing each tensor to the disk at once
    (``start_writeback``). Memory stays bounded: ``reserve(key)`` waits until the tensors handed
    over and not yet written plus this one fit in ``budget`` bytes (the largest tensor or 16 MiB,
    whichever is larger; a tensor alone always fits), so the caller reserves, then makes the tensor,
    then hands it over with ``add``. Tensors may come in any order. A write error (disk full) is raised
    to the caller at the next ``reserve``, ``add`` or ``close``; after any error the caller calls
    ``abort``, which returns only once the thread has stopped writing.
    """

    def __init__(self, target: Path, entries: list[tuple[str, tuple[int, ...], torch.dtype]], max_shard_size: int,
                 on_shard: Callable[[str, int], None] | None = None) -> None:
        self.target, self.on_shard = Path(target), on_shard
        shards = plan_shards(entries, max_shard_size)
        n = len(shards)
        self.shard_names = [SINGLE_FILE] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors"
                                                         for i in range(1, n + 1)]
        self.place: dict[str, tuple[int, int, tuple[int, ...], torch.dtype]] = {}
        self._headers, self._left, self._sizes = [], [], []
        for i, shard in enumerate(shards):
            header, offsets = safetensors_header(shard)
            self._headers.append(header)
            self._left.append(len(shard))
            self._sizes.append(len(header) + sum(tensor_bytes(s, d) for _, s, d in shard))
            self.place.update({key: (i, offsets[key], shape, dtype) for key, shape, dtype in shard})
        sizes = [tensor_bytes(s, d) for _, s, d in entries]
        self.total_bytes, self.total_params = sum(sizes), sum(math.prod(s) for _, s, _ in entries)
        self.budget = max([QUEUE_FLOOR, *sizes])
        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._held = 0  # bytes reserved or handed over and not yet written
        self._reserved: set[str] = set()
        self._added: set[str] = set()
        self._error: BaseException | None = None
        self._stop = False
        self._done: list[int] = []  # shards fully written, not yet reported
        self._fds: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="hyperclone-shard-writer", daemon=True)
        self._thread.start()

    def reserve(self, *keys: str) -> None:
        """Wait until the writer has room for the tensors ``keys`` (the stored parts of one grown tensor), all at
        once; a write error that happened meanwhile is raised here."""
        n = sum(tensor_bytes(*self._placed(key)[2:]) for key in keys)
        self._wait_for(lambda: self._held == 0 or self._held + n <= self.budget)
        with self._cond:
            self._held += n
            self._reserved.update(keys)

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Hand ``key``'s tensor to the writer thread (reserving its room first if ``reserve`` was not called)."""
        _, _, shape, dtype = self._placed(key)
        if key in self._added:
            raise HyperCloneError(f"{key} was written twice (a spec bug; please report it)")
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise HyperCloneError(f"{key}: grown to {tuple(tensor.shape)} {tensor.dtype} but the wide config implies "
                                  f"{shape} {dtype} (a spec bug; please report it)")
        if key not in self._reserved:
            self.reserve(key)
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        with self._cond:
            self._raise_error()
            self._queue.append((key, data))
            self._added.add(key)
            self._cond.notify_all()
        self._report()

    def close(self) -> list[str]:
        """Wait for every write, write the index (when sharded); the shard names. Refuses a missing tensor."""
        with self._cond:
            self._queue.append(None)
            self._cond.notify_all()
        self._thread.join()
        self._close_files()
        self._raise_error()
        self._report()
        missing = [k for k in self.place if k not in self._added]
        if missing:
            raise HyperCloneError(f"{missing[0]} was never written (a spec bug; please report it)")
        if len(self.shard_names) > 1:
            weight_map = {key: self.shard_names[i] for key, (i, *_) in self.place.items()}
            index = {"metadata": {"total_parameters": self.total_params, "total_size": self.total_bytes},
                     "weight_map": dict(sorted(weight_map.items()))}
            (self.target / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return list(self.shard_names)

    def abort(self) -> None:
        """Stop after an error: drop what is queued, and return once the thread writes no more."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join()
        self._close_files()

    def _placed(self, key: str) -> tuple[int, int, tuple[int, ...], torch.dtype]:
        if key not in self.place:
            raise HyperCloneError(f"{key} is not in the planned checkpoint (a spec bug; please report it)")
        return self.place[key]

    def _wait_for(self, ready: Callable[[], bool]) -> None:
        with self._cond:
            while self._error is None and not ready():
                self._cond.wait(0.5)
            self._raise_error()
        self._report()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _report(self) -> None:
        while self._done and self.on_shard is not None:
            i = self._done.pop(0)
            self.on_shard(self.shard_names[i], self._sizes[i])

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop or self._queue[0] is None:
                    return
                key, data = self._queue.popleft()
            try:
                self._write(key, data)
            except BaseException as e:  # raised to the caller at its next call
                with self._cond:
                    self._error = e
                    self._cond.notify_all()
                return
            with self._cond:
                self._held -= len(data)
                self._cond.notify_all()
            del data

    def _write(self, key: str, data) -> None:
        i, offset, _, _ = self.place[key]
        if i not in self._fds:
            self._fds[i] = os.open(self.target / self.shard_names[i], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            write_at(self._fds[i], memoryview(self._headers[i]), 0)  # looked up at call time (tests fill the disk)
        write_at(self._fds[i], memoryview(data), offset)
        start_writeback(self._fds[i], offset, len(data))
        self._left[i] -= 1
        if self._left[i] == 0:
            os.close(self._fds.pop(i))
            with self._cond:
                self._done.append(i)

    def _close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
