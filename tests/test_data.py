"""Corpora: the built-in standard-library corpus, local files, caching, batches, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builtin_corpus import SEQ_LEN, builtin_corpus, cache_root, shipped_tokenizer

import hyperclone.training.data as data
from hyperclone.training.data import load_corpus, split_of, tokenizer_fingerprint
import hyperclone.training.documents as documents
from hyperclone.training.documents import builtin_documents, builtin_files, corpus_identity
from hyperclone.core.errors import DataError, HyperCloneError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty HYPERCLONE_CACHE."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def english(n_paragraphs: int) -> list[str]:
    """Real English paragraphs (the pydoc topics), present wherever Python is."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)][:n_paragraphs]


def error_message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, "errors are one line"
    assert isinstance(excinfo.value, HyperCloneError)
    return msg


# --------------------------------------------------------------------------- #
# The built-in corpus
# --------------------------------------------------------------------------- #
def test_builtin_file_list_is_sorted_deterministic_and_excludes_tests():
    first, second = builtin_files(), builtin_files()
    assert first == second
    names = [p.as_posix() for p in first]
    assert names == sorted(names)
    assert {"os.py", "json/decoder.py", "asyncio/tasks.py"} <= set(names)
    excluded = {"test", "tests", "idlelib", "site-packages", "__pycache__"}
    assert not any(set(p.parts) & excluded for p in first)
    assert not any(n.startswith("lib2to3/tests") for n in names)


def test_builtin_documents_add_pydoc_topics_in_fixed_order():
    docs = builtin_documents()
    keys = [d.key for d in docs]
    assert keys == [d.key for d in builtin_documents()]
    topic_keys = [k for k in keys if k.startswith("pydoc_data/topics/")]
    assert len(topic_keys) > 50 and topic_keys == sorted(topic_keys)
    assert "pydoc_data/topics/with" in topic_keys


def test_the_large_builtin_corpus_adds_each_package_once_and_names_its_versions():
    ident, read = corpus_identity("builtin-large", 0)
    again, _ = corpus_identity("builtin-large", 0)
    assert ident == again and ident["kind"] == "builtin-large"
    assert ident["files"] == corpus_identity("builtin", 0)[0]["files"]  # the small corpus is part of it
    assert set(ident["packages"]) == set(documents.LARGE_CORPUS_PACKAGES)
    from importlib.metadata import version

    assert all(ident["packages"][name][0] == version(name) for name in documents.LARGE_CORPUS_PACKAGES)
    for name, root in documents.package_roots().items():
        files = builtin_files(root)
        assert files == sorted(files, key=lambda p: p.as_posix())
        assert not any(set(p.parts) & {"test", "tests", "__pycache__"} for p in files)
        assert not any(p.name.startswith("modular_") for p in files)  # transformers' generated duplicates


def test_the_large_builtin_corpus_is_about_ten_times_the_small_one():
    small = sum(len(d.text) for d in builtin_documents())
    large = documents.builtin_large_documents()
    keys = [d.key for d in large]
    assert len(keys) == len(set(keys)) and all(k.startswith("site/") for k in keys[len(builtin_documents()):])
    assert sum(len(d.text) for d in large) >= 10 * small


def test_the_large_builtin_corpus_names_a_missing_package(monkeypatch):
    monkeypatch.setattr(documents, "LARGE_CORPUS_PACKAGES", ("numpy", "no_such_package_hc"))
    with pytest.raises(DataError) as e:
        corpus_identity("builtin-large", 0)
    assert "no_such_package_hc" in error_message(e) and "builtin corpus" in error_message(e)


def test_split_is_a_stable_hash_of_the_path():
    # SHA-1 based, so these hold on every machine and Python version.
    assert split_of("http/client.py") == "validation"
    assert split_of("unittest/case.py") == "validation"
    assert split_of("os.py") == "train"
    assert split_of("json/decoder.py") == "train"
    keys = [p.as_posix() for p in builtin_files()]
    share = sum(split_of(k) == "validation" for k in keys) / len(keys)
    assert 0.02 < share < 0.10


