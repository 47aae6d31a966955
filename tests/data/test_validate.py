"""Real Great Expectations runs on good and broken data: the messages a user sees."""

import json

import pytest

from tasks.lib.data import load_corpus, load_qa
from tasks.lib.errors import ValidationFailed
from tasks.validate import (
    DATA_DOCS_INDEX,
    format_summary,
    qa_frame,
    raise_on_failure,
    reference_frame,
    validate_frames,
)
from tests.conftest import TINY_DOCS, TINY_QA, write_jsonl_lines


def run(cfg, tmp_path, docs=TINY_DOCS, qa=TINY_QA):
    corpus = load_corpus(write_jsonl_lines(tmp_path / "raw" / "corpus.jsonl", docs))
    questions = load_qa(write_jsonl_lines(tmp_path / "raw" / "qa.jsonl", qa))
    return validate_frames(corpus, questions, cfg, tmp_path / "reports" / "validation")


def failed(report):
    return {(f.suite, f.expectation, f.column) for f in report.failures}


def test_tiny_data_passes_and_writes_reports(smoke_cfg, tmp_path):
    report = run(smoke_cfg, tmp_path)
    assert report.success, report.failures
    assert report.rows == {"corpus": 3, "qa": 8, "qa_references": 8}
    out = tmp_path / "reports" / "validation"
    assert json.loads((out / "metrics.json").read_text())["failed_expectations"] == 0
    assert (out / DATA_DOCS_INDEX).is_file()
    assert "# Validation PASSED" in (out / "summary.md").read_text()


def test_missing_text_is_named_with_its_line(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "x-01", "title": "No body"}]
    report = run(smoke_cfg, tmp_path, docs=docs)
    assert ("corpus", "expect_column_values_to_not_be_null", "text") in failed(report)
    failure = next(f for f in report.failures if f.column == "text")
    assert failure.unexpected_count == 1 and failure.lines == [4]


def test_duplicate_doc_id(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {**TINY_DOCS[0], "text": "another text for the same id"}]
    report = run(smoke_cfg, tmp_path, docs=docs)
    assert failed(report) == {("corpus", "expect_column_values_to_be_unique", "doc_id")}
    failure = report.failures[0]
    assert failure.examples == ["plan-01", "plan-01"] and failure.lines == [1, 4]


def test_blank_text_fails(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "blank", "text": "   "}]
    report = run(smoke_cfg, tmp_path, docs=docs)
    assert ("corpus", "expect_column_values_to_match_regex", "text") in failed(report)


def test_dangling_doc_ids_fail_referential_integrity(smoke_cfg, tmp_path):
    qa = [*TINY_QA, {"qid": "q9", "question": "Where?", "answer": "Here.",
                     "doc_ids": ["plan-01", "gone-99"]}]
    report = run(smoke_cfg, tmp_path, qa=qa)
    assert failed(report) == {("qa_references", "expect_column_values_to_be_in_set", "doc_id")}
    assert report.failures[0].examples == ["gone-99"]
    assert report.failures[0].lines == [9]


def test_bad_split_empty_doc_ids_duplicate_qid(smoke_cfg, tmp_path):
    qa = [*TINY_QA,
          {"qid": "q1", "question": "Dup id?", "answer": "Yes.", "doc_ids": ["plan-01"]},
          {"qid": "q10", "question": "No docs?", "answer": "None.", "doc_ids": []},
          {"qid": "q11", "question": "Odd split?", "answer": "Test.", "doc_ids": ["pay-01"],
           "split": "test"}]
    report = run(smoke_cfg, tmp_path, qa=qa)
    assert failed(report) == {
        ("qa", "expect_column_values_to_be_unique", "qid"),
        ("qa", "expect_column_values_to_be_between", "n_doc_ids"),
        ("qa", "expect_column_values_to_be_in_set", "split"),
    }


def test_row_count_floor(smoke_cfg, tmp_path):
    cfg = smoke_cfg.model_copy(update={"validate_": smoke_cfg.validate_.model_copy(
        update={"min_documents": 5})})
    report = run(cfg, tmp_path)
    failure = next(f for f in report.failures if f.expectation.startswith("expect_table_row"))
    assert failure.observed == 3


def test_failure_message_names_file_lines_expectation(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "x-01", "title": "No body"}]
    report = run(smoke_cfg, tmp_path, docs=docs)
    with pytest.raises(ValidationFailed) as err:
        raise_on_failure(report, smoke_cfg)
    text = str(err.value)
    assert smoke_cfg.paths.corpus_path in text
    assert "(lines 4): expect_column_values_to_not_be_null on column 'text': 1 unexpected" in text
    md = format_summary(report, {})
    assert "| corpus | expect_column_values_to_not_be_null | text | 1 |" in md


def test_frames_for_gx():
    import pandas as pd

    qa = pd.DataFrame({"line": [1, 2], "qid": ["a", "b"], "doc_ids": [["x", "y"], []],
                       "metadata": [None, None]})
    assert qa_frame(qa)["n_doc_ids"].tolist() == [2, 0]
    refs = reference_frame(qa)
    assert refs.to_dict("records") == [{"line": 1, "qid": "a", "doc_id": "x"},
                                       {"line": 1, "qid": "a", "doc_id": "y"}]
