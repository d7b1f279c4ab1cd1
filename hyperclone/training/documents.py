"""The documents a corpus is made of: the built-in corpus, local text files, Hugging Face datasets.

* ``builtin`` is the CPython standard library (``.py`` sources outside the test
  suites, IDLE and site-packages) plus the English reference text in
  ``pydoc_data.topics``: real text that nobody here wrote and that is present
  wherever Python is, so the project works offline.
* ``builtin-large`` adds the pure-Python sources of packages that
  ``requirements.txt`` pins (``LARGE_CORPUS_PACKAGES``), about 10x the text:
  offline too, and the same for the same installed versions (the versions are
  part of the corpus identity, so a different torch makes a different cache).
* A local corpus is a ``.txt`` file, a ``.jsonl`` file (one ``{"text": ...}``
  per line) or a directory of text files; ``hf:NAME[:CONFIG]`` streams the
  train split of a Hugging Face dataset.

``corpus_identity`` says cheaply what a corpus spec names (for the token cache's
key in ``data.py``) and how to read its documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from hyperclone.core.errors import DataError, MissingDataError, first_line

# Directories of the standard library that are not "the library": test suites
# (huge and repetitive), IDLE, third-party packages, byte code, the generated
# pydoc topics module (its text is added as English documents instead) and the
# build configuration directory (config-3.x-<platform>, machine specific).
EXCLUDED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "pydoc_data"}
)
TEXT_SUFFIXES = frozenset({".txt", ".text", ".md", ".rst", ".py", ".jsonl"})
DEFAULT_HF_MAX_CHARS = 20_000_000  # about the size of the built-in corpus, ×2

SPEC_HELP = "use 'builtin', 'builtin-large', a .txt/.jsonl file, a directory of text files, or hf:NAME[:CONFIG]"
# Installed packages whose .py sources ``builtin-large`` adds (all pinned by requirements.txt or pulled in by them).
LARGE_CORPUS_PACKAGES = ("torch", "transformers", "sympy", "pandas", "numpy", "networkx")
# transformers generates each modeling_*.py from a modular_*.py: keep one copy of that text.
EXCLUDED_FILE_PREFIXES = ("_sysconfigdata", "modular_")


# --------------------------------------------------------------------------- #
# Documents
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Document:
    """One unit of text; ``key`` names it stably and decides its split."""

    key: str
    text: str


def stdlib_root() -> Path:
    """Directory holding this interpreter's standard library sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def builtin_files(root: Path | None = None) -> list[Path]:
    """Sorted relative paths of the ``.py`` files under ``root`` (the standard library by default) in the corpus."""
    root = stdlib_root() if root is None else root
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in EXCLUDED_STDLIB_DIRS and not d.startswith("config-")
        )
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            # _sysconfigdata_* describes this machine's build: not portable text.
            if name.endswith(".py") and not name.startswith(EXCLUDED_FILE_PREFIXES):
                files.append(rel / name)
    return sorted(files, key=lambda p: p.as_posix())


def _source_documents(root: Path, files: list[Path], prefix: str = "") -> list[Document]:
    # A distribution might ship a stray non-UTF-8 byte; never fail on it.
    return [Document(f"{prefix}{p.as_posix()}", (root / p).read_text(encoding="utf-8", errors="replace"))
            for p in files]


def builtin_documents() -> list[Document]:
    """The built-in corpus: stdlib sources, then the pydoc topics, in a fixed order."""
    root = stdlib_root()
    docs = _source_documents(root, builtin_files(root))
    from pydoc_data.topics import topics

    docs += [Document(f"pydoc_data/topics/{name}", topics[name]) for name in sorted(topics)]
    return docs


def package_roots() -> dict[str, Path]:
    """The source directory of each installed ``LARGE_CORPUS_PACKAGES`` package (found without importing it)."""
    import importlib.util

    roots = {}
    for name in LARGE_CORPUS_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDataError(f"the builtin-large corpus needs the package '{name}' installed; "
                                   "run pip install -r requirements.txt, or use the builtin corpus")
        roots[name] = Path(list(spec.submodule_search_locations)[0])
    return roots


def builtin_large_documents() -> list[Document]:
    """The built-in corpus, then each package's sources (keyed ``site/<package>/<path>``), in a fixed order."""
    docs = builtin_documents()
    for name, root in package_roots().items():
        docs += _source_documents(root, builtin_files(root), f"site/{name}/")
    return docs


def _listing(root: Path, files: list[Path]) -> str:
    """A cheap fingerprint of a file tree: every path with its size (no file is read)."""
    return hashlib.sha1("\n".join(f"{p.as_posix()} {(root / p).stat().st_size}" for p in files).encode()).hexdigest()


