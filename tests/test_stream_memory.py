"""Streaming writes each grown tensor straight to its place: standard files, same bits, memory of one tensor."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from families import synthetic_llama
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from hyperclone import Growth, clone
from hyperclone.io.checkpoint import INDEX_FILE, SINGLE_FILE
from hyperclone.core.pretrained import from_pretrained
from hyperclone.io.shard_writer import plan_shards, safetensors_header
from hyperclone.io.stream import stream_clone

# A Llama whose embedding and head are far larger than any other tensor (many small ones, one large pair).
SMALL_WITH_LARGE_VOCAB = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                              num_hidden_layers=6, vocab_size=8192, max_position_embeddings=64,
                              tie_word_embeddings=False)


def test_streamed_bf16_clone_loads_with_from_pretrained_and_equals_the_in_memory_clone(tmp_path):
    src = tmp_path / "src"
    synthetic_llama(src, torch.bfloat16, **SMALL_WITH_LARGE_VOCAB)
    assert len(list(src.glob("*.safetensors"))) > 3  # a sharded source
    growth = Growth(2, variant="noisy_symmetric", seed=5)
    source = from_pretrained(AutoModelForCausalLM, src, trust_remote_code=False)
    assert next(source.parameters()).dtype == torch.bfloat16
    wide = clone(source, growth=growth).state_dict()
    for shard, expect_index in (("300KB", True), ("1GB", False)):  # several shards, then one file
        out = tmp_path / f"out-{shard}"
        result = stream_clone(src, out, growth, max_shard_size=shard)
        assert (out / INDEX_FILE).exists() == expect_index and (out / SINGLE_FILE).exists() != expect_index
        assert (len(result.shards) > 3) == expect_index
        for name in result.shards:
            with safe_open(str(out / name), framework="pt") as f:
                assert f.metadata() == {"format": "pt"}
        loaded = from_pretrained(AutoModelForCausalLM, out, trust_remote_code=False).state_dict()
        assert loaded.keys() == wide.keys()
        for name, t in wide.items():
            assert loaded[name].dtype == torch.bfloat16 and torch.equal(loaded[name].view(torch.int16),
                                                                        t.view(torch.int16)), name


def test_planned_header_matches_what_safetensors_writes(tmp_path):
    tensors = {"b": torch.arange(6, dtype=torch.int64).reshape(2, 3), "a": torch.ones(5, dtype=torch.bfloat16),
               "c": torch.zeros(3, 1, dtype=torch.float32)}
    header, offsets = safetensors_header([(k, tuple(t.shape), t.dtype) for k, t in tensors.items()])
    path = tmp_path / "x.safetensors"
    with path.open("wb") as f:
        f.write(header)
        for key in sorted(offsets, key=offsets.get):
            assert f.tell() == offsets[key]
            f.write(tensors[key].reshape(-1).view(torch.uint8).numpy().tobytes())
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["a", "b", "c"] and f.metadata() == {"format": "pt"}
        assert all(torch.equal(f.get_tensor(k), t) for k, t in tensors.items())
    assert offsets["b"] % 8 == 0 and offsets["c"] % 4 == 0
    assert offsets["b"] < offsets["c"] < offsets["a"]  # wider dtypes first: every tensor stays aligned


def test_shards_are_split_like_save_pretrained_a_bigger_tensor_alone():
    f32 = torch.float32
    entries = [("a", (10,), f32), ("b", (10,), f32), ("big", (100,), f32), ("c", (10,), f32)]
    groups = plan_shards(entries, 100)
    assert [[k for k, _, _ in g] for g in groups] == [["a", "b"], ["big"], ["c"]]
    assert len(plan_shards(entries, 10**6)) == 1


PEAK_SCRIPT = textwrap.dedent("""
    import json, re, resource, sys
    from hyperclone import Growth
    from hyperclone.io.stream import stream_clone
    src, warm, out = sys.argv[1:4]

    def hwm():
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    stream_clone(warm, out + "-warm", Growth(2), max_shard_size="100GB")  # imports, allocator warm-up
    try:  # reset the peak to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    base = hwm()
    r = stream_clone(src, out, Growth(2), max_shard_size="100GB")
    print(json.dumps({"base": base, "peak": hwm(), "reset": reset, "bytes": r.n_bytes, "shards": r.shards}))
""")


@pytest.mark.slow
def test_streaming_peak_memory_is_one_tensor_not_one_shard(tmp_path):
    """With shards larger than the whole output, peak RSS grows by less than the largest tensor + 64 MiB."""
    big = dict(hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=2,
               num_hidden_layers=10, vocab_size=16384, tie_word_embeddings=False)
    synthetic_llama(tmp_path / "src", shard_bytes=8_000_000, **big)
    synthetic_llama(tmp_path / "warm", **dict(big, num_hidden_layers=1, vocab_size=256))
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "src"), str(tmp_path / "warm"),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    m = json.loads(run.stdout.strip().splitlines()[-1])
    largest = 16384 * 512 * 4  # the wide embedding and head, fp32: 32 MiB
    growth = m["peak"] - m["base"]
    assert m["shards"] == [SINGLE_FILE] and m["bytes"] > 6 * largest  # one shard holding the whole output...
    bound = largest + 64 * 2**20  # ...yet memory holds about one tensor
    assert growth < bound, f"peak grew by {growth / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB, reset={m['reset']})"


def test_writer_takes_tensors_in_any_order_and_refuses_a_wrong_or_missing_one(tmp_path):
    import pytest

    from hyperclone.core.errors import HyperCloneError
    from hyperclone.io.shard_writer import ShardWriter

    tensors = {f"t{i}": torch.full((i + 1, 3), float(i), dtype=torch.bfloat16) for i in range(6)}
    entries = [(k, tuple(t.shape), t.dtype) for k, t in tensors.items()]
    writer = ShardWriter(tmp_path, entries, max_shard_size=40)
    for key in reversed(list(tensors)):
        writer.reserve(key)
        writer.add(key, tensors[key])
    names = writer.close()
    assert len(names) > 2 and json.loads((tmp_path / INDEX_FILE).read_text())["metadata"]["total_size"] == sum(
        t.numel() * 2 for t in tensors.values())
    for name in names:
        with safe_open(str(tmp_path / name), framework="pt") as f:
            assert all(torch.equal(f.get_tensor(k), tensors[k]) for k in f.keys())

    bad = ShardWriter(tmp_path / "bad", entries, max_shard_size=10**6)
    (tmp_path / "bad").mkdir()
    with pytest.raises(HyperCloneError, match="t0: grown to .* implies"):
        bad.add("t0", torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(HyperCloneError, match="not in the planned checkpoint"):
        bad.add("t9", tensors["t0"])
    bad.add("t0", tensors["t0"])
    with pytest.raises(HyperCloneError, match="was never written"):
        bad.close()
