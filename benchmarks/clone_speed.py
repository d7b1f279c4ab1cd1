"""How fast is cloning, and how much memory does it take? Prints two tables.

Generates synthetic Llama-shaped checkpoints (random bf16 weights, sharded
safetensors) in a temporary directory, then measures, each in its own
subprocess so peak RSS figures do not mix:

- copy: the machine's memory-copy bandwidth (a 1 GiB tensor copied into a
  warm buffer, and into fresh memory, which also pays the page faults);
- disk: the write bandwidth of the disk holding the temp dir: as many bytes
  as the streamed clone's output, written to one file there in 64 MiB writes,
  fsynced at the end (like ``dd ... conv=fsync``), the same with each write's
  writeback started at once (as the streaming writer does; usually the faster
  of the two, and the one streaming is held to), and not fsynced at all (what
  the page cache absorbs; past the kernel's dirty-page limits it throttles the
  writer towards the disk's own speed, so the size must match the output's);
- naive: what the authors' reference implementation does: build the wide
  model with ``from_config`` (random init), then copy the grown weights in;
- in-memory ``clone`` (source already loaded; the load time is shown apart);
- streaming ``stream_clone``: safetensors on disk to safetensors on disk, as
  the library does it (no fsync), and once more followed by an fsync of every
  file it wrote (timed together: what it costs to have the clone on the disk),
  each compared with the disk row written the same way.

Every row starts after ``os.sync()``, so no row pays for the previous one's
dirty pages, and the disk and streaming rows after a pause (``_settle``), so
none of them reuses memory another row just freed. The source's shards were just written, so they are read from
the page cache (as after a download).

Peak RSS is the process's peak (``VmHWM``); "above base" is the peak minus
the RSS just before the measured step (after imports; for in-memory rows,
after loading the source), where Linux lets the peak be reset.

Then the scaling table: streaming and in-memory at three sizes (``--sizes``),
time and peak RSS above base, with the largest wide tensor beside it.
Output GB/s is bytes of wide weights produced per second. Not a test; run it
by hand: ``python benchmarks/clone_speed.py [--params 0.5e9] [--sizes 0.1e9,0.5e9,1e9] [--device cuda]``.
With ``--device cuda`` the clones grow on the GPU (in memory: the source is
moved there first; streaming: each tensor is copied there, grown and copied
back) and the peak GPU memory is printed; the issue's GPU measurement is
``--params 3e9 --sizes 0.5e9,1e9,3e9 --device cuda``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 2**30


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def _peak() -> int:
    return _status("VmHWM")


def _reset_peak() -> int:
    """Reset the peak RSS to the current RSS where Linux allows it (>= 4.0); the RSS now (the base)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    except OSError:
        return _peak()


def llama_config(params: float):
    """A Llama config of about ``params`` parameters (GQA, untied head, vocab 32000)."""
    from transformers import LlamaConfig

    hidden, inter, vocab = 1536, 4096, 32000
    per_layer = 2 * hidden * hidden + 2 * hidden * (hidden // 3) + 3 * hidden * inter
    layers = max(1, round((params - 2 * vocab * hidden) / per_layer))
    return LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_attention_heads=12, num_key_value_heads=4,
                       num_hidden_layers=layers, vocab_size=vocab, tie_word_embeddings=False, dtype="bfloat16")


