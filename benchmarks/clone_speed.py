"""How fast is cloning, and how much memory does it take? Prints a table.

Generates a synthetic Llama-shaped checkpoint (~0.5B parameters, random bf16
weights, sharded safetensors) in a temporary directory, then measures, each in
its own subprocess so peak RSS figures do not mix:

- copy: the machine's memory-copy bandwidth (a 1 GiB tensor copied into a
  warm buffer, and into fresh memory, which also pays the page faults);
- disk: the write bandwidth of the disk holding the temp dir (a 1 GiB buffer
  written to a file there and fsynced, like ``dd ... conv=fsync``), the limit
  for streaming, which writes every output byte;
- naive: what the authors' reference implementation does: build the wide
  model with ``from_config`` (random init), then copy the grown weights in;
- in-memory ``clone`` (source already loaded; the load time is shown apart);
- streaming ``stream_clone``: safetensors on disk to safetensors on disk.

Output GB/s is bytes of wide weights produced per second. Not a test; run it
by hand: ``python benchmarks/clone_speed.py [--params 0.5e9] [--factor 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 2**30


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
def measure(kind: str, src: str, out: str, factor: int, shard: str) -> dict:
    import torch

    if kind == "copy":
        a = torch.ones(GiB, dtype=torch.uint8)
        b = torch.empty_like(a)
        b.copy_(a)
        warm = min(_timed(lambda: b.copy_(a)) for _ in range(3))
        fresh = min(_timed(lambda: a.clone()) for _ in range(3))
        return {"seconds": warm, "bytes": GiB, "fresh_seconds": fresh, "peak": _peak()}
    if kind == "disk":
        buf = memoryview(bytearray(os.urandom(2**20)) * 1024)  # 1 GiB, incompressible
        t0 = time.perf_counter()
        with open(out, "wb") as f:
            for i in range(0, GiB, 64 * 2**20):
                f.write(buf[i:i + 64 * 2**20])
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - t0
        os.unlink(out)
        return {"seconds": seconds, "bytes": GiB, "peak": _peak()}

    from transformers import AutoModelForCausalLM

    from hyperclone.clone import clone, grow_state, make_plan
    from hyperclone.growth import Growth
    from hyperclone.stream import stream_clone

    if kind == "stream":
        t0 = time.perf_counter()
        r = stream_clone(src, out, Growth(factor), max_shard_size=shard)
        seconds = time.perf_counter() - t0
        largest = max((Path(out) / s).stat().st_size for s in r.shards)
        return {"seconds": seconds, "bytes": r.n_bytes, "peak": _peak(), "largest_shard": largest}

    t0 = time.perf_counter()
    source = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    load = time.perf_counter() - t0
    after_load = _peak()
    t0 = time.perf_counter()
    if kind == "memory":
        wide = clone(source, factor)
    else:  # naive: random init of the wide model, then copy the grown weights in, tensor by tensor
        plan = make_plan(source.config, Growth(factor))
        wide = AutoModelForCausalLM.from_config(plan.wide_config(), dtype=torch.bfloat16)
        target = wide.state_dict()
        with torch.no_grad():
            for name, t in grow_state(plan, source.state_dict().items()):
                target[name].copy_(t)
    seconds = time.perf_counter() - t0
    n_bytes = sum(p.numel() * p.element_size() for p in wide.parameters())
    return {"seconds": seconds, "bytes": n_bytes, "peak": _peak(), "load_seconds": load, "after_load": after_load}


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def run(kind: str, src: Path, out: Path, factor: int, shard: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--measure", kind, "--src", str(src), "--out", str(out),
           "--factor", str(factor), "--max-shard-size", shard]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=0.5e9, help="source parameters (default 0.5e9)")
    ap.add_argument("--factor", type=int, default=2)
    ap.add_argument("--max-shard-size", default="2GB")
    ap.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.src, args.out, args.factor, args.max_shard_size)))
        return

    import platform

    import psutil
    import torch

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="hyperclone-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        n = make_checkpoint(tmp / "src", args.params)
        print(f"synthetic Llama checkpoint: {n / 1e6:.0f}M parameters, bf16, "
              f"{sum(f.stat().st_size for f in (tmp / 'src').glob('*.safetensors')) / 1e9:.2f} GB in "
              f"{len(list((tmp / 'src').glob('*.safetensors')))} shards (made in {time.perf_counter() - t0:.0f}s)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), {psutil.virtual_memory().total / GiB:.0f} GiB RAM; "
              f"factor {args.factor}, output shards up to {args.max_shard_size}\n")
        thp = {"THP_MEM_ALLOC_ENABLE": "1"}
        rows = [("memory copy (1 GiB, warm buffer)", run("copy", tmp / "src", tmp / "x", args.factor,
                                                          args.max_shard_size))]
        copy = rows[0][1]
        rows.append(("memory copy (1 GiB, fresh memory)", dict(copy, seconds=copy["fresh_seconds"])))
        disk = run("disk", tmp / "src", tmp / "disk-probe", args.factor, args.max_shard_size)
        rows.append(("disk write (1 GiB + fsync, temp dir)", disk))
        rows.append(("naive: from_config + copy in", run("naive", tmp / "src", tmp / "x", args.factor,
                                                         args.max_shard_size)))
        rows.append(("in-memory clone", run("memory", tmp / "src", tmp / "x", args.factor, args.max_shard_size)))
        rows.append(("in-memory clone, THP_MEM_ALLOC_ENABLE=1", run("memory", tmp / "src", tmp / "x", args.factor,
                                                                     args.max_shard_size, thp)))
        stream = run("stream", tmp / "src", tmp / "s1", args.factor, args.max_shard_size)
        rows.append(("streaming (disk to disk)", stream))
        rows.append(("streaming, THP_MEM_ALLOC_ENABLE=1", run("stream", tmp / "src", tmp / "s2", args.factor,
                                                               args.max_shard_size, thp)))
        naive_s = rows[3][1]["seconds"]
        bw = copy["bytes"] / copy["seconds"]
        disk_bw = disk["bytes"] / disk["seconds"]
        print(f"{'approach':42} {'seconds':>8} {'peak RSS':>9} {'out GB/s':>8} {'vs naive':>8} {'of copy bw':>10} "
              f"{'of disk bw':>10}")
        for name, r in rows:
            rate = r["bytes"] / r["seconds"]
            baseline = name.startswith(("memory copy", "disk write"))
            vs = f"{naive_s / r['seconds']:.1f}x" if not baseline else ""
            of_disk = f"{rate / disk_bw:.0%}" if name.startswith(("streaming", "disk write")) else ""
            print(f"{name:42} {r['seconds']:8.2f} {r['peak'] / GiB:7.2f}Gi {rate / 1e9:8.2f} {vs:>8} "
                  f"{rate / bw:10.0%} {of_disk:>10}")
        mem = rows[4][1]
        print(f"\nsource load (from_pretrained, not counted above): {mem['load_seconds']:.1f}s; "
              f"peak RSS after loading it {mem['after_load'] / GiB:.2f} GiB")
        bound = stream["largest_shard"] + GiB
        print(f"targets: in-memory clone >= 3x naive: {naive_s / mem['seconds']:.1f}x; "
              f"streaming peak RSS {stream['peak'] / GiB:.2f} GiB <= largest shard + 1 GiB = {bound / GiB:.2f} GiB: "
              f"{'met' if stream['peak'] <= bound else 'MISSED'}; output >= 50% of copy bandwidth: in-memory "
              f"{mem['bytes'] / mem['seconds'] / bw:.0%}, streaming {stream['bytes'] / stream['seconds'] / bw:.0%}; streaming vs disk write bandwidth "
              f"({disk_bw / 1e9:.2f} GB/s with fsync): {stream['bytes'] / stream['seconds'] / disk_bw:.0%}")


if __name__ == "__main__":
    main()
