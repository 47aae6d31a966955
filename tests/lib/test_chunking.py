"""Chunking (tasks/lib/chunking.py): token windows with overlap, original characters kept, and
chunks that fit the retriever."""

import pandas as pd
import pytest

from tasks.lib.chunking import (
    Chunk,
    check_chunk_fits,
    chunk_corpus,
    chunk_document,
    chunk_spans,
    token_offsets,
)
from tasks.lib.config import PrepareConfig
from tasks.lib.errors import ConfigError
from tasks.lib.models import retriever_max_seq_length
from tasks.lib.resolve import load_tokenizer, resolve_model_dir
from tasks.lib.text import content_hash

RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


def test_chunk_spans_windows_with_overlap():
    offsets = [(i * 2, i * 2 + 1) for i in range(10)]  # 10 one-char tokens, one space apart
    assert chunk_spans(offsets, 4, 1) == [(0, 7), (6, 13), (12, 19)]
    assert chunk_spans(offsets, 10, 2) == [(0, 19)]
    assert chunk_spans(offsets, 5, 0) == [(0, 9), (10, 19)]  # no overlap: disjoint windows
    assert chunk_spans([], 4, 1) == []


def test_chunk_document_keeps_original_text():
    text = "one two three four five"
    offsets = [(0, 3), (4, 7), (8, 13), (14, 18), (19, 23)]
    chunks = chunk_document("d", "T", text, offsets, size=3, overlap=1)
    assert [c.text for c in chunks] == ["one two three", "three four five"]
    assert [c.chunk_id for c in chunks] == ["d#0", "d#1"]
    assert [c.chunk_index for c in chunks] == [0, 1]
    assert chunks[0].content_hash == content_hash("T", "one two three")


def test_a_document_without_tokens_is_one_chunk():
    assert chunk_document("d", None, "  ", [], 3, 1) == [Chunk("d#0", "d", 0, None, "",
                                                               content_hash(None, ""))]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model_dir(RETRIEVER))


def test_token_offsets_point_at_the_characters(tokenizer):
    [offsets] = token_offsets(tokenizer, ["Pro plan"])
    assert offsets == [(0, 3), (4, 8)]


def test_real_tokenizer_chunks_fit_and_cover(tokenizer):
    text = " ".join(f"Sentence number {i} talks about meter readings." for i in range(60))
    offsets = token_offsets(tokenizer, [text])[0]
    chunks = chunk_document("d", None, text, offsets, size=64, overlap=8)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64
    assert chunks[0].text.startswith("Sentence number 0")
    assert chunks[-1].text.endswith("meter readings.")


def test_chunk_corpus_keeps_titles_and_drops_missing_ones(tokenizer):
    corpus = pd.DataFrame({"doc_id": ["a", "b"], "title": ["Plans", float("nan")],
                           "text": ["Basic costs four euros.", "Cards are charged monthly."]})
    chunks = chunk_corpus(corpus, tokenizer, PrepareConfig(chunk_tokens=32, chunk_overlap=4))
    assert [(c.chunk_id, c.title, c.text) for c in chunks] == [
        ("a#0", "Plans", "Basic costs four euros."), ("b#0", None, "Cards are charged monthly.")]


def test_chunk_size_must_fit_the_retriever():
    max_len = retriever_max_seq_length(resolve_model_dir(RETRIEVER))
    assert max_len == 256
    check_chunk_fits(PrepareConfig(chunk_tokens=254, chunk_overlap=0), max_len, RETRIEVER)
    with pytest.raises(ConfigError, match="chunk_tokens=255 does not fit the retriever "
                                          f"{RETRIEVER}: its max_seq_length is 256"):
        check_chunk_fits(PrepareConfig(chunk_tokens=255, chunk_overlap=0), max_len, RETRIEVER)
    with pytest.raises(ConfigError, match="chunk_tokens=300 does not fit the retriever"):
        check_chunk_fits(PrepareConfig(chunk_tokens=300, chunk_overlap=0), max_len, RETRIEVER)
