"""validate (tasks/validate.py): its three suites run through real Great Expectations on good and
broken data, and the messages a user sees."""

import json
import logging
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
from tasks.lib.pii_gate import gate_frames, pii_summary, pii_warning, with_pii_checks
from tasks.validate import failure_sources, failure_text, suites_for, validate_stage
from tests.conftest import (
    PII_VALUES,
    TINY_DOCS,
    TINY_QA,
    write_jsonl_lines,
    write_pii_data,
)


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
        validate_stage(smoke_cfg.validate_, smoke_cfg.pii, StageContext.of(smoke_cfg))
    summary = json.loads((StageContext.of(smoke_cfg).catalog.validation_summary_path).read_text())
    assert summary["success"] is False and summary["data_md5"] == data_md5s(
        smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path)


# ---- the PII gate (config `pii`) ---------------------------------------------------------------

PII_COUNTS = {"corpus.title": {}, "corpus.text": {"email": 1, "iban": 1, "phone": 1},
              "qa.question": {"card": 1, "email": 1, "iban": 1}, "qa.answer": {"phone": 1}}


def gated_run(cfg, tmp_path, policy, validate=None):
    """validate's suites with the PII gate for `policy` on the PII data, through real GX."""
    write_pii_data(cfg.paths.corpus_path, cfg.paths.qa_path)
    pii = cfg.pii.model_copy(update={"policy": policy})
    gated, scans = gate_frames({"corpus": load_corpus(cfg.paths.corpus_path),
                                "qa": load_qa(cfg.paths.qa_path)}, pii)
    corpus, qa = gated["corpus"], gated["qa"]
    frames, suites = with_pii_checks(*suites_for(corpus, qa, validate or cfg.validate_), scans,
                                     policy)
    out_dir = tmp_path / "reports" / "validation"
    failures, checked = run_suites(frames, suites, out_dir, 5)
    report = ValidationReport(not failures, {k: len(v) for k, v in frames.items()}, checked,
                              failures, pii_summary(scans, pii))
    write_report(report, out_dir, {})
    return report, scans, pii


def test_pii_policy_fail_is_an_expectation_naming_line_field_and_kind(smoke_cfg, tmp_path):
    report, scans, pii = gated_run(smoke_cfg, tmp_path, "fail")
    assert failed(report) == {("corpus", "expect_column_values_to_be_null", "pii_text"),
                              ("qa", "expect_column_values_to_be_null", "pii_question"),
                              ("qa", "expect_column_values_to_be_null", "pii_answer")}
    by_column = {f.column: f for f in report.failures}
    assert by_column["pii_question"].lines == [9, 10]
    assert by_column["pii_question"].examples == ["card, email", "iban"]  # kinds, not values
    assert by_column["pii_text"].lines == [4] and by_column["pii_answer"].lines == [9]
    text = failure_text(report, scans, pii, StageContext.of(smoke_cfg))
    corpus, qa = smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path
    assert f"{corpus} line 4, field 'text': email, iban, phone" in text
    assert f"{qa} line 9, field 'answer': phone" in text
    assert f"{qa} line 9, field 'question': card, email" in text
    assert f"{qa} line 10, field 'question': iban" in text
    assert f"{qa} (lines 9, 10): expect_column_values_to_be_null on column 'pii_question'" in text
    assert not [v for v in PII_VALUES if v in text]


@pytest.mark.parametrize("policy", ["warn", "redact"])
def test_pii_policy_warn_or_redact_passes_and_counts_per_field(smoke_cfg, tmp_path, policy):
    report, _, _ = gated_run(smoke_cfg, tmp_path, policy)
    assert report.success, report.failures
    assert report.pii == {"policy": policy, "kinds": ["email", "phone", "card", "iban"],
                          "counts": PII_COUNTS, "total": 7}
    out = tmp_path / "reports" / "validation"
    assert json.loads((out / "summary.json").read_text())["pii"]["counts"] == PII_COUNTS
    assert json.loads((out / "metrics.json").read_text())["pii_total"] == 7
    md = (out / "summary.md").read_text()
    assert f"## Personal data (pii.policy: {policy}): 7 found" in md
    assert "| field | email | phone | card | iban |" in md and "| qa.question | 1 | 0 | 1 | 1 |" in md


def test_pii_warning_counts_without_values_and_only_for_warn(smoke_cfg, tmp_path):
    report, _, _ = gated_run(smoke_cfg, tmp_path, "warn")
    assert pii_warning(report.pii) == (
        "personal data left in the text (pii.policy: warn): corpus.text: 1 email, 1 iban, 1 "
        "phone; qa.question: 1 card, 1 email, 1 iban; qa.answer: 1 phone. Set pii.policy: "
        "redact to replace it before prepare, or fail to stop here")
    assert pii_warning({**report.pii, "policy": "redact"}) is None
    assert pii_warning({**report.pii, "total": 0}) is None


def test_pii_policy_redact_validates_the_redacted_text(smoke_cfg, tmp_path):
    """Under redact GX sees placeholders: a failure's examples and the Data Docs hold no values."""
    short = smoke_cfg.validate_.model_copy(update={"max_question_chars": 37})
    report, _, _ = gated_run(smoke_cfg, tmp_path, "redact", short)
    failure = next(f for f in report.failures if f.column == "question")
    assert failure.lines == [7, 8, 9]
    assert failure.examples[2] == "I paid with [CARD], mail me at [EMAIL]"
    docs = "".join(p.read_text(errors="ignore") for p in (tmp_path / "reports").rglob("*.html"))
    assert docs and not [v for v in PII_VALUES if v in docs]
    raw, _, _ = gated_run(smoke_cfg, tmp_path / "raw-run", "warn", short)
    assert "4111 1111 1111 1111" in next(f for f in raw.failures if f.column == "question").examples[2]
    raw_docs = "".join(p.read_text(errors="ignore")
                       for p in (tmp_path / "raw-run" / "reports").rglob("*.html"))
    assert "4111 1111 1111 1111" in raw_docs  # what the check above would catch


@pytest.mark.slow
def test_stage_pii_fail_raises_and_warn_passes_with_counts_in_summary_and_mlflow(smoke_cfg, caplog):
    from mlflow.tracking import MlflowClient

    write_pii_data(smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path)
    ctx = StageContext.of(smoke_cfg)
    fail = smoke_cfg.pii.model_copy(update={"policy": "fail"})
    with pytest.raises(ValidationFailed, match=r"qa.jsonl line 9, field 'question': card, email"):
        validate_stage(smoke_cfg.validate_, fail, ctx)
    summary_path = ctx.catalog.validation_summary_path
    assert json.loads(summary_path.read_text())["success"] is False
    with caplog.at_level(logging.WARNING, logger="tasks.validate"):
        result = validate_stage(smoke_cfg.validate_, smoke_cfg.pii, ctx)  # smoke: warn
    assert result["success"] and result["pii"]["counts"] == PII_COUNTS
    assert "(pii.policy: warn): corpus.text: 1 email, 1 iban, 1 phone;" in caplog.text
    assert json.loads(summary_path.read_text())["pii"]["total"] == 7
    client = MlflowClient(smoke_cfg.tracking.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(smoke_cfg.project.name).experiment_id],
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert run.data.metrics["pii.qa.question.email"] == 1 and run.data.metrics["pii.total"] == 7
    assert run.data.metrics["pii.qa.answer.email"] == 0 and run.data.params["pii.policy"] == "warn"
