"""prepare (tasks/prepare.py): the seeded split, the leakage check, records and counts, and the
PII gate's redaction before anything is chunked or written."""

import json
from pathlib import Path

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
    redacted_inputs,
    split_counts,
)
from tests.conftest import PII_DOC, PII_QA, PII_VALUES, TINY_DOCS, TINY_QA, write_pii_data


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
    short = qa.assign(choices=[None, ["yes", "no"]])  # choices only on the rows that have them
    assert [sorted(r) for r in qa_records(short)] == [
        sorted(qa_records(qa)[0]), sorted([*qa_records(qa)[1], "choices"])]
    assert qa_records(short)[1]["choices"] == ["yes", "no"]
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


# ---- the PII gate: redact before chunking and splitting -----------------------------------------


def pii_frames():
    from tasks.lib.data import LINE_COLUMN

    corpus = pd.DataFrame([*TINY_DOCS, PII_DOC]).assign(**{LINE_COLUMN: [1, 2, 3, 4]})
    qa = pd.DataFrame([*TINY_QA, *PII_QA]).assign(**{LINE_COLUMN: list(range(1, 11))})
    return corpus, qa


def test_redact_replaces_titles_texts_questions_answers_and_counts_them(smoke_cfg):
    corpus, qa = pii_frames()
    redact = smoke_cfg.pii.model_copy(update={"policy": "redact"})
    clean_corpus, clean_qa, counts = redacted_inputs(corpus, qa, redact)
    assert clean_corpus["text"].iloc[3] == ("Refunds go to [IBAN] within five days. Questions? "
                                            "Write to [EMAIL] or call [PHONE].")
    assert clean_qa["question"].iloc[8] == "I paid with [CARD], mail me at [EMAIL]"
    assert clean_qa["answer"].iloc[8] == "We will call you on [PHONE]."
    assert clean_qa["qid"].tolist() == qa["qid"].tolist()  # rows and other fields kept
    assert corpus["text"].iloc[3] == PII_DOC["text"]  # inputs not mutated
    assert counts["pii_redacted.total"] == 7
    assert {k: v for k, v in counts.items() if v} == {
        "pii_redacted.corpus.text.email": 1, "pii_redacted.corpus.text.phone": 1,
        "pii_redacted.corpus.text.iban": 1, "pii_redacted.qa.question.email": 1,
        "pii_redacted.qa.question.card": 1, "pii_redacted.qa.question.iban": 1,
        "pii_redacted.qa.answer.phone": 1, "pii_redacted.total": 7}
    assert counts["pii_redacted.corpus.title.email"] == 0


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_warn_and_fail_leave_the_text_alone(smoke_cfg, policy):
    corpus, qa = pii_frames()
    section = smoke_cfg.pii.model_copy(update={"policy": policy})
    out_corpus, out_qa, counts = redacted_inputs(corpus, qa, section)
    assert out_corpus is corpus and out_qa is qa and counts == {"pii_redacted.total": 0}


def prepared_text(cat) -> str:
    return "".join(Path(p).read_text() for p in (cat.chunks_path, cat.train_qa_path,
                                                 cat.eval_qa_path))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["redact", "warn"])
def test_stage_redact_writes_no_personal_data_and_warn_changes_nothing(smoke_cfg, policy):
    """validate then prepare on data holding each kind: under redact no value reaches the chunks
    or the train/eval files, and prepare's metrics count what was replaced per field."""
    from tasks.lib.context import StageContext
    from tasks.prepare import prepare_stage
    from tasks.validate import validate_stage

    write_pii_data(smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path)
    pii = smoke_cfg.pii.model_copy(update={"policy": policy})
    ctx = StageContext.of(smoke_cfg)
    validate_stage(smoke_cfg.validate_, pii, ctx)
    result = prepare_stage(smoke_cfg.prepare, pii, smoke_cfg.synthesize, ctx)
    text = prepared_text(ctx.catalog)
    metrics = json.loads(ctx.catalog.stage_metrics_path("prepare").read_text())
    chunks = ctx.catalog.chunks_path.read_text()
    if policy == "warn":
        assert all(v in text for v in PII_VALUES) and metrics["pii_redacted.total"] == 0
        assert "refunds@kestrel.example" in chunks and "DE89 3704" in chunks
        return
    assert "[EMAIL]" in chunks and "[IBAN]" in chunks
    assert not [v for v in PII_VALUES if v in text]
    assert all(p in text for p in ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]"))
    assert result["pii_redacted.total"] == metrics["pii_redacted.total"] == 7
    assert metrics["pii_redacted.qa.question.card"] == 1
    assert metrics["pii_redacted.corpus.text.phone"] == 1


# ---- synthetic questions (synthesize.mode) ---------------------------------------------------

def synthetic_rows(docs: list[str], per_doc: int = 2) -> list[dict]:
    from tasks.lib.synthesis import synthetic_row

    return [synthetic_row({"chunk_id": f"{d}#0", "doc_id": d}, f"Question {i} about {d}?",
                          "An answer.", "ict", n)
            for n, (d, i) in enumerate(((d, i) for d in docs for i in range(per_doc)), start=1)]


def real_qa() -> pd.DataFrame:
    return pd.DataFrame({"qid": ["r1", "r2", "r3"], "question": ["Real one?", "Real two?", "Real 3?"],
                         "answer": ["a", "b", "c"], "doc_ids": [["d0"], ["d1"], ["d2"]],
                         "split": ["train", "train", "eval"], "metadata": [None] * 3,
                         "line": [1, 2, 3]})


def test_modes_decide_which_questions_train_and_real_eval_questions_stay():
    from tasks.prepare import merge_questions, synthetic_frame

    synthetic = synthetic_frame(synthetic_rows(["d0", "d1"]), 13, 0.5, hold_out=False)
    assert set(synthetic["split"]) == {"train"}  # real eval questions exist: nothing held out
    off = merge_questions(real_qa(), synthetic, "off")
    assert off["qid"].tolist() == ["r1", "r2", "r3"]
    add = merge_questions(real_qa(), synthetic, "add")
    assert split_counts(add) == {"train": 6, "eval": 1}
    only = merge_questions(real_qa(), synthetic, "only")
    assert only[only["split"] == "eval"]["qid"].tolist() == ["r3"]
    assert all(q.startswith("syn-") for q in only[only["split"] == "train"]["qid"])
    assert merge_questions(None, synthetic, "off") is None  # nothing to train on: prepare says so


def test_without_real_questions_eval_documents_are_held_out_whole():
    from tasks.lib.synthesis import eval_documents
    from tasks.prepare import merge_questions, synthetic_frame

    docs = [f"doc-{i}" for i in range(10)]
    frame = synthetic_frame(synthetic_rows(docs), 13, 0.2, hold_out=True)
    merged = merge_questions(None, frame, "only")
    held = {ids[0] for ids, s in zip(merged["doc_ids"], merged["split"], strict=True) if s == "eval"}
    trained = {ids[0] for ids, s in zip(merged["doc_ids"], merged["split"], strict=True)
               if s == "train"}
    assert held == eval_documents(docs, 13, 0.2) and len(held) == 2 and not held & trained
    chunks = [Chunk(f"{d}#0", d, 0, None, "t", "h") for d in docs]
    stats = prepare_stats(pd.DataFrame({"doc_id": docs}), merged.iloc[:0], merged, chunks)
    assert (stats["synthetic_train_questions"], stats["synthetic_eval_questions"],
            stats["eval_synthetic"]) == (16, 4, 1)
