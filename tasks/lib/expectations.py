"""Great Expectations suites for the data contract, run through a GX checkpoint, and their reports.

Used by validate (corpus, qa, qa_references) and reindex (corpus only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.lib.catalog import DATA_DOCS_INDEX
from tasks.lib.config import ValidateConfig
from tasks.lib.data import LINE_COLUMN
from tasks.lib.files import write_json, write_text_atomic
from tasks.lib.text import VISIBLE

ALLOWED_SPLITS = ["train", "eval"]
NON_BLANK = VISIBLE  # at least one character that is neither whitespace nor invisible

# ---- pure: suites as data, frames to validate, summaries ------------------------------------


def corpus_expectations(cfg: ValidateConfig) -> list[tuple[str, dict[str, Any]]]:
    """The corpus suite as (GX expectation class name, kwargs) pairs."""
    return [
        ("ExpectTableRowCountToBeBetween",
         {"min_value": cfg.min_documents, "max_value": cfg.max_documents}),
        ("ExpectColumnValuesToNotBeNull", {"column": "doc_id"}),
        ("ExpectColumnValuesToBeUnique", {"column": "doc_id"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "doc_id", "regex": NON_BLANK}),
        ("ExpectColumnValuesToNotBeNull", {"column": "text"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "text", "regex": NON_BLANK}),
        ("ExpectColumnValueLengthsToBeBetween",
         {"column": "text", "min_value": cfg.min_text_chars, "max_value": cfg.max_text_chars}),
    ]


def qa_expectations(cfg: ValidateConfig) -> list[tuple[str, dict[str, Any]]]:
    """The QA suite as (GX expectation class name, kwargs) pairs."""
    return [
        ("ExpectTableRowCountToBeBetween", {"min_value": cfg.min_questions}),
        ("ExpectColumnValuesToNotBeNull", {"column": "qid"}),
        ("ExpectColumnValuesToBeUnique", {"column": "qid"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "question"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "question", "regex": NON_BLANK}),
        ("ExpectColumnValueLengthsToBeBetween",
         {"column": "question", "max_value": cfg.max_question_chars}),
        ("ExpectColumnValuesToNotBeNull", {"column": "answer"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "answer", "regex": NON_BLANK}),
        ("ExpectColumnValuesToBeBetween", {"column": "n_doc_ids", "min_value": 1}),
        ("ExpectColumnValuesToBeInSet", {"column": "split", "value_set": ALLOWED_SPLITS}),
    ]


def pii_expectations(columns: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """No personal data (pii.policy: fail): each `pii_<field>` column (the kinds a row's field
    holds, tasks/lib/pii.py) is null, so a failure names lines and kinds, never values."""
    return [("ExpectColumnValuesToBeNull", {"column": c}) for c in columns]


def reference_expectations(corpus_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Referential integrity: every qa doc_ids entry names a corpus document."""
    return [("ExpectColumnValuesToBeInSet", {"column": "doc_id", "value_set": corpus_ids})]


def qa_frame(qa: pd.DataFrame) -> pd.DataFrame:
    """The QA frame GX sees: contract columns plus the number of referenced documents."""
    # list columns stay out of GX: the loader checks doc_ids and choices (tasks/lib/data.py)
    out = qa.drop(columns=["doc_ids", "metadata", "choices"], errors="ignore")
    out["n_doc_ids"] = [len(v) if isinstance(v, list) else 0 for v in qa["doc_ids"]]
    return out


def reference_frame(qa: pd.DataFrame) -> pd.DataFrame:
    """One row per (qid, referenced doc_id), with the QA source line."""
    rows = [{LINE_COLUMN: line, "qid": qid, "doc_id": doc_id}
            for line, qid, ids in zip(qa[LINE_COLUMN], qa["qid"], qa["doc_ids"], strict=True)
            if isinstance(ids, list) for doc_id in ids]
    return pd.DataFrame(rows, columns=[LINE_COLUMN, "qid", "doc_id"])


