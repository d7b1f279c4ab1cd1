"""Streaming clones: identical to the in-memory clone, bounded memory, atomic output."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from families import CASES, stored, synthetic_llama, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import hyperclone.io.checkpoint as checkpoint
import hyperclone.io.shard_writer as shard_writer
from hyperclone import Growth, clone
from hyperclone.io.checkpoint import parse_size
from hyperclone.cli.main import main
from hyperclone.core.clone import ClonePlan
from hyperclone.core.errors import HyperCloneError, SourceError
from hyperclone.io.stream import stream_clone
from hyperclone.core.verify import TOLERANCE
from hyperclone.io.verify_sampled import verify_streamed

BY_ID = {c[0]: c for c in CASES}


def _source(tmp_path, case_id, dtype=torch.float32, shard="6KB", layers=None):
    _, model_type, kwargs, _ = BY_ID[case_id]
    if layers is not None:
        kwargs = dict(kwargs, **({"n_layer": layers} if model_type == "gpt2" else {"num_hidden_layers": layers}))
    model = tiny_model(model_type, kwargs, dtype=dtype)
    path = tmp_path / f"src-{case_id}"
    model.save_pretrained(path, max_shard_size=shard)
    return path, model


@pytest.mark.parametrize("case_id", ["gpt2", "opt-proj-postln", "gpt_neox", "llama-tied", "gemma2", "qwen3", "phi3"])
def test_streamed_clone_is_bit_identical_to_the_in_memory_clone(tmp_path, case_id):
    src, model = _source(tmp_path, case_id)
    assert (src / checkpoint.INDEX_FILE).exists()  # a sharded source
    out = tmp_path / "out"
    result = stream_clone(src, out, Growth(2, 3, "noisy_symmetric", seed=11), max_shard_size="20KB")
    wide = clone(model, 2, 3, variant="noisy_symmetric", seed=11)
    wide.save_pretrained(tmp_path / "mem")
    streamed, saved = stored(out), stored(tmp_path / "mem")
    assert streamed.keys() == saved.keys()  # same stored names as save_pretrained (e.g. NeoX embed_out)
    for name, t in saved.items():
        assert torch.equal(streamed[name], t), name
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    assert result.n_params == wide.num_parameters() and len(result.shards) > 1


def test_sharded_output_has_bounded_shards_and_the_index_transformers_expects(tmp_path):
    src, model = _source(tmp_path, "llama-gqa")
    out = tmp_path / "out"
    result = stream_clone(src, out, Growth(2), max_shard_size="30KB")
    index = json.loads((out / checkpoint.INDEX_FILE).read_text())
    n = len(result.shards)
    assert result.shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert set(index["weight_map"].values()) == set(result.shards)
    assert index["metadata"]["total_size"] == result.n_bytes
    assert index["metadata"]["total_parameters"] == result.n_params
    biggest_tensor = max(t.numel() * t.element_size() for t in stored(out).values())
    for shard in result.shards:
        with safe_open(out / shard, framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            size = sum(f.get_tensor(k).numel() * 4 for k in f.keys())
            assert size <= max(30_000, biggest_tensor)
    assert not list(out.glob(".shard-*"))
    wide = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(ids).logits  # verify's float32 tolerance (eps x reductions) is relative to max |logit|
        atol = TOLERANCE[torch.float32] * float(reference.abs().max())
        torch.testing.assert_close(wide(ids).logits, reference, rtol=0, atol=atol)


def test_one_shard_is_written_as_model_safetensors(tmp_path):
    src, _ = _source(tmp_path, "llama-gqa")
    out = tmp_path / "out"
    result = stream_clone(src, out, Growth(2))
    assert result.shards == ["model.safetensors"] and not (out / checkpoint.INDEX_FILE).exists()


def test_bf16_source_stays_bf16_and_matches_the_in_memory_clone(tmp_path):
    src, model = _source(tmp_path, "llama-gqa", dtype=torch.bfloat16)
    out = tmp_path / "out"
    result = stream_clone(src, out, Growth(3, 2, "noisy_diagonal", seed=4))
    assert result.dtype == "bfloat16"
    wide = clone(model, 3, 2, variant="noisy_diagonal", seed=4)
    streamed = stored(out)
    for name, t in wide.state_dict().items():
        assert streamed[name].dtype == torch.bfloat16 and torch.equal(streamed[name], t), name
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_dtype_option_casts_like_loading_in_that_dtype(tmp_path):
    src, model = _source(tmp_path, "llama-tied")
    out = tmp_path / "out"
    stream_clone(src, out, Growth(2, variant="noisy_symmetric"), dtype="bfloat16")
    wide = clone(model.to(torch.bfloat16), 2, variant="noisy_symmetric")
    streamed = stored(out)
    for name, t in wide.state_dict().items():
        assert torch.equal(streamed[name], t), name


def test_tie_keep_streams_like_in_memory(tmp_path):
    src, model = _source(tmp_path, "llama-tied")
    out = tmp_path / "out"
    stream_clone(src, out, Growth(2, tie="keep"))
    wide = clone(model, 2, tie="keep")
    wide.save_pretrained(tmp_path / "mem")
    streamed, saved = stored(out), stored(tmp_path / "mem")
    assert streamed.keys() == saved.keys() and "lm_head.weight" not in streamed
    assert all(torch.equal(streamed[k], v) for k, v in saved.items())


def test_side_files_and_provenance(tmp_path):
    src, _ = _source(tmp_path, "llama-gqa")
    (src / "tokenizer.json").write_text("{}")
    (src / "special_tokens_map.json").write_text("{}")
    out = tmp_path / "out"
    stream_clone(src, out, Growth(2), source_name="my-src")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "special_tokens_map.json",
                 "hyperclone.json", "README.md"):
        assert (out / name).exists(), name
    record = json.loads((out / "hyperclone.json").read_text())
    assert record["source"] == "my-src" and record["mode"] == "streaming" and record["dtype"] == "float32"
    assert record["verification"]["method"] == "none" and record["equivalence"] is None
    assert "Verification: none" in (out / "README.md").read_text()


def test_verify_full_when_it_fits_else_sampled_layers(tmp_path, monkeypatch):
    src, _ = _source(tmp_path, "llama-gqa", layers=5)
    result = stream_clone(src, tmp_path / "full", Growth(2), verify=True, device="cpu")
    assert result.verification["method"] == "full" and result.report.passed
    assert len(result.report.layers) == 6

    import hyperclone.core.resources as res

    monkeypatch.setattr(res, "free_bytes", lambda device: 200_000)
    result = stream_clone(src, tmp_path / "sampled", Growth(2), verify=True, device="cpu", force=True)
    assert result.verification["method"] == "sampled layers" and result.verification["layers"] == [0, 2, 4]
    assert result.report.passed and len(result.report.layers) == 4
    record = json.loads((tmp_path / "sampled" / "hyperclone.json").read_text())
    assert record["verification"]["layers"] == [0, 2, 4] and record["equivalence"]["passed"] is True


def test_sampled_verification_catches_a_corrupted_layer(tmp_path):
    src, _ = _source(tmp_path, "llama-gqa", layers=5)
    out = tmp_path / "out"
    stream_clone(src, out, Growth(2))
    state = load_file(out / "model.safetensors")
    state["model.layers.4.mlp.down_proj.weight"][0, 0] += 1.0
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    from hyperclone.core.clone import make_plan
    from transformers import AutoConfig

    plan = make_plan(AutoConfig.from_pretrained(src), Growth(2))
    record, report = verify_streamed(src, out, plan, mode="sample", device="cpu")
    assert record["passed"] is False and not report.passed


def test_hub_style_keys_and_recomputed_buffers_are_mapped_like_from_pretrained(tmp_path):
    """openai-community/gpt2 stores keys without 'transformer.' and carries attn.bias buffers."""
    src, model = _source(tmp_path, "gpt2", shard="1GB")
    state = load_file(src / "model.safetensors")
    legacy = {k.removeprefix("transformer."): v for k, v in state.items()}
    legacy["h.0.attn.bias"] = torch.ones(1, 1, 4, 4)
    save_file(legacy, src / "model.safetensors", metadata={"format": "pt"})
    stream_clone(src, tmp_path / "out", Growth(2))
    wide = clone(model, 2)
    streamed = stored(tmp_path / "out")
    assert all(torch.equal(streamed[k], v) for k, v in wide.state_dict().items())


def test_unknown_and_missing_weights_are_refused_by_name(tmp_path):
    src, _ = _source(tmp_path, "llama-gqa", shard="1GB")
    state = load_file(src / "model.safetensors")
    save_file(dict(state, **{"model.mystery": torch.ones(2)}), src / "model.safetensors")
    with pytest.raises(SourceError, match="'model.mystery'"):
        stream_clone(src, tmp_path / "o1", Growth(2))
    state.pop("model.norm.weight")
    save_file(state, src / "model.safetensors")
    with pytest.raises(SourceError, match="lacks the weight 'model.norm.weight'"):
        stream_clone(src, tmp_path / "o2", Growth(2))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_disk_full_while_writing_leaves_nothing_at_out(tmp_path, monkeypatch):
    src, _ = _source(tmp_path, "llama-gqa")
    out = tmp_path / "out"
    real = shard_writer.write_at
    calls = []

    def fill_up(fd, data, offset):
        calls.append(offset)
        if len(calls) == 3:
            os.pwrite(fd, b"partial", offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(shard_writer, "write_at", fill_up)
    with pytest.raises(HyperCloneError, match="no space left .* nothing was written"):
        stream_clone(src, out, Growth(2), max_shard_size="20KB")
    assert len(calls) == 3 and not out.exists()  # the writer stopped at the first failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_interrupted_stream_leaves_nothing_at_out_and_keeps_an_old_one(tmp_path, monkeypatch, capsys):
    src, _ = _source(tmp_path, "llama-gqa")
    out = tmp_path / "out"
    out.mkdir()
    (out / "hyperclone.json").write_text("{}")  # an earlier output: only that may be replaced
    (out / "config.json").write_text("old")  # a file HyperClone writes (one it does not: test_output_ownership)
    real_grow = ClonePlan.grow
    seen = []

    def interrupt(self, name, t):
        seen.append(name)
        if len(seen) == 5:
            raise KeyboardInterrupt
        return real_grow(self, name, t)

    monkeypatch.setattr(ClonePlan, "grow", interrupt)
    assert main(["clone", str(src), str(out), "--overwrite", "--max-shard-size", "10KB"]) == 130
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "hyperclone.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "out"])
    assert "an unfinished clone leaves nothing at OUT" in capsys.readouterr().err


def test_cli_streams_by_default_and_keeps_the_in_memory_path(tmp_path, capsys):
    src, model = _source(tmp_path, "llama-tied")
    assert main(["clone", str(src), str(tmp_path / "s"), "--max-shard-size", "40KB", "--seed", "3",
                 "--variant", "noisy_symmetric"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("streaming") and "equivalence PASSED" in text  # verified by default
    assert main(["clone", str(src), str(tmp_path / "nv"), "--no-verify"]) == 0
    assert "verification: none" in capsys.readouterr().out
    assert main(["clone", str(src), str(tmp_path / "m"), "--in-memory", "--seed", "3",
                 "--variant", "noisy_symmetric"]) == 0
    assert "equivalence PASSED" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / "hyperclone.json").read_text()).get("mode") is None
    streamed, saved = stored(tmp_path / "s"), stored(tmp_path / "m")
    assert streamed.keys() == saved.keys() and all(torch.equal(streamed[k], v) for k, v in saved.items())


def test_cli_bad_shard_size_is_one_line(tmp_path, capsys):
    src, _ = _source(tmp_path, "llama-gqa")
    assert main(["clone", str(src), str(tmp_path / "o"), "--max-shard-size", "lots"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "max shard size must be a size such as 2GB" in line and not (tmp_path / "o").exists()


def test_cli_pickle_only_falls_back_to_memory_with_allow_pickle(tmp_path, capsys):
    _, model = _source(tmp_path, "llama-gqa")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    assert main(["clone", str(pickled), str(tmp_path / "o"), "--allow-pickle"]) == 0
    out = capsys.readouterr().out
    assert "cloning" in out and "equivalence PASSED" in out and not out.startswith("streaming")


def test_parse_size():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("500MB") == 500 * 10**6
    assert parse_size("1GiB") == 2**30 and parse_size(1234) == 1234 and parse_size("10kb") == 10_000
    for bad in ("", "2 parsecs", 0, -5, True):
        with pytest.raises(HyperCloneError):
            parse_size(bad)


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from hyperclone import Growth
    from hyperclone.io.stream import stream_clone
    src, warm, out, shard = sys.argv[1:5]
    stream_clone(warm, out + "-warm", Growth(2), max_shard_size=shard)  # imports and allocator warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    r = stream_clone(src, out, Growth(2), max_shard_size=shard)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak, "bytes": r.n_bytes, "shards": len(r.shards)}))
""")