def test_builtin_corpus_token_streams():
    corpus = builtin_corpus()
    meta = corpus.meta
    assert meta["split_method"] == "hash"
    assert corpus.num_tokens("train") > 2_000_000
    assert 50_000 < corpus.num_tokens("validation") < 0.1 * corpus.num_tokens("train")
    assert corpus.train.dtype == np.uint16  # vocabulary 2048 fits
    # documents are separated by end-of-text: one per document in each split
    assert int((np.asarray(corpus.validation) == corpus.eot_id).sum()) == meta["documents"]["validation"]
    assert corpus.validation[-1] == corpus.eot_id
    text = shipped_tokenizer().decode(np.asarray(corpus.validation[:2000]).tolist())
    assert "def " in text or "class " in text


def test_second_load_is_served_from_the_cache(monkeypatch):
    first = builtin_corpus()  # tokenised (or already cached) in the session cache
    monkeypatch.setenv(data.CACHE_ENV, cache_root())
    calls = []
    monkeypatch.setattr(data, "encode_documents", lambda *a, **k: calls.append(1) or [])
    again = load_corpus("builtin", shipped_tokenizer(), SEQ_LEN)
    assert again.from_cache and not calls
    assert isinstance(again.train, np.memmap)
    assert np.array_equal(again.train, first.train) and np.array_equal(again.validation, first.validation)
    assert again.meta["documents"] == first.meta["documents"]


def test_cache_is_keyed_by_the_tokenizer(cache, tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(english(40)))
    tok = shipped_tokenizer()
    first = load_corpus(tmp_path / "a.txt", tok, 64)
    assert not first.from_cache
    assert load_corpus(tmp_path / "a.txt", tok, 64).from_cache

    import tokenizers

    other = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
    other.add_tokens(["hyperclone"])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    third = load_corpus(tmp_path / "a.txt", other, 64)
    assert not third.from_cache and third.path != first.path


def test_cache_entry_moves_when_the_file_changes(cache, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(english(40)))
    first = load_corpus(path, shipped_tokenizer(), 64)
    path.write_text("\n\n".join(english(41)))
    second = load_corpus(path, shipped_tokenizer(), 64)
    assert not second.from_cache and second.num_tokens("train") > first.num_tokens("train")


# --------------------------------------------------------------------------- #
# Batches and evaluation windows
# --------------------------------------------------------------------------- #
def test_get_batch_is_reproducible_by_step():
    corpus = builtin_corpus()
    x1, y1 = corpus.get_batch("train", 4, step=7)
    x2, y2 = corpus.get_batch("train", 4, step=7)
    x3, _ = corpus.get_batch("train", 4, step=8)
    assert x1.shape == y1.shape == (4, SEQ_LEN) and x1.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # targets are the inputs shifted by one
    assert not torch.equal(x1, corpus.get_batch("train", 4, step=7, seed=1)[0])
    xv, _ = corpus.get_batch("validation", 2, 32, step=0)
    assert xv.shape == (2, 32) and int(xv.max()) < corpus.vocab_size


def test_get_batch_with_a_generator():
    corpus = builtin_corpus()
    a = corpus.get_batch("train", 3, generator=torch.Generator().manual_seed(5))[0]
    b = corpus.get_batch("train", 3, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="step="):
        corpus.get_batch("train", 3)


def test_validation_windows_are_fixed_and_span_the_split():
    corpus = builtin_corpus()
    w = corpus.validation_windows(64)
    assert w.shape == (64, SEQ_LEN + 1)
    assert torch.equal(w, corpus.validation_windows(64))
    val = torch.from_numpy(np.asarray(corpus.validation, dtype=np.int64))
    assert torch.equal(w[0], val[: SEQ_LEN + 1])  # first window starts the split ...
    last = (corpus.num_windows() - 1) * SEQ_LEN
    assert torch.equal(w[-1], val[last : last + SEQ_LEN + 1])  # ... the last one ends it
    assert corpus.validation_windows().shape[0] == corpus.num_windows()


