import pandas as pd
import pytest

from tasks.lib.config import PrepareConfig
from tasks.lib.errors import ConfigError
from tasks.lib.models import load_tokenizer, resolve_model_dir, retriever_max_seq_length
from tasks.prepare import (
    assign_splits,
    check_chunk_fits,
    chunk_document,
    chunk_spans,
    content_hash,
    describe_leaks,
    find_leaks,
    hash_split,
    normalize_question,
    token_offsets,
)

RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


def test_normalize_question():
    assert normalize_question("  What's the  PRICE of Pro?! ") == "what s the price of pro"
    assert normalize_question("Ｃafé\u00a0plan") == "café plan"


def test_hash_split_is_stable_and_seeded():
    assert hash_split("q1", 13, 0.5) == hash_split("q1", 13, 0.5)
    splits = [hash_split(f"q{i}", 13, 0.2) for i in range(10_000)]
    assert 0.18 < splits.count("eval") / len(splits) < 0.22
    other = [hash_split(f"q{i}", 14, 0.2) for i in range(10_000)]
    assert splits != other


def test_assign_splits_keeps_given_split_and_does_not_mutate():
    qa = pd.DataFrame({"qid": ["a", "b"], "split": ["eval", None]})
    out = assign_splits(qa, 13, 0.2)
    assert out.loc[0, "split"] == "eval"
    assert out.loc[1, "split"] == hash_split("b", 13, 0.2)
    assert pd.isna(qa.loc[1, "split"])


def test_find_leaks_normalises():
    qa = pd.DataFrame({
        "qid": ["t1", "t2", "e1", "e2"], "line": [1, 2, 3, 4],
        "question": ["How do I pay?", "Where is it?", "how do i pay", "How can I pay?"],
        "split": ["train", "train", "eval", "eval"]})
    leaks = find_leaks(qa)
    assert leaks["qid"].tolist() == ["e1"]
    msg = describe_leaks(leaks, "qa.jsonl")
    assert msg.startswith("qa.jsonl: 1 eval question(s) also appear in train")
    assert "e1 (line 3)" in msg


def test_chunk_spans_windows_with_overlap():
    offsets = [(i * 2, i * 2 + 1) for i in range(10)]  # 10 one-char tokens, one space apart
    assert chunk_spans(offsets, 4, 1) == [(0, 7), (6, 13), (12, 19)]
    assert chunk_spans(offsets, 10, 2) == [(0, 19)]
    assert chunk_spans([], 4, 1) == []


def test_chunk_document_keeps_original_text():
    text = "one two three four five"
    offsets = [(0, 3), (4, 7), (8, 13), (14, 18), (19, 23)]
    chunks = chunk_document("d", "T", text, offsets, size=3, overlap=1)
    assert [c.text for c in chunks] == ["one two three", "three four five"]
    assert [c.chunk_id for c in chunks] == ["d#0", "d#1"]
    assert chunks[0].content_hash == content_hash("T", "one two three")
    assert content_hash("T", "x") != content_hash(None, "x")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_model_dir(RETRIEVER))


def test_real_tokenizer_chunks_fit_and_cover(tokenizer):
    text = " ".join(f"Sentence number {i} talks about meter readings." for i in range(60))
    offsets = token_offsets(tokenizer, [text])[0]
    chunks = chunk_document("d", None, text, offsets, size=64, overlap=8)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64
    assert chunks[0].text.startswith("Sentence number 0")
    assert chunks[-1].text.endswith("meter readings.")


def test_chunk_size_must_fit_the_retriever():
    max_len = retriever_max_seq_length(resolve_model_dir(RETRIEVER))
    assert max_len == 256
    check_chunk_fits(PrepareConfig(chunk_tokens=254, chunk_overlap=0), max_len, RETRIEVER)
    with pytest.raises(ConfigError, match="chunk_tokens=300 does not fit the retriever"):
        check_chunk_fits(PrepareConfig(chunk_tokens=300, chunk_overlap=0), max_len, RETRIEVER)