@pytest.mark.slow
def test_peak_memory_of_streaming_is_bounded_by_one_shard(tmp_path):
    """Peak RSS grows by about one output shard, not by the model: measured in a fresh process."""
    big = dict(hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_key_value_heads=2,
               num_hidden_layers=10, vocab_size=4096, tie_word_embeddings=False)
    assert synthetic_llama(tmp_path / "src", shard_bytes=8_000_000, **big) > 3
    synthetic_llama(tmp_path / "warm", shard_bytes=8_000_000, **dict(big, num_hidden_layers=1))
    shard = 16 * 10**6
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "src"), str(tmp_path / "warm"),
                          str(tmp_path / "out"), str(shard)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    m = json.loads(run.stdout.strip().splitlines()[-1])
    largest = 4096 * 512 * 4  # the wide embedding / head
    bound = shard + 3 * largest + 48 * 2**20  # one shard, the tensor being grown and its temporaries, slack
    growth = m["peak"] - m["base"]
    assert m["bytes"] > 150 * 10**6 and m["shards"] >= 10  # the model is much larger than the bound...
    assert growth <= bound, f"peak grew by {growth / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_one_pass_symmetric_growth_equals_dividing_in_fp32_then_tiling(dtype):
    """The streaming hot path writes W/b straight into the grid; bit for bit the reference formula."""
    from hyperclone.core.grow import grow_matrix

    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(37, 53, generator=gen, dtype=torch.float64)
         * torch.exp2(torch.randint(-30, 10, (37, 53), generator=gen).double())).to(dtype)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    for a, b in ((2, 2), (3, 2), (2, 3), (1, 3)):
        expected = (w.to(work) / b).to(dtype).repeat(a, b)
        assert torch.equal(grow_matrix(w, a, b).view(torch.uint8), expected.view(torch.uint8)), (a, b)


