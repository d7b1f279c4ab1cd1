"""GPU check (run on a CUDA machine): cloning, verification and a short race on the GPU.

Prints tables; asserts nothing silently. Usage: python benchmarks/gpu_check.py [--race-steps N]
Sections:
  1. every family (tiny random models) cloned on cuda in fp32 and bf16, verified;
  2. the built-in models loaded on the default device, cloned x2/x4, verified;
  3. a short race on the built-in GPT-2 model in bf16 on cuda, with tokens/s;
  4. streaming growth on cuda against the CPU: the same bits for the symmetric
     and diagonal variants, the largest difference for the noisy ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def families(device: str) -> None:
    from families import CASES, MOE_CASES, tiny_model

    from hyperclone import clone, verify

    print(f"\n1. every family on {device}: clone x2 (FFN x3), noisy_symmetric, verify")
    print(f"{'case':<18}{'dtype':<10}{'max rel diff':>14}{'top-1':>8}{'layers':>8}  passed")
    for case_id, model_type, kwargs, _ in CASES + MOE_CASES:
        for dtype in (torch.float32, torch.bfloat16):
            src = tiny_model(model_type, kwargs, dtype=dtype).to(device)
            wide = clone(src, 2, 3, variant="noisy_symmetric", seed=1)
            assert next(wide.parameters()).device.type == device, "clone left the source device"
            r = verify(src, wide)
            print(f"{case_id:<18}{str(dtype)[6:]:<10}{r.max_rel_diff:>14.2e}{r.top1_agreement:>8.1%}"
                  f"{sum(c.passed for c in r.layers):>4}/{len(r.layers):<3}  {r.passed}")


def builtins() -> None:
    from hyperclone import clone, verify
    from hyperclone.io.sources import default_device, load_source

    print(f"\n2. built-in models on {default_device()}")
    for name in ("tiny-gpt2-stdlib", "tiny-llama-stdlib"):
        for dtype in ("float32", "bfloat16"):
            model, tok = load_source(name, dtype=dtype)
            for factor in (2, 4):
                t = time.perf_counter()
                wide = clone(model, factor, variant="noisy_symmetric")
                torch.cuda.synchronize() if torch.cuda.is_available() else None
                dt = time.perf_counter() - t
                r = verify(model, wide, text="def fibonacci(n):\n    return", tokenizer=tok)
                print(f"{name:<18} {dtype:<9} x{factor}: clone {dt * 1000:7.1f} ms on {next(wide.parameters()).device}, "
                      f"max rel diff {r.max_rel_diff:.2e}, top-1 {r.top1_agreement:.1%}, passed {r.passed}")


def race_on_gpu(steps: int) -> None:
    from hyperclone.training.loop import race

    print(f"\n3. race on cuda, bf16, {steps} steps: built-in GPT-2 x2")
    t = time.perf_counter()
    result = race("tiny-gpt2-stdlib", factor=2, contestants=("noisy_symmetric", "symmetric", "random", "source"),
                  steps=steps, batch_size=32, seq_len=256, lr=1e-3, warmup=max(1, steps // 10),
                  eval_every=max(1, steps // 10), device="cuda", precision="bf16")
    dt = time.perf_counter() - t
    print(result.table())
    for s in result.speedups():
        print(s.describe())
    tokens = sum((result.final(n) or {}).get("tokens", 0) for n in result.contestants)
    print(f"wall {dt:.1f}s, {tokens / dt:,.0f} training tokens/s over all contestants")


def streaming_on_gpu(device: str = "cuda") -> None:
    import tempfile

    from families import LLAMA_KW, tiny_model
    from safetensors.torch import load_file

    from hyperclone import Growth
    from hyperclone.core.growth import VARIANTS
    from hyperclone.io.stream import stream_clone

    print(f"\n4. streaming growth on {device} vs cpu (tiny Llama, x2, FFN x3)")
    print(f"{'dtype':<10}{'variant':<17}{'identical':>10}{'max abs diff':>14}{'largest weight':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.bfloat16):
            src = Path(tmp) / f"src-{dtype}"
            tiny_model("llama", LLAMA_KW, dtype=dtype).save_pretrained(src)
            for variant in VARIANTS:
                outs = []
                for i, where in enumerate(("cpu", device)):  # i: a run against the CPU itself still gets its own dir
                    out = Path(tmp) / f"{dtype}-{variant}-{i}-{where}"
                    stream_clone(src, out, Growth(2, 3, variant, seed=5), device=where)
                    outs.append(load_file(out / "model.safetensors"))
                a, b = outs
                same = all(torch.equal(a[k], b[k]) for k in a)
                diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
                big = max(float(a[k].double().abs().max()) for k in a)
                print(f"{str(dtype)[6:]:<10}{variant:<17}{str(same):>10}{diff:>14.2e}{big:>16.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--race-steps", type=int, default=400)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}"
          f" ({torch.cuda.get_device_name() if torch.cuda.is_available() else '-'})")
    families("cuda" if torch.cuda.is_available() else "cpu")
    builtins()
    if torch.cuda.is_available():
        race_on_gpu(args.race_steps)
        streaming_on_gpu()
