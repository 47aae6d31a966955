"""The GX suites as data and their reports (tasks/lib/expectations.py), without running GX."""

import json

import pandas as pd

from tasks.lib.config import ValidateConfig
from tasks.lib.expectations import (
    Failure,
    ValidationReport,
    corpus_expectations,
    failure_message,
    format_summary,
    qa_expectations,
    qa_frame,
    reference_expectations,
    reference_frame,
    summarize_result,
    write_report,
)

NULL_TEXT = Failure("corpus", "expect_column_values_to_not_be_null", "text", 1, [None], [4])
ROWS = Failure("corpus", "expect_table_row_count_to_be_between", None, None, [], [], observed=3)


def test_frames_for_gx():
    qa = pd.DataFrame({"line": [1, 2], "qid": ["a", "b"], "doc_ids": [["x", "y"], []],
                       "metadata": [None, None]})
    assert qa_frame(qa)["n_doc_ids"].tolist() == [2, 0]
    refs = reference_frame(qa)
    assert refs.to_dict("records") == [{"line": 1, "qid": "a", "doc_id": "x"},
                                       {"line": 1, "qid": "a", "doc_id": "y"}]
    assert list(reference_frame(qa.iloc[1:]).columns) == ["line", "qid", "doc_id"]  # empty, typed


def test_suites_follow_the_validate_section():
    cfg = ValidateConfig(min_documents=2, max_documents=9, min_text_chars=5, max_text_chars=50,
                         min_questions=3, max_question_chars=70)
    corpus = dict((name, kw) for name, kw in corpus_expectations(cfg) if "column" not in kw)
    assert corpus == {"ExpectTableRowCountToBeBetween": {"min_value": 2, "max_value": 9}}
    assert ("ExpectColumnValueLengthsToBeBetween",
            {"column": "text", "min_value": 5, "max_value": 50}) in corpus_expectations(cfg)
    qa = qa_expectations(cfg)
    assert qa[0] == ("ExpectTableRowCountToBeBetween", {"min_value": 3})
    assert ("ExpectColumnValueLengthsToBeBetween", {"column": "question", "max_value": 70}) in qa
    assert ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ["train", "eval"]}) in qa
    assert reference_expectations(["a"]) == [("ExpectColumnValuesToBeInSet",
                                              {"column": "doc_id", "value_set": ["a"]})]


def test_summarize_result_keeps_examples_lines_and_plain_values():
    import numpy as np

    result = {"unexpected_count": 3, "partial_unexpected_list": ["a", float("nan"), np.int64(7)],
              "unexpected_index_list": [{"line": 2}, {"line": 5}, {"other": 1}, {"line": 9}],
              "observed_value": np.int64(4)}
    failure = summarize_result("qa", "expect_x", "qid", result, limit=2)
    assert failure == Failure("qa", "expect_x", "qid", 3, ["a", None], [2, 5], 4)
    assert type(failure.observed) is int


def test_failure_message_names_source_lines_and_count():
    report = ValidationReport(False, {"corpus": 4}, 7, [NULL_TEXT, ROWS])
    assert failure_message(report, {"corpus": "raw/corpus.jsonl"}) == (
        "validation failed:\n"
        "  raw/corpus.jsonl (lines 4): expect_column_values_to_not_be_null on column 'text': "
        "1 unexpected, e.g. [None]\n"
        "  raw/corpus.jsonl: expect_table_row_count_to_be_between on column '<table>': observed 3")
    assert failure_message(report, {}).splitlines()[1].startswith("  corpus (lines 4)")


def test_format_summary_table():
    report = ValidationReport(False, {"corpus": 4, "qa": 8}, 7, [NULL_TEXT, ROWS])
    md = format_summary(report, {"summary": "out/summary.json"})
    assert md.startswith("# Validation FAILED\n\nChecked 7 expectations on corpus (4 rows), "
                         "qa (8 rows).\n")
    assert "| corpus | expect_column_values_to_not_be_null | text | 1 | None | 4 |" in md
    assert "| corpus | expect_table_row_count_to_be_between | - | observed 3 |  |  |" in md
    assert md.endswith("- summary: `out/summary.json`\n")
    passed = format_summary(ValidationReport(True, {"corpus": 4}, 7), {})
    assert passed.startswith("# Validation PASSED") and "| suite |" not in passed


def test_write_report_records_data_version_and_error(tmp_path):
    out = tmp_path / "validation"
    md5s = {"corpus": "abc", "qa": None}
    write_report(ValidationReport(False, {}, 0), out, md5s, "qa.jsonl, line 2: not valid JSON")
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"success": False, "rows": {}, "checked": 0, "failures": [], "pii": {},
                       "data_md5": md5s, "error": "qa.jsonl, line 2: not valid JSON"}
    assert json.loads((out / "metrics.json").read_text()) == {
        "success": 0, "expectations": 0, "failed_expectations": 0}
    assert "**Error:** qa.jsonl, line 2: not valid JSON" in (out / "summary.md").read_text()
