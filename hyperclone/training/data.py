"""Corpora for training and evaluation: token streams, their cache, and batches.

A corpus (its documents come from ``documents.py``: built-in, local text, a
Hugging Face dataset) becomes two 1-D token streams (``train`` and
``validation``) that hand out fixed-shape batches.

* The split is decided per document by a hash of its name (its path relative to
  the corpus root), so it is the same on every machine and does not move when
  files are added elsewhere.
* Token streams are computed once and cached as ``numpy.memmap`` files under
  ``$HYPERCLONE_CACHE`` (default ``~/.cache/hyperclone``), keyed by the
  tokenizer's hash, the Python version and the corpus identity; a second load
  only maps the files (``Corpus.from_cache`` tells which happened).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hyperclone.io.atomic import atomic_dir
from hyperclone.training.documents import DEFAULT_HF_MAX_CHARS, SPEC_HELP, Document, corpus_identity
from hyperclone.core.errors import DataError

Split = Literal["train", "validation"]

CACHE_ENV = "HYPERCLONE_CACHE"
VALIDATION_PERCENT = 5  # share of documents (by hash) that go to validation
FORMAT_VERSION = 2  # bump when the cached layout or the split rule changes
EOT_TOKEN = "<|endoftext|>"


def cache_dir() -> Path:
    """Root of hyperclone's cache: ``$HYPERCLONE_CACHE`` or ``~/.cache/hyperclone``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hyperclone"


def split_of(key: str, validation_percent: int = VALIDATION_PERCENT) -> Split:
    """Assign a document to a split from a SHA-1 of its key (stable across machines)."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "validation" if bucket < validation_percent else "train"


# --------------------------------------------------------------------------- #
# Tokenisation and cache
# --------------------------------------------------------------------------- #
def _backend(tokenizer: Any) -> Any | None:
    """The Rust ``tokenizers.Tokenizer`` behind a tokenizer, if it has one."""
    import tokenizers

    if isinstance(tokenizer, tokenizers.Tokenizer):
        return tokenizer
    return getattr(tokenizer, "backend_tokenizer", None)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash that changes whenever the tokenizer would produce different ids."""
    backend = _backend(tokenizer)
    if backend is not None:
        blob = backend.to_str()
    else:  # a slow (pure Python) tokenizer: its class and vocabulary define it
        blob = type(tokenizer).__name__ + json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def _vocab_size(tokenizer: Any) -> int:
    backend = _backend(tokenizer)
    if backend is not None:
        return backend.get_vocab_size(with_added_tokens=True)
    return len(tokenizer)


def _eot_id(tokenizer: Any) -> int:
    """The id that separates documents: end-of-text (or, failing that, BOS)."""
    import tokenizers

    if isinstance(tokenizer, tokenizers.Tokenizer):
        tid = tokenizer.token_to_id(EOT_TOKEN)
    else:
        tid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if tid is None:
        raise DataError(
            "tokenizer has no end-of-text (eos) or bos token to separate documents; "
            "set tokenizer.eos_token first"
        )
    return int(tid)


def encode_documents(tokenizer: Any, texts: list[str], batch_size: int = 256) -> list[list[int]]:
    """Token ids of each text, without special tokens; batched in Rust when possible."""
    backend = _backend(tokenizer)
    out: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        if backend is not None:
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            out += [e.ids for e in encode(chunk, add_special_tokens=False)]
        else:
            out += tokenizer(chunk, add_special_tokens=False)["input_ids"]
    return out