def make_checkpoint(path: Path, params: float, shard_bytes: int = 500 * 10**6) -> int:
    """Random bf16 weights written straight to sharded safetensors; returns the parameter count."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    config = llama_config(params)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    path.mkdir(parents=True)
    config.save_pretrained(path)
    gen = torch.Generator().manual_seed(0)
    shard, size, weight_map, n, total = {}, 0, {}, 0, 0
    names = list(shapes)
    for i, name in enumerate(names):
        t = torch.empty(shapes[name], dtype=torch.bfloat16)
        t.copy_(torch.randn(shapes[name], generator=gen) * 0.02) if len(shapes[name]) > 1 else t.fill_(1.0)
        shard[name], size, total = t, size + t.numel() * 2, total + t.numel()
        if size >= shard_bytes or i == len(names) - 1:
            n += 1
            save_file(shard, path / f"part-{n:05d}.safetensors", metadata={"format": "pt"})
            weight_map.update({k: f"part-{n:05d}.safetensors" for k in shard})
            shard, size = {}, 0
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return total


# --------------------------------------------------------------------------- #
# One measurement per subprocess
# --------------------------------------------------------------------------- #
def measure(kind: str, src: str, out: str, factor: int, shard: str, nbytes: int = GiB, device: str = "cpu") -> dict:
    import torch

    if kind == "copy":
        a = torch.ones(GiB, dtype=torch.uint8)
        b = torch.empty_like(a)
        b.copy_(a)
        warm = min(_timed(lambda: b.copy_(a)) for _ in range(3))
        fresh = min(_timed(lambda: a.clone()) for _ in range(3))
        return {"seconds": warm, "bytes": GiB, "fresh_seconds": fresh, "peak": _peak()}
    if kind in ("disk", "disk-nosync", "disk-early"):
        _settle()
        return _disk(out, fsync=kind != "disk-nosync", nbytes=nbytes, early=kind == "disk-early")

    from transformers import AutoModelForCausalLM

    from hyperclone.core.clone import clone, grow_state, make_plan
    from hyperclone.core.growth import Growth
    from hyperclone.io.stream import stream_clone

    if kind in ("stream", "stream-fsync"):
        largest = max(math.prod(s) * 2 for s in _wide_shapes(src, factor))  # also imports the model's classes
        _settle()
        base = _reset_peak()
        t0 = time.perf_counter()
        r = stream_clone(src, out, Growth(factor), max_shard_size=shard, device=None if device == "cpu" else device)
        streamed = time.perf_counter() - t0
        if kind == "stream-fsync":
            _fsync_tree(Path(out))
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "bytes": r.n_bytes, "peak": _peak(), "base": base, "largest": largest,
                "shards": len(r.shards), "fsync_seconds": seconds - streamed, "gpu_peak": _gpu_peak(device)}

    t0 = time.perf_counter()
    source = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).to(device)
    _sync(device)
    load = time.perf_counter() - t0
    base = _reset_peak()
    t0 = time.perf_counter()
    if kind == "memory":
        wide = clone(source, factor)
    else:  # naive: random init of the wide model, then copy the grown weights in, tensor by tensor
        plan = make_plan(source.config, Growth(factor))
        wide = AutoModelForCausalLM.from_config(plan.wide_config(), dtype=torch.bfloat16).to(device)
        target = wide.state_dict()
        with torch.no_grad():
            for name, t in grow_state(plan, source.state_dict().items()):
                target[name].copy_(t)
    _sync(device)
    seconds = time.perf_counter() - t0
    n_bytes = sum(p.numel() * p.element_size() for p in wide.parameters())
    return {"seconds": seconds, "bytes": n_bytes, "peak": _peak(), "base": base, "load_seconds": load,
            "gpu_peak": _gpu_peak(device)}


SETTLE_S = 6.0


def _settle() -> None:
    """Start the disk and streaming rows from the same memory state: idle long enough for memory freed by the
    previous row to be handed back to the host (on a VM with free page reporting, after about 2 s), so no row
    writes into pages another row just freed. Measured on the dev VM (Firecracker, free page reporting on):
    3 GB written into the page cache at 3.4 GB/s right after the same amount was freed, 0.3 GB/s after a 6 s
    pause; on bare metal the pause changes nothing."""
    time.sleep(SETTLE_S)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _gpu_peak(device: str) -> int:
    """Peak GPU memory allocated by torch in this process (0 on the CPU)."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if device.startswith("cuda") else 0