@dataclass(frozen=True)
class Failure:
    suite: str
    expectation: str
    column: str | None
    unexpected_count: int | None
    examples: list[Any]
    lines: list[int]
    observed: Any = None


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    rows: dict[str, int]
    checked: int
    failures: list[Failure] = field(default_factory=list)
    pii: dict[str, Any] = field(default_factory=dict)  # policy and count by field and kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plain(value: Any) -> Any:
    """JSON-friendly scalar (numpy ints, NaN -> None)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def summarize_result(suite: str, exp_type: str, column: str | None, result: dict[str, Any],
                     limit: int) -> Failure:
    """Turn one failed GX expectation result into a Failure with examples and source lines."""
    examples = [_plain(v) for v in (result.get("partial_unexpected_list") or [])][:limit]
    lines = [int(row[LINE_COLUMN]) for row in (result.get("unexpected_index_list") or [])
             if isinstance(row, dict) and LINE_COLUMN in row][:limit]
    return Failure(suite, exp_type, column, result.get("unexpected_count"), examples, lines,
                   _plain(result.get("observed_value")))


def format_summary(report: ValidationReport, paths: dict[str, str]) -> str:
    """A short Markdown summary naming each failed expectation, column, count and examples."""
    status = "PASSED" if report.success else "FAILED"
    out = [f"# Validation {status}", "",
           f"Checked {report.checked} expectations on "
           + ", ".join(f"{name} ({n} rows)" for name, n in report.rows.items()) + ".", ""]
    if report.failures:
        out += ["| suite | expectation | column | unexpected | examples | lines |",
                "|---|---|---|---|---|---|"]
        for f in report.failures:
            count = f.unexpected_count if f.unexpected_count is not None else f"observed {f.observed}"
            out.append(f"| {f.suite} | {f.expectation} | {f.column or '-'} | {count} | "
                       f"{', '.join(repr(e) for e in f.examples)} | "
                       f"{', '.join(str(n) for n in f.lines)} |")
        out.append("")
    out += format_pii(report.pii)
    out += [f"- {name}: `{path}`" for name, path in paths.items()]
    return "\n".join(out) + "\n"


def format_pii(pii: dict[str, Any]) -> list[str]:
    """The PII section of the summary: count by field and kind, and what the policy did."""
    if not pii:
        return []
    kinds = list(pii["kinds"])
    out = [f"## Personal data (pii.policy: {pii['policy']}): {pii['total']} found", "",
           "| field | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    out += [f"| {where} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + " |"
            for where, counts in pii["counts"].items()]
    return [*out, ""]


def failure_message(report: ValidationReport, sources: dict[str, str]) -> str:
    """One error message for the CLI: each failure with its file and lines."""
    parts = ["validation failed:"]
    for f in report.failures:
        where = sources.get(f.suite, f.suite)
        lines = f" (lines {', '.join(map(str, f.lines))})" if f.lines else ""
        count = (f"{f.unexpected_count} unexpected" if f.unexpected_count is not None
                 else f"observed {f.observed}")
        examples = f", e.g. {f.examples}" if f.examples else ""
        parts.append(f"  {where}{lines}: {f.expectation} on column "
                     f"'{f.column or '<table>'}': {count}{examples}")
    return "\n".join(parts)


def check_validated(cat: Any) -> None:
    """Refuse data that has not passed validation in its current version (prepare, synthesize)."""
    from tasks.lib.errors import ValidationFailed
    from tasks.lib.files import data_md5s

    summary_path = cat.validation_summary_path
    if not summary_path.is_file():
        raise ValidationFailed(f"{summary_path} not found: run the validate stage first")
    summary = json.loads(summary_path.read_text())
    if not summary.get("success"):
        raise ValidationFailed(f"{summary_path}: the last validation failed; fix the data and "
                               "run validate again")
    if summary.get("data_md5") != data_md5s(cat.corpus_path, cat.qa_path):
        raise ValidationFailed(f"{summary_path}: the raw data changed since it was validated; "
                               "run the validate stage again")


# ---- effects: Great Expectations, files -----------------------------------------------------


def run_suites(frames: dict[str, pd.DataFrame], suites: dict[str, list[tuple[str, dict]]],
               gx_root: Path, limit: int) -> tuple[list[Failure], int]:
    """Run each suite on its frame through a GX checkpoint (updating Data Docs)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our logs say enough
    source = context.data_sources.add_or_update_pandas("tunedex")
    failures, checked = [], 0
    for name, expectations in suites.items():
        asset = next((a for a in source.assets if a.name == name), None) \
            or source.add_dataframe_asset(name)
        batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) \
            or asset.add_batch_definition_whole_dataframe("whole")
        suite = gx.ExpectationSuite(name=name)
        for cls_name, kwargs in expectations:
            suite.add_expectation(getattr(gx.expectations, cls_name)(**kwargs))
        suite = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=f"tunedex-{name}", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "COMPLETE",
                           "unexpected_index_column_names": [LINE_COLUMN]}))
        result = checkpoint.run(batch_parameters={"dataframe": frames[name]})
        for run_result in result.run_results.values():
            for r in run_result.results:
                checked += 1
                if not r.success:
                    failures.append(summarize_result(
                        name, r.expectation_config.type, r.expectation_config.kwargs.get("column"),
                        r.result, limit))
    return failures, checked


def write_report(report: ValidationReport, out_dir: Path, md5s: dict[str, str | None],
                 error: str | None = None) -> None:
    """Write summary.json, summary.md and metrics.json for one validation outcome."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"summary": str(out_dir / "summary.json"),
             "data_docs": str(out_dir / DATA_DOCS_INDEX)}
    summary = {**report.to_dict(), "data_md5": md5s, "error": error}
    write_json(out_dir / "summary.json", summary)  # atomic, as every report a stage reads
    write_text_atomic(out_dir / "summary.md",
                      format_summary(report, paths) + (f"\n**Error:** {error}\n" if error else ""))
    metrics = {"success": int(report.success), "expectations": report.checked,
               "failed_expectations": len(report.failures),
               **{f"rows_{k}": v for k, v in report.rows.items()},
               **({"pii_total": report.pii["total"]} if report.pii else {})}
    write_json(out_dir / "metrics.json", metrics)
