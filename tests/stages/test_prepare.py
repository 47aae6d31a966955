"""prepare (tasks/prepare.py): the seeded split, the leakage check, records and counts."""

import pandas as pd
import pytest

from tasks.lib.chunking import Chunk
from tasks.prepare import (
    assign_splits,
    describe_leaks,
    find_leaks,
    hash_split,
    prepare_stats,
    qa_records,
    split_counts,
)


def test_hash_split_is_stable_and_seeded():
    assert hash_split("q1", 13, 0.5) == hash_split("q1", 13, 0.5)
    splits = [hash_split(f"q{i}", 13, 0.2) for i in range(10_000)]
    assert 0.18 < splits.count("eval") / len(splits) < 0.22
    other = [hash_split(f"q{i}", 14, 0.2) for i in range(10_000)]
    assert splits != other
    assert hash_split("q1", 13, 0.0) == "train" and hash_split("q1", 13, 1.0) == "eval"


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


def test_describe_leaks_names_the_first_few_and_counts_the_rest():
    leaks = pd.DataFrame({"qid": [f"e{i}" for i in range(7)], "line": list(range(1, 8))})
    msg = describe_leaks(leaks, "qa.jsonl", limit=2)
    assert "qa.jsonl: 7 eval question(s)" in msg
    assert "e0 (line 1), e1 (line 2) and 5 more." in msg and "e2 (line 3)" not in msg


def test_records_and_counts():
    qa = pd.DataFrame({"qid": ["a", "b"], "question": ["Q1?", "Q2?"], "answer": ["A1", "A2"],
                       "doc_ids": [["d"], ["d", "e"]], "split": ["train", "eval"],
                       "metadata": [float("nan"), {"k": 1}], "line": [1, 2]})
    assert qa_records(qa) == [
        {"qid": "a", "question": "Q1?", "answer": "A1", "doc_ids": ["d"], "split": "train",
         "metadata": None, "line": 1},
        {"qid": "b", "question": "Q2?", "answer": "A2", "doc_ids": ["d", "e"], "split": "eval",
         "metadata": {"k": 1}, "line": 2}]
    assert split_counts(qa) == {"train": 1, "eval": 1}
    chunks = [Chunk(f"d#{i}", "d", i, None, "t", "h") for i in range(3)]
    chunks.append(Chunk("e#0", "e", 0, None, "t", "h"))
    corpus = pd.DataFrame({"doc_id": ["d", "e"]})
    raw = qa.assign(split=["train", None])
    assert prepare_stats(corpus, raw, qa, chunks) == {
        "documents": 2, "chunks": 4, "max_chunks_per_document": 3, "long_documents": 1,
        "questions": 2, "train_questions": 1, "eval_questions": 1, "split_from_data": 1}


def test_a_split_left_empty_is_named_before_anything_is_written():
    from tasks.lib.errors import DataError
    from tasks.prepare import check_splits

    check_splits({"train": 5, "eval": 1}, "qa.jsonl")
    with pytest.raises(DataError, match=r"qa.jsonl: field 'split': no question ends up in 'train' "
                                        r"\(nothing to train on\): all 8 are 'eval'"):
        check_splits({"train": 0, "eval": 8}, "qa.jsonl")
    with pytest.raises(DataError, match=r"no question ends up in 'eval'"):
        check_splits({"train": 8, "eval": 0}, "qa.jsonl")