# --------------------------------------------------------------------------- #
# Local corpora
# --------------------------------------------------------------------------- #
def test_local_text_file_holds_out_its_tail(cache, tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(english(60)), encoding="utf-8")
    corpus = load_corpus(path, shipped_tokenizer(), 128)
    assert corpus.meta["split_method"] == "tail"
    total = corpus.num_tokens("train") + corpus.num_tokens("validation")
    assert corpus.num_tokens("validation") == pytest.approx(0.05 * total, abs=2)
    assert corpus.get_batch("validation", 2, step=0)[0].shape == (2, 128)


def test_local_directory_and_jsonl(cache, tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i, text in enumerate(english(70)):
        (folder / ("sub" if i % 2 else "") / f"doc{i:02d}.md").write_text(text)
    (folder / "picture.png").write_bytes(b"\x89PNG\x00\x00")  # not a text suffix: ignored
    (folder / ".hidden.txt").write_text("ignored")
    corpus = load_corpus(folder, shipped_tokenizer(), 64)
    assert corpus.meta["documents"]["train"] + corpus.meta["documents"]["validation"] == 70

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(english(70))) + "\n\n")
    by_line = load_corpus(rows, shipped_tokenizer(), 64)
    assert by_line.meta["documents"]["train"] + by_line.meta["documents"]["validation"] == 70
    assert not by_line.from_cache and load_corpus(rows, shipped_tokenizer(), 64).from_cache


def test_no_cache_leaves_nothing_behind(cache, tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(english(60)))
    corpus = load_corpus(path, shipped_tokenizer(), 64, cache=False)
    assert not corpus.from_cache and corpus.path is None and corpus.num_tokens("train") > 64
    assert not cache.exists()


# --------------------------------------------------------------------------- #
# Errors: one line, saying what was wrong and what to do
# --------------------------------------------------------------------------- #
def test_missing_path(cache, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_corpus(tmp_path / "nope.txt", shipped_tokenizer(), 64)
    msg = error_message(e)
    assert "not found" in msg and "nope.txt" in msg and "builtin" in msg


def test_empty_file(cache, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "empty.txt", shipped_tokenizer(), 64)
    assert "empty" in error_message(e)


def test_binary_file(cache, tmp_path):
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "blob.txt", shipped_tokenizer(), 64)
    assert "binary" in error_message(e)


def test_non_utf8_file(cache, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 100)
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "latin1.txt", shipped_tokenizer(), 64)
    msg = error_message(e)
    assert "not UTF-8" in msg and "offset 3" in msg and "convert" in msg


def test_bad_jsonl(cache, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "bad.jsonl", shipped_tokenizer(), 64)
    assert "bad.jsonl:2" in error_message(e) and "not valid JSON" in str(e.value)

    (tmp_path / "notext.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "notext.jsonl", shipped_tokenizer(), 64)
    assert "notext.jsonl:1" in error_message(e) and '"text"' in str(e.value)


def test_directory_without_text(cache, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "images", shipped_tokenizer(), 64)
    assert "no text files" in error_message(e)


def test_corpus_shorter_than_one_window(cache, tmp_path):
    (tmp_path / "short.txt").write_text(english(1)[0][:3000])  # ~1000 tokens: 50 held out
    with pytest.raises(DataError) as e:
        load_corpus(tmp_path / "short.txt", shipped_tokenizer(), 256)
    msg = error_message(e)
    assert "too short" in msg and "validation split" in msg and "257" in msg and "lower seq_len" in msg


def test_builtin_corpus_longer_than_a_window_still_rejects_huge_seq_len(monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, cache_root())
    builtin_corpus()
    with pytest.raises(DataError) as e:
        load_corpus("builtin", shipped_tokenizer(), 10_000_000)
    assert "too short" in error_message(e)


def test_hf_dataset_offline(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_corpus("hf:roneneldan/TinyStories", shipped_tokenizer(), 64)
    msg = error_message(e)
    assert "could not reach the Hugging Face hub" in msg and "roneneldan/TinyStories" in msg
    assert "builtin" in msg


def test_bad_hf_spec(cache):
    with pytest.raises(DataError) as e:
        load_corpus("hf:", shipped_tokenizer(), 64)
    assert "hf:NAME" in error_message(e)