def _tokenize_to_cache(docs: list[Document], tokenizer: Any, target: Path, meta: dict) -> None:
    """Tokenise ``docs``, split them, and write ``train.bin``/``validation.bin``/``meta.json``."""
    eot = _eot_id(tokenizer)
    t0 = time.perf_counter()
    ids = encode_documents(tokenizer, [d.text for d in docs])
    seconds = time.perf_counter() - t0
    dtype = np.uint16 if _vocab_size(tokenizer) <= 2**16 else np.uint32

    def stream(pieces: list[list[int]]) -> np.ndarray:
        # each document is followed by end-of-text, so the model learns where texts stop
        arr = np.empty(sum(len(p) + 1 for p in pieces), dtype=dtype)
        pos = 0
        for p in pieces:
            arr[pos : pos + len(p)] = p
            arr[pos + len(p)] = eot
            pos += len(p) + 1
        return arr

    is_val = [split_of(d.key) == "validation" for d in docs]
    train = stream([p for p, v in zip(ids, is_val) if not v])
    validation = stream([p for p, v in zip(ids, is_val) if v])
    method = "hash"
    documents = {"train": is_val.count(False), "validation": is_val.count(True)}
    # Too few documents for a per-document split (one big .txt, a handful of
    # files): hold out the last 5% of the document-ordered stream instead.
    if len(validation) < 0.02 * (len(train) + len(validation)) or len(train) == 0:
        whole = stream(ids)
        cut = len(whole) - max(1, len(whole) * VALIDATION_PERCENT // 100)
        train, validation, method = whole[:cut], whole[cut:], "tail"
        # a document cut in two counts where it ends
        documents = {"train": int((train == eot).sum()), "validation": int((validation == eot).sum())}

    meta.update(
        dtype=np.dtype(dtype).name,
        eot_id=eot,
        split_method=method,
        documents=documents,
        tokens={"train": int(len(train)), "validation": int(len(validation))},
        chars=sum(len(d.text) for d in docs),
        tokenize_seconds=round(seconds, 3),
    )
    # Readers never see a half-written entry; when another process finished the same entry first, it is kept.
    with atomic_dir(target) as tmp:
        train.tofile(tmp / "train.bin")
        validation.tofile(tmp / "validation.bin")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# --------------------------------------------------------------------------- #
# Corpus
# --------------------------------------------------------------------------- #
@dataclass
class Corpus:
    """Two token streams plus the batching a training loop needs.

    ``train``/``validation`` are read-only 1-D integer arrays (memmaps when
    cached). ``from_cache`` is True when nothing was tokenised by this load.
    """

    spec: str
    seq_len: int
    train: np.ndarray
    validation: np.ndarray
    eot_id: int
    vocab_size: int
    from_cache: bool
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def split(self, name: Split) -> np.ndarray:
        """The token stream of ``name`` (``"train"`` or ``"validation"``)."""
        if name not in ("train", "validation"):
            raise DataError(f"unknown split '{name}'; use 'train' or 'validation'")
        return self.train if name == "train" else self.validation

    def num_tokens(self, name: Split) -> int:
        return int(len(self.split(name)))

    def get_batch(
        self,
        split: Split,
        batch_size: int,
        seq_len: int | None = None,
        *,
        step: int | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows ``(x, y)`` of shape ``[batch_size, seq_len]``, y shifted by one.

        Deterministic: with ``step`` the windows depend only on (seed, split,
        step), so a run resumed at step k sees the same data as an unbroken
        one; with ``generator`` they follow that torch generator.
        """
        seq_len = self.seq_len if seq_len is None else seq_len
        data = self.split(split)
        high = len(data) - seq_len  # last valid start + 1 (x needs seq_len, y one more)
        if high < 1:
            raise DataError(f"{split} split has {len(data)} tokens; need at least {seq_len + 1}")
        if generator is not None:
            starts = torch.randint(0, high, (batch_size,), generator=generator).numpy()
        else:
            if step is None:
                raise ValueError("get_batch needs step= (reproducible) or generator=")
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, step])
            starts = rng.integers(0, high, size=batch_size)
        rows = np.stack([np.asarray(data[s : s + seq_len + 1], dtype=np.int64) for s in starts])
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def num_windows(self, split: Split = "validation", seq_len: int | None = None) -> int:
        """How many non-overlapping windows of ``seq_len`` (+1 target) fit in a split."""
        seq_len = self.seq_len if seq_len is None else seq_len
        return max(0, (len(self.split(split)) - 1) // seq_len)

    def windows(
        self, split: Split = "validation", n: int | None = None, seq_len: int | None = None
    ) -> torch.Tensor:
        """A fixed set of windows ``[n, seq_len + 1]`` for evaluation.

        The split is cut into non-overlapping windows; ``n`` of them are taken
        evenly spaced across it (all when ``n`` is None), so a small ``n``
        still covers every part of the split and every caller gets the same set.
        """
        seq_len = self.seq_len if seq_len is None else seq_len
        data = self.split(split)
        total = self.num_windows(split, seq_len)
        if total == 0:
            raise DataError(f"{split} split has {len(data)} tokens; need at least {seq_len + 1}")
        idx = np.arange(total) if n is None or n >= total else np.linspace(0, total - 1, n).round().astype(int)
        rows = np.stack([np.asarray(data[i * seq_len : i * seq_len + seq_len + 1], dtype=np.int64) for i in idx])
        return torch.from_numpy(rows)

    def validation_windows(self, n: int | None = None, seq_len: int | None = None) -> torch.Tensor:
        """``windows("validation", n, seq_len)``: the fixed evaluation set."""
        return self.windows("validation", n, seq_len)


def load_corpus(
    spec: str | os.PathLike,
    tokenizer: Any,
    seq_len: int = 256,
    *,
    cache: bool = True,
    hf_max_chars: int = DEFAULT_HF_MAX_CHARS,
) -> Corpus:
    """Load (tokenising once, then from cache) the corpus named by ``spec``.

    ``spec``: ``"builtin"``, ``"builtin-large"`` (about 10x more), a ``.txt``/``.jsonl`` file (field ``text``), a
    directory of text files, or ``hf:NAME[:CONFIG]`` (streamed, first
    ``hf_max_chars`` characters). ``tokenizer``: a transformers tokenizer or a
    ``tokenizers.Tokenizer``. Each split must hold at least one training window
    (``seq_len + 1`` tokens); otherwise a one-line ``DataError`` says so.
    """
    spec = str(spec)
    if seq_len < 1:
        raise DataError(f"seq_len must be a positive number of tokens, got {seq_len}")
    ident, read_documents = corpus_identity(spec, hf_max_chars)
    key_src, key, entry = _cache_key(ident, tokenizer)
    from_cache = False
    if cache:
        target = cache_dir() / "corpus" / entry
        from_cache = (target / "meta.json").exists()
    else:
        target = Path(tempfile.mkdtemp(prefix="hyperclone-corpus-")) / "corpus"
    if not from_cache:
        docs = read_documents()
        if not docs or not any(d.text.strip() for d in docs):
            raise DataError(f"corpus '{spec}' contains no text; {SPEC_HELP}")
        _tokenize_to_cache(docs, tokenizer, target, dict(key_src, spec=spec, key=key))
    meta = json.loads((target / "meta.json").read_text())
    train, validation = _open_streams(target, meta)
    if not cache:  # keep the streams in memory and leave nothing on disk
        train, validation = np.array(train), np.array(validation)
        shutil.rmtree(target.parent, ignore_errors=True)
        target = None
    corpus = Corpus(spec=spec, seq_len=seq_len, train=train, validation=validation, eot_id=int(meta["eot_id"]),
                    vocab_size=_vocab_size(tokenizer), from_cache=from_cache, meta=meta, path=target)
    _check_long_enough(corpus)
    return corpus


def _cache_key(ident: dict, tokenizer: Any) -> tuple[dict, str, str]:
    """What the cached streams depend on, its hash, and the name of their cache entry (``SLUG-HASH``)."""
    key_src = {"format": FORMAT_VERSION, "corpus": ident, "tokenizer": tokenizer_fingerprint(tokenizer),
               "validation_percent": VALIDATION_PERCENT}
    key = hashlib.sha1(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    slug = ident["kind"] if ident["kind"] != "local" else "local-" + Path(ident["path"]).name
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in slug)[:40]
    return key_src, key, f"{slug}-{key}"


def _open_streams(target: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The train and validation streams of a cache entry, memory-mapped read-only."""
    dtype = np.dtype(meta["dtype"])

    def open_split(name: str) -> np.ndarray:
        n = meta["tokens"][name]
        if n == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(target / f"{name}.bin", dtype=dtype, mode="r", shape=(n,))

    return open_split("train"), open_split("validation")


def _check_long_enough(corpus: Corpus) -> None:
    """Each split must hold one training window (``seq_len + 1`` tokens)."""
    need = corpus.seq_len + 1
    for name in ("train", "validation"):
        have = corpus.num_tokens(name)
        if have < need:
            total = corpus.num_tokens("train") + corpus.num_tokens("validation")
            raise DataError(
                f"corpus '{corpus.spec}' is too short: its {name} split has {have} tokens but one "
                f"training window needs {need} (seq_len + 1; {total} tokens in all); "
                "add more text or lower seq_len"
            )
