"""Corpora: load documents, tokenize them, and cut the token stream into fixed-length chunks.

A chunk holds content tokens only; BOS is prepended at forward time and its
activations are dropped. Chunk ``i`` is identified by its row number, which is
how the activation index and the sampler refer to contexts.

The embedded default corpus is the Python standard library of the running
interpreter (source files, with their docstrings, plus ``pydoc_data/topics.py``,
which carries the language reference text). It ships with every Python
install, so nothing is fetched; it is distributed under the PSF License
Version 2 (``LICENSE.txt`` in the same directory).
"""

import hashlib
import json
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import MonoscopeError

DEFAULT_CORPUS = "python-stdlib"


@dataclass(frozen=True)
class Document:
    """One document of a corpus: where it came from and its text."""

    source: str
    text: str


def stdlib_documents() -> Iterator[Document]:
    """Yield the standard-library source files in a fixed, well-mixed order.

    Files are ordered by a hash of their relative path, so any prefix of the
    stream mixes many modules (code and documentation) instead of one package.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [path for path in root.rglob("*.py") if "site-packages" not in path.parts and "dist-packages" not in path.parts]
    relative = sorted(str(path.relative_to(root)) for path in files)
    relative.sort(key=lambda name: hashlib.sha1(name.encode()).hexdigest())
    for name in relative:
        text = (root / name).read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield Document(source=f"stdlib/{name}", text=text)


def file_documents(path: Path, text_field: str = "text") -> Iterator[Document]:
    """Yield documents from a .txt, .jsonl or .parquet file, or every such file in a directory."""
    if not path.exists():
        raise MonoscopeError(f"corpus path {str(path)!r} does not exist", "check the path or use the default corpus")
    if path.is_dir():
        children = sorted(p for p in path.rglob("*") if p.suffix in {".txt", ".md", ".jsonl", ".parquet"})
        if not children:
            raise MonoscopeError(f"corpus directory {str(path)!r} has no .txt/.md/.jsonl/.parquet files", "point at a corpus file")
        for child in children:
            yield from file_documents(child, text_field)
        return
    if path.suffix in {".txt", ".md"}:
        yield Document(source=str(path), text=path.read_text(encoding="utf-8", errors="replace"))
    elif path.suffix == ".jsonl":
        import jsonlines

        with jsonlines.open(path) as reader:
            for number, record in enumerate(reader):
                yield Document(source=f"{path}:{number}", text=_text_of(record, text_field, path))
    elif path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if text_field not in frame.columns:
            raise MonoscopeError(f"parquet corpus {str(path)!r} has no column {text_field!r}", "pass --text-field")
        for number, text in enumerate(frame[text_field].astype(str)):
            yield Document(source=f"{path}:{number}", text=text)
    else:
        raise MonoscopeError(f"unsupported corpus file type {path.suffix!r}", "use .txt, .md, .jsonl or .parquet")


def _text_of(record: Any, text_field: str, path: Path) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and text_field in record:
        return str(record[text_field])
    raise MonoscopeError(f"a JSON Lines record in {str(path)!r} has no field {text_field!r}", "pass --text-field")


def hf_documents(spec: str, text_field: str = "text") -> Iterator[Document]:
    """Yield documents from a Hugging Face dataset ``hf:NAME[:CONFIG][@SPLIT]`` (streamed; needs a hub)."""
    try:
        import datasets
    except ImportError as exc:
        raise MonoscopeError("HF datasets corpora need the 'datasets' package", "pip install datasets") from exc
    body = spec.removeprefix("hf:")
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    for number, record in enumerate(stream):
        yield Document(source=f"{spec}:{number}", text=_text_of(record, text_field, Path(spec)))


def corpus_documents(spec: str = DEFAULT_CORPUS, text_field: str = "text") -> Iterator[Document]:
    """Yield the documents of a corpus spec: "python-stdlib", "hf:NAME…", or a file/directory path."""
    if spec == DEFAULT_CORPUS:
        return stdlib_documents()
    if spec.startswith("hf:"):
        return hf_documents(spec, text_field)
    return file_documents(Path(spec), text_field)


def chunk_documents(documents: Iterable[Document], tokenizer: Any, context_length: int, max_tokens: int | None = None) -> np.ndarray:
    """Return int32 token chunks [n_chunks, context_length] cut from the concatenated documents.

    Documents are tokenized without special tokens and joined with the EOS
    token (when the tokenizer has one); the trailing partial chunk is dropped,
    so every chunk is full and no position is padding.
    """
    if context_length < 2:
        raise MonoscopeError(f"context length {context_length} is too short", "use a context length of at least 2")
    separator = [tokenizer.eos_token_id] if getattr(tokenizer, "eos_token_id", None) is not None else []
    budget = None if max_tokens is None else (max_tokens // context_length) * context_length
    stream: list[int] = []
    for document in documents:
        ids = tokenizer(document.text, add_special_tokens=False)["input_ids"]
        stream.extend(ids)
        stream.extend(separator)
        if budget is not None and len(stream) >= budget:
            break
    n_chunks = len(stream) // context_length
    if budget is not None:
        n_chunks = min(n_chunks, budget // context_length)
    if n_chunks == 0:
        raise MonoscopeError(
            f"the corpus yields no full chunk of {context_length} tokens",
            "give a corpus with more text or a shorter context length",
        )
    return np.asarray(stream[: n_chunks * context_length], dtype=np.int32).reshape(n_chunks, context_length)


def save_chunks(path: Path, chunks: np.ndarray, description: dict[str, Any]) -> None:
    """Write the chunk array and a JSON description next to it, atomically."""
    import io

    from harness.storage import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, chunks)
    atomic_write_bytes(path.with_suffix(".npy"), buffer.getvalue())
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(description, indent=2).encode())


def load_chunks(path: Path) -> np.ndarray:
    """Return the chunk array saved by ``save_chunks``."""
    file = path.with_suffix(".npy")
    if not file.exists():
        raise MonoscopeError(f"no tokenized corpus at {str(file)!r}", "run 'monoscope index' or 'monoscope demo' first")
    return np.load(file)


def check_corpus_spec(corpus: str) -> None:
    """Fail early (before any model is loaded) on a corpus path that cannot yield text."""
    if corpus == "python-stdlib" or corpus.startswith("hf:"):
        return
    path = Path(corpus)
    if not path.exists():
        raise MonoscopeError(f"corpus {corpus!r} not found", "give an existing file or directory, hf:NAME, or python-stdlib")
    if path.is_file():
        try:
            with path.open("rb") as handle:
                if not handle.read(1 << 16).strip():
                    raise MonoscopeError(f"corpus file {corpus!r} is empty", "give a corpus with text in it")
        except OSError as exc:
            raise MonoscopeError(f"corpus file {corpus!r} cannot be read ({exc.strerror})", "check its permissions") from exc


def check_corpus_reuse(path: Path, settings: dict[str, Any]) -> None:
    """Refuse, before any model loads, a stored corpus (``path`` + .json) made with other ``settings``.

    ``settings`` are the values the corpus depends on (source, text field, model, context length,
    tokens asked for); a corpus described by an older version without a key is checked on what it has:
    its chunk length and, for the tokens asked for, its token count.
    """
    description_path = path.with_suffix(".json")
    if not description_path.exists():
        return
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MonoscopeError(
            f"{str(description_path)!r} is corrupt ({exc})", "delete the run directory's corpus.* files to re-tokenize"
        ) from exc
    for key, wanted in settings.items():
        stored = description.get(key)
        if key == "requested_tokens" and stored is None and "n_tokens" in description:  # described before the key existed
            whole_chunks = wanted // settings["context_length"] * settings["context_length"]
            stored = wanted if description["n_tokens"] == whole_chunks else f"{description['n_tokens']} tokens"
        if stored is not None and stored != wanted:
            raise MonoscopeError(
                f"{str(path.parent)!r} holds a corpus made with {key} {stored!r}, not {wanted!r}",
                "use a new run directory, or the settings that run was built with",
            )


def fingerprint(chunks: np.ndarray) -> str:
    """Return a short content hash of a chunk array (ties indexes to the corpus they came from)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(chunks).tobytes()).hexdigest()[:16]