def _builtin_large_identity() -> dict:
    from importlib.metadata import version

    roots = package_roots()
    return {"kind": "builtin-large", "python": sys.version.split()[0],
            "files": _listing(stdlib_root(), builtin_files()),
            "packages": {name: [version(name), _listing(root, builtin_files(root))] for name, root in roots.items()}}


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"corpus file is empty: {path}; give a file with some text in it")
    if b"\x00" in data[:8192]:
        raise DataError(f"corpus file looks binary (it contains NUL bytes): {path}; give UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"corpus file is not UTF-8 text (invalid byte at offset {e.start}): {path}; "
            "convert it to UTF-8 first"
        ) from None


def _jsonl_documents(path: Path, key_prefix: str) -> list[Document]:
    text = _read_text_file(path)
    docs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be an object "
                'with a "text" field'
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(
                f'{path}:{lineno}: no string "text" field; each line must be an object '
                'like {"text": "..."}'
            )
        if row["text"].strip():
            docs.append(Document(f"{key_prefix}:{lineno}", row["text"]))
    if not docs:
        raise DataError(f"corpus file has no non-empty \"text\" fields: {path}")
    return docs


def local_documents(path: Path) -> list[Document]:
    """Documents from a text file, a JSON-lines file, or a directory of text files."""
    if not path.exists():
        raise MissingDataError(f"corpus path not found: {path}; {SPEC_HELP}")
    if path.is_file():
        if path.suffix.lower() == ".jsonl":
            return _jsonl_documents(path, path.name)
        return [Document(path.name, _read_text_file(path))]

    files = sorted(
        (
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        kinds = ", ".join(sorted(TEXT_SUFFIXES))
        raise DataError(f"no text files ({kinds}) in directory {path}; add some or {SPEC_HELP}")
    docs: list[Document] = []
    for p in files:
        rel = p.relative_to(path).as_posix()
        if p.stat().st_size == 0:
            continue  # an empty file in a folder is harmless; all empty is not (below)
        if p.suffix.lower() == ".jsonl":
            docs += _jsonl_documents(p, rel)
        else:
            docs.append(Document(rel, _read_text_file(p)))
    if not any(d.text.strip() for d in docs):
        raise DataError(f"all text files in directory {path} are empty; add some text")
    return docs


def hf_documents(name: str, config: str | None, max_chars: int) -> list[Document]:
    """Stream up to ``max_chars`` of the ``train`` split of a Hugging Face dataset."""
    from hyperclone.io.hub import hub_reachable

    label = name if config is None else f"{name}:{config}"
    offline_help = "use --data builtin or a local .txt/.jsonl file instead"
    if not hub_reachable():
        raise DataError(
            f"could not reach the Hugging Face hub to stream dataset '{label}' (offline?); "
            f"{offline_help}"
        )
    try:
        import datasets

        stream = iter(datasets.load_dataset(name, config, split="train", streaming=True))
        first = next(stream)
    except StopIteration:
        raise DataError(f"Hugging Face dataset '{label}' has an empty train split") from None
    except Exception as e:  # network, auth, missing dataset: all surface here
        reason = first_line(e)
        raise DataError(f"could not load Hugging Face dataset '{label}' ({reason}); {offline_help}") from None
    if not isinstance(first.get("text"), str):
        fields = ", ".join(sorted(first)) or "none"
        raise DataError(f"Hugging Face dataset '{label}' has no 'text' field (fields: {fields})")
    docs, total = [], 0
    for i, row in enumerate(_chain_first(first, stream)):
        text = row["text"]
        if text.strip():
            docs.append(Document(f"{label}#{i}", text))
            total += len(text)
        if total >= max_chars:
            break
    return docs


def _chain_first(first: dict, rest: Iterable[dict]) -> Iterable[dict]:
    yield first
    yield from rest


def corpus_identity(spec: str, hf_max_chars: int) -> tuple[dict, Callable[[], list[Document]]]:
    """What the corpus is (for the cache key) and a thunk that reads its documents.

    Computing the identity must be cheap: it must not read every file, or a
    cache hit would cost as much as a miss.
    """
    if spec == "builtin":
        ident = {"kind": "builtin", "python": sys.version.split()[0], "files": _listing(stdlib_root(), builtin_files())}
        return ident, builtin_documents
    if spec == "builtin-large":
        return _builtin_large_identity(), builtin_large_documents
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 2:
            raise DataError(f"bad dataset spec '{spec}'; write hf:NAME or hf:NAME:CONFIG")
        name, config = parts[0], (parts[1] if len(parts) == 2 and parts[1] else None)
        ident = {"kind": "hf", "name": name, "config": config, "max_chars": hf_max_chars}
        return ident, lambda: hf_documents(name, config, hf_max_chars)
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise MissingDataError(f"corpus path not found: {spec}; {SPEC_HELP}")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = hashlib.sha1(
        "\n".join(f"{p} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files).encode()
    ).hexdigest()
    return {"kind": "local", "path": str(path), "files": stamp}, lambda: local_documents(path)