def _disk(out: str, fsync: bool, nbytes: int, early: bool = False) -> dict:
    """``nbytes`` of incompressible bytes written to ``out`` in 64 MiB writes from a warm buffer, fsynced or not;
    ``early``: each write's writeback started at once, as the streaming writer does (``start_writeback``)."""
    from hyperclone.io.shard_writer import start_writeback

    chunk = 64 * 2**20
    buf = memoryview(bytearray(os.urandom(2**20)) * 64)
    t0 = time.perf_counter()
    with open(out, "wb", buffering=0) as f:
        for i in range(0, nbytes, chunk):
            n = f.write(buf[:min(chunk, nbytes - i)])
            if early:
                start_writeback(f.fileno(), i, n)
        if fsync:
            os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    os.unlink(out)
    return {"seconds": seconds, "bytes": nbytes, "peak": _peak()}


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then the directories (what makes a finished clone durable)."""
    from hyperclone.io.atomic import fsync_dir

    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in (path, path.parent):
        fsync_dir(d)


def _wide_shapes(src: str, factor: int) -> list[tuple[int, ...]]:
    from transformers import AutoConfig

    from hyperclone.core.pretrained import meta_model, state_shapes
    from hyperclone.core.clone import make_plan
    from hyperclone.core.growth import Growth

    wide = make_plan(AutoConfig.from_pretrained(src), Growth(factor)).wide_config()
    return list(state_shapes(meta_model(wide)).values())


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


DEVICE = "cpu"  # where the clones grow (--device); the baselines are the machine's


def run(kind: str, src: Path, out: Path, factor: int, shard: str, nbytes: int = GiB) -> dict:
    os.sync()  # no row pays for the previous one's dirty pages
    cmd = [sys.executable, __file__, "--measure", kind, "--src", str(src), "--out", str(out),
           "--factor", str(factor), "--max-shard-size", shard, "--bytes", str(nbytes), "--device", DEVICE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)  # keep the disk free for the next row
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, r: dict, naive_s: float | None, fresh_bw: float, disk: dict | None) -> str:
    rate = r["bytes"] / r["seconds"]
    vs = f"{naive_s / r['seconds']:.1f}x" if naive_s else ""
    above = f"{(r['peak'] - r['base']) / GiB:.2f}Gi" if "base" in r else ""
    sync = f"{rate / disk['sync']:.0%}" if disk else ""
    nosync = f"{rate / disk['nosync']:.0%}" if disk else ""
    return (f"{name:38} {r['seconds']:8.2f} {r['peak'] / GiB:7.2f}Gi {above:>9} {rate / 1e9:8.2f} {vs:>8} "
            f"{rate / fresh_bw:8.0%} {sync:>9} {nosync:>9}")


def comparison(tmp: Path, src: Path, args) -> dict:
    """The main table: baselines, naive, in-memory, streaming on one checkpoint; the measured rows."""
    out_bytes = sum(math.prod(s) * 2 for s in _wide_shapes(str(src), args.factor))  # bf16
    copy = run("copy", src, tmp / "x", args.factor, args.max_shard_size)
    disk_sync = run("disk", src, tmp / "disk-probe", args.factor, args.max_shard_size, out_bytes)
    disk_nosync = run("disk-nosync", src, tmp / "disk-probe", args.factor, args.max_shard_size, out_bytes)
    disk_early = run("disk-early", src, tmp / "disk-probe", args.factor, args.max_shard_size, out_bytes)
    naive = run("naive", src, tmp / "x", args.factor, args.max_shard_size)
    memory = run("memory", src, tmp / "x", args.factor, args.max_shard_size)
    stream = run("stream", src, tmp / "s", args.factor, args.max_shard_size)
    stream_sync = run("stream-fsync", src, tmp / "s", args.factor, args.max_shard_size)
    fresh_bw = GiB / copy["fresh_seconds"]
    disk = {"sync": out_bytes / min(disk_sync["seconds"], disk_early["seconds"]),
            "nosync": out_bytes / disk_nosync["seconds"]}
    gb = f"{out_bytes / 1e9:.2f} GB"
    print(f"{'approach':38} {'seconds':>8} {'peak RSS':>9} {'above base':>9} {'out GB/s':>8} {'vs naive':>8} "
          f"{'of fresh':>8} {'of fsync':>9} {'of nosync':>9}")
    print("('of fsync': of the faster of the two fsynced disk rows; 'of nosync': of the unsynced disk row)")
    print(_row("memory copy (1 GiB, warm buffer)", copy, None, fresh_bw, None))
    print(_row("memory copy (1 GiB, fresh memory)", dict(copy, seconds=copy["fresh_seconds"]), None, fresh_bw,
               None))
    print(_row(f"disk write ({gb} + fsync)", disk_sync, None, fresh_bw, disk))
    print(_row(f"disk write ({gb}, no fsync)", disk_nosync, None, fresh_bw, disk))
    print(_row(f"disk write ({gb}, writeback at once + fsync)", disk_early, None, fresh_bw, disk))
    print(_row("naive: from_config + copy in", naive, naive["seconds"], fresh_bw, None))
    print(_row("in-memory clone", memory, naive["seconds"], fresh_bw, None))
    print(_row("streaming (disk to disk, no fsync)", stream, naive["seconds"], fresh_bw, disk))
    print(_row("streaming, then fsync of its files", stream_sync, naive["seconds"], fresh_bw, disk))
    print(f"\nsource load (from_pretrained, not counted above): {memory['load_seconds']:.1f}s; in-memory "
          f"'above base' is the RSS added after loading the source")
    rate = memory["bytes"] / memory["seconds"]
    srate = stream["bytes"] / stream["seconds"]
    sync_rate = stream_sync["bytes"] / stream_sync["seconds"]
    print(f"in-memory clone: {naive['seconds'] / memory['seconds']:.1f}x the naive approach (target 10x), "
          f"{rate / fresh_bw:.0%} of fresh-memory write bandwidth (target 50%)")
    print(f"streaming (target 90% of the disk's bandwidth, like for like): with fsync {sync_rate / disk['sync']:.0%} of "
          f"the disk's faster fsynced write of the same {gb} (plain: {disk_sync['seconds']:.2f}s, writeback at once: "
          f"{disk_early['seconds']:.2f}s; streaming's final fsync took {stream_sync['fsync_seconds']:.1f}s), "
          f"without {srate / disk['nosync']:.0%} of its unsynced one; "
          f"peak RSS above base {(stream['peak'] - stream['base']) / GiB:.2f} GiB "
          f"with one output shard of up to {args.max_shard_size} ({stream['shards']} shards), largest wide tensor "
          f"{stream['largest'] / GiB:.2f} GiB")
    if DEVICE != "cpu":
        print(f"peak GPU memory: naive {naive['gpu_peak'] / GiB:.2f} GiB, in-memory {memory['gpu_peak'] / GiB:.2f} GiB, "
              f"streaming {stream['gpu_peak'] / GiB:.2f} GiB")
    return {"memory": memory, "stream": stream}


def scaling(tmp: Path, sizes: list[float], args, known: dict[float, tuple[Path, int, dict]]) -> None:
    """Streaming and in-memory time and peak RSS at each size (a checkpoint is made for each missing one)."""
    print(f"\nscaling (x{args.factor}, bf16, output shards up to {args.max_shard_size}):")
    print(f"{'source params':>13} {'wide params':>11} {'out GB':>7} {'stream s':>8} {'stream GB/s':>11} "
          f"{'stream peak above base':>22} {'largest tensor':>14} {'memory s':>8} {'memory above base':>17}")
    for size in sizes:
        if size in known:
            src, n, rows = known[size]
        else:
            src = tmp / f"src-{size:g}"
            n = make_checkpoint(src, size)
            rows = {"stream": run("stream", src, tmp / "s", args.factor, args.max_shard_size),
                    "memory": run("memory", src, tmp / "x", args.factor, args.max_shard_size)}
            shutil.rmtree(src)
        s, m = rows["stream"], rows["memory"]
        print(f"{n / 1e6:12.0f}M {s['bytes'] / 2e6:10.0f}M {s['bytes'] / 1e9:7.2f} {s['seconds']:8.2f} "
              f"{s['bytes'] / s['seconds'] / 1e9:11.2f} {(s['peak'] - s['base']) / GiB:20.2f}Gi "
              f"{s['largest'] / GiB:12.2f}Gi {m['seconds']:8.2f} {(m['peak'] - m['base']) / GiB:15.2f}Gi")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=0.5e9, help="source parameters of the main table (0.5e9)")
    ap.add_argument("--sizes", default="0.1e9,0.5e9,1e9", help="source sizes of the scaling table")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--max-shard-size", default="2GB")
    ap.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bytes", type=int, default=GiB, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help="where the clones grow: cpu (default) or cuda (prints GPU peaks)")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.src, args.out, args.factor, args.max_shard_size, args.bytes, args.device)))
        return

    import platform

    global DEVICE
    DEVICE = args.device

    import psutil
    import torch

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="hyperclone-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n = make_checkpoint(tmp / "src", args.params)
        files = list((tmp / "src").glob("*.safetensors"))
        print(f"synthetic Llama checkpoint: {n / 1e6:.0f}M parameters, bf16, "
              f"{sum(f.stat().st_size for f in files) / 1e9:.2f} GB in {len(files)} shards "
              f"(made in {time.perf_counter() - t0:.0f}s)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), {psutil.virtual_memory().total / GiB:.0f} GiB RAM, "
              f"load average {os.getloadavg()[0]:.1f}; factor {args.factor}, output shards up to "
              f"{args.max_shard_size}; clones grow on {DEVICE}"
              f"{' (' + torch.cuda.get_device_name() + ')' if DEVICE.startswith('cuda') else ''}\n")
        rows = comparison(tmp, tmp / "src", args)
        shutil.rmtree(tmp / "src")
        sizes = [float(x) for x in args.sizes.split(",")]
        scaling(tmp, sizes, args, {args.params: (tmp / "src", n, rows)})


if __name__ == "__main__":
    main()
