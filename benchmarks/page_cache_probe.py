"""Does this machine write fresh memory slowly? A probe for reading clone_speed.py's figures.

Writes 3 GB from a warm 64 MiB buffer into the page cache (one file, no fsync),
deletes the file (its pages go back to the free lists), and repeats after a
pause of 0 or 6 seconds. On a VM with free page reporting (Firecracker,
``page_reporting`` on the kernel command line), memory freed for about 2 s is
handed back to the host, and touching it again costs a host fault per page:
the write after a 6 s pause is then several times slower than the one right
after. On bare metal the pause changes nothing. Usage:
``python benchmarks/page_cache_probe.py [--dir /tmp]``.
"""

from __future__ import annotations

import argparse
import os
import time

SIZE, CHUNK = 3 << 30, 64 << 20


def write_once(path: str, buf: memoryview) -> float:
    """Seconds to pwrite SIZE bytes of ``buf`` (repeated) into ``path``; the file is deleted after."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for offset in range(0, SIZE, CHUNK):
            os.pwrite(fd, buf, offset)
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp", help="where to write the probe file (default /tmp)")
    path = os.path.join(ap.parse_args().dir, f"page-cache-probe-{os.getpid()}")
    buf = memoryview(bytearray(os.urandom(1 << 20)) * (CHUNK >> 20))
    for gap in (0, 0, 6, 0, 6):
        time.sleep(gap)
        print(f"after a {gap} s pause: {SIZE / 1e9 / write_once(path, buf):.2f} GB/s into the page cache", flush=True)


if __name__ == "__main__":
    main()
