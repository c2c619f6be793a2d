"""Corpus loaders and chunking."""

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import MonoscopeError
from harness.subject.corpus import DEFAULT_CORPUS, chunk_documents, corpus_documents, stdlib_documents


def test_text_jsonl_and_parquet_loaders(tmp_path: Path, toy_tokenizer):
    (tmp_path / "a.txt").write_text("one two three four five")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"line {i} of json"}) for i in range(3)))
    pd.DataFrame({"text": ["parquet row one", "parquet row two"]}).to_parquet(tmp_path / "c.parquet")
    texts = [doc.text for doc in corpus_documents(str(tmp_path))]
    assert texts[0] == "one two three four five"
    assert texts[1:4] == ["line 0 of json", "line 1 of json", "line 2 of json"]
    assert texts[4:] == ["parquet row one", "parquet row two"]


def test_chunks_are_full_and_separated_by_eos(toy_tokenizer):
    docs = list(corpus_documents_from(["a b c", "d e f g", "h"]))
    chunks = chunk_documents(docs, toy_tokenizer, context_length=4)
    # 3 + 1 + 4 + 1 + 1 + 1 = 11 tokens -> two full chunks, the partial third is dropped.
    assert chunks.shape == (2, 4)
    assert chunks[0, 3] == toy_tokenizer.eos_token_id
    assert chunks.dtype.name == "int32"


def test_token_budget_is_respected(toy_tokenizer):
    docs = corpus_documents_from([" ".join(f"w{i}" for i in range(100))])
    assert chunk_documents(docs, toy_tokenizer, context_length=8, max_tokens=30).shape == (3, 8)


def test_empty_corpus_is_a_clear_error(tmp_path: Path, toy_tokenizer):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(MonoscopeError, match="no full chunk"):
        chunk_documents(corpus_documents(str(tmp_path / "empty.txt")), toy_tokenizer, context_length=4)


def test_missing_corpus_and_unknown_type(tmp_path: Path):
    with pytest.raises(MonoscopeError, match="does not exist"):
        list(corpus_documents(str(tmp_path / "nope.txt")))
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(MonoscopeError, match="unsupported"):
        list(corpus_documents(str(tmp_path / "data.csv")))


def test_jsonl_without_text_field(tmp_path: Path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}))
    with pytest.raises(MonoscopeError, match="no field 'text'"):
        list(corpus_documents(str(tmp_path / "bad.jsonl")))


def test_default_corpus_is_the_standard_library():
    first = list(itertools.islice(stdlib_documents(), 50))
    assert DEFAULT_CORPUS == "python-stdlib"
    assert all(doc.source.startswith("stdlib/") and doc.text for doc in first)
    assert len({doc.source.split("/")[1] for doc in first}) > 10, "the order mixes many packages"
    assert sum(len(doc.text) for doc in stdlib_documents()) > 4_000_000, "well over 1M tokens of text"


def corpus_documents_from(texts: list[str]):
    from harness.subject.corpus import Document

    return (Document(source=f"doc{i}", text=text) for i, text in enumerate(texts))