def test_transposed_inputs_grow_to_the_same_values_in_transposed_layout():
    from hyperclone.core.grow import grow_matrix

    t = torch.randn(7, 5, dtype=torch.bfloat16)
    for a, b in ((2, 1), (3, 2), (2, 3)):
        grown = grow_matrix(t.T, a, b)
        assert grown.T.is_contiguous() and torch.equal(grown, grow_matrix(t.T.contiguous(), a, b))


def test_growing_on_an_explicit_device_gives_the_same_clone_and_the_record_says_where(tmp_path):
    src, _ = _source(tmp_path, "llama-gqa")
    growth = Growth(2, variant="noisy_symmetric", seed=3)
    default = stream_clone(src, tmp_path / "default", growth)
    on_cpu = stream_clone(src, tmp_path / "cpu", growth, device="cpu")
    assert default.grown_on == on_cpu.grown_on == "cpu"
    a, b = stored(tmp_path / "default"), stored(tmp_path / "cpu")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "cpu" / "hyperclone.json").read_text())["grown_on"] == "cpu"


def test_growing_on_a_gpu_without_room_for_the_largest_tensor_is_one_line_before_any_work(tmp_path, monkeypatch):
    import hyperclone.core.resources as res
    import hyperclone.io.stream as stream

    src, _ = _source(tmp_path, "llama-gqa")
    monkeypatch.setattr(stream, "check_device", lambda device: torch.device("cuda"))  # as on a machine with a GPU
    free = res.free_bytes
    monkeypatch.setattr(res, "free_bytes", lambda device: 1000 if torch.device(device).type == "cuda" else free(device))
    with pytest.raises(HyperCloneError, match=r"growing on cuda needs .* but only 1000 B is free; use --device cpu"):
        stream_clone(src, tmp_path / "out", Growth(2), device="cuda")
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == [src.name]
