"""validate (tasks/validate.py): its three suites run through real Great Expectations on good and
broken data, and the messages a user sees."""

import json
from pathlib import Path

import pytest

from tasks.lib.catalog import DATA_DOCS_INDEX
from tasks.lib.context import StageContext
from tasks.lib.data import load_corpus, load_qa
from tasks.lib.errors import ValidationFailed
from tasks.lib.expectations import (
    ValidationReport,
    failure_message,
    format_summary,
    run_suites,
    write_report,
)
from tasks.lib.files import data_md5s
from tasks.validate import failure_sources, suites_for, validate_stage
from tests.conftest import TINY_DOCS, TINY_QA, write_jsonl_lines


def run(section, tmp_path, docs=TINY_DOCS, qa=TINY_QA) -> ValidationReport:
    """validate_stage's work without MLflow: the suites on the frames, the reports written."""
    corpus_path = write_jsonl_lines(tmp_path / "raw" / "corpus.jsonl", docs)
    qa_path = write_jsonl_lines(tmp_path / "raw" / "qa.jsonl", qa)
    frames, suites = suites_for(load_corpus(corpus_path), load_qa(qa_path), section)
    out_dir = tmp_path / "reports" / "validation"
    failures, checked = run_suites(frames, suites, out_dir, section.examples)
    report = ValidationReport(not failures, {k: len(v) for k, v in frames.items()}, checked,
                              failures)
    write_report(report, out_dir, data_md5s(corpus_path, qa_path))
    return report


def failed(report):
    return {(f.suite, f.expectation, f.column) for f in report.failures}


def test_suites_cover_the_three_frames(smoke_cfg):
    corpus, qa = load_corpus(smoke_cfg.paths.corpus_path), load_qa(smoke_cfg.paths.qa_path)
    frames, suites = suites_for(corpus, qa, smoke_cfg.validate_)
    assert list(frames) == list(suites) == ["corpus", "qa", "qa_references"]
    assert "metadata" not in frames["corpus"] and "n_doc_ids" in frames["qa"]
    assert suites["qa_references"] == [("ExpectColumnValuesToBeInSet", {
        "column": "doc_id", "value_set": ["plan-01", "pay-01", "sec-01"]})]


def test_failure_sources_name_the_raw_files(smoke_cfg):
    sources = failure_sources(StageContext.of(smoke_cfg))
    qa = smoke_cfg.paths.qa_path
    assert sources == {"corpus": smoke_cfg.paths.corpus_path, "qa": qa,
                       "qa_references": f"{qa} (doc_ids)"}


def test_tiny_data_passes_and_writes_reports(smoke_cfg, tmp_path):
    report = run(smoke_cfg.validate_, tmp_path)
    assert report.success, report.failures
    assert report.rows == {"corpus": 3, "qa": 8, "qa_references": 8}
    out = tmp_path / "reports" / "validation"
    assert json.loads((out / "metrics.json").read_text())["failed_expectations"] == 0
    assert (out / DATA_DOCS_INDEX).is_file()
    assert "# Validation PASSED" in (out / "summary.md").read_text()


def test_missing_text_is_named_with_its_line(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "x-01", "title": "No body"}]
    report = run(smoke_cfg.validate_, tmp_path, docs=docs)
    assert ("corpus", "expect_column_values_to_not_be_null", "text") in failed(report)
    failure = next(f for f in report.failures if f.column == "text")
    assert failure.unexpected_count == 1 and failure.lines == [4]


def test_duplicate_doc_id(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {**TINY_DOCS[0], "text": "another text for the same id"}]
    report = run(smoke_cfg.validate_, tmp_path, docs=docs)
    assert failed(report) == {("corpus", "expect_column_values_to_be_unique", "doc_id")}
    failure = report.failures[0]
    assert failure.examples == ["plan-01", "plan-01"] and failure.lines == [1, 4]


def test_blank_text_fails(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "blank", "text": "   "}]
    report = run(smoke_cfg.validate_, tmp_path, docs=docs)
    assert ("corpus", "expect_column_values_to_match_regex", "text") in failed(report)


def test_invisible_only_text_is_blank(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "zw", "text": "\u200b\u200b \ufeff\u2060"}]
    qa = [*TINY_QA, {"qid": "zq", "question": "\u200b", "answer": "x", "doc_ids": ["pay-01"]}]
    report = run(smoke_cfg.validate_, tmp_path, docs=docs, qa=qa)
    assert ("corpus", "expect_column_values_to_match_regex", "text") in failed(report)
    assert ("qa", "expect_column_values_to_match_regex", "question") in failed(report)


def test_dangling_doc_ids_fail_referential_integrity(smoke_cfg, tmp_path):
    qa = [*TINY_QA, {"qid": "q9", "question": "Where?", "answer": "Here.",
                     "doc_ids": ["plan-01", "gone-99"]}]
    report = run(smoke_cfg.validate_, tmp_path, qa=qa)
    assert failed(report) == {("qa_references", "expect_column_values_to_be_in_set", "doc_id")}
    assert report.failures[0].examples == ["gone-99"]
    assert report.failures[0].lines == [9]


def test_bad_split_empty_doc_ids_duplicate_qid(smoke_cfg, tmp_path):
    qa = [*TINY_QA,
          {"qid": "q1", "question": "Dup id?", "answer": "Yes.", "doc_ids": ["plan-01"]},
          {"qid": "q10", "question": "No docs?", "answer": "None.", "doc_ids": []},
          {"qid": "q11", "question": "Odd split?", "answer": "Test.", "doc_ids": ["pay-01"],
           "split": "test"}]
    report = run(smoke_cfg.validate_, tmp_path, qa=qa)
    assert failed(report) == {
        ("qa", "expect_column_values_to_be_unique", "qid"),
        ("qa", "expect_column_values_to_be_between", "n_doc_ids"),
        ("qa", "expect_column_values_to_be_in_set", "split"),
    }


def test_row_count_floor(smoke_cfg, tmp_path):
    section = smoke_cfg.validate_.model_copy(update={"min_documents": 5})
    report = run(section, tmp_path)
    failure = next(f for f in report.failures if f.expectation.startswith("expect_table_row"))
    assert failure.observed == 3


def test_failure_message_names_file_lines_expectation(smoke_cfg, tmp_path):
    docs = [*TINY_DOCS, {"doc_id": "x-01", "title": "No body"}]
    report = run(smoke_cfg.validate_, tmp_path, docs=docs)
    text = failure_message(report, failure_sources(StageContext.of(smoke_cfg)))
    assert smoke_cfg.paths.corpus_path in text
    assert "(lines 4): expect_column_values_to_not_be_null on column 'text': 1 unexpected" in text
    md = format_summary(report, {})
    assert "| corpus | expect_column_values_to_not_be_null | text | 1 |" in md


@pytest.mark.slow
def test_stage_raises_with_the_message_and_leaves_the_report(smoke_cfg):
    """The whole stage (in its MLflow run): a failed suite stops it, naming file and lines."""
    write_jsonl_lines(Path(smoke_cfg.paths.corpus_path),
                      [*TINY_DOCS, {"doc_id": "x-01", "title": "No body"}])
    with pytest.raises(ValidationFailed, match=r"corpus.jsonl \(lines 4\): "
                                               "expect_column_values_to_not_be_null on column 'text'"):
        validate_stage(smoke_cfg.validate_, StageContext.of(smoke_cfg))
    summary = json.loads((StageContext.of(smoke_cfg).catalog.validation_summary_path).read_text())
    assert summary["success"] is False and summary["data_md5"] == data_md5s(
        smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path)
