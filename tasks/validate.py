"""validate: Great Expectations suites on the raw corpus and QA; any failure stops the run.

Reads the raw corpus and QA (catalog: corpus_path, qa_path). Writes reports/validation/:
summary.json and summary.md (each failed expectation with column, unexpected count, example
values and source lines; personal data found per field and kind), metrics.json (for DVC) and
GX Data Docs HTML (gx/.../index.html). The PII gate (config `pii`): warn logs the counts, fail
adds an expectation per text field, redact validates and logs the redacted text.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from prefect import task

from tasks.lib.config import PiiConfig, ValidateConfig
from tasks.lib.context import StageContext
from tasks.lib.errors import DataError, ValidationFailed
from tasks.lib.expectations import (
    ValidationReport,
    corpus_expectations,
    failure_message,
    qa_expectations,
    qa_frame,
    reference_expectations,
    reference_frame,
    run_suites,
    write_report,
)
from tasks.lib.pii import Scan, describe_findings, pii_metrics
from tasks.lib.pii_gate import gate_frames, pii_summary, pii_warning, with_pii_checks
from tasks.lib.runtime import IO_RETRIES

log = logging.getLogger(__name__)

REPORT_FILES = ("summary.json", "summary.md", "metrics.json")

# ---- pure ---------------------------------------------------------------------------------------


def suites_for(corpus: pd.DataFrame, qa: pd.DataFrame | None, section: ValidateConfig
               ) -> tuple[dict[str, pd.DataFrame], dict[str, list[tuple[str, dict[str, Any]]]]]:
    """The frames GX validates and the suite for each: corpus, qa, qa_references (without a QA
    file, the corpus alone: synthesize writes the questions)."""
    frames = {"corpus": corpus.drop(columns=["metadata"])}
    suites = {"corpus": corpus_expectations(section)}
    if qa is not None:
        frames |= {"qa": qa_frame(qa), "qa_references": reference_frame(qa)}
        suites |= {"qa": qa_expectations(section),
                   "qa_references": reference_expectations(corpus["doc_id"].dropna().tolist())}
    return frames, suites


def failure_sources(ctx: StageContext) -> dict[str, str]:
    """Which file each suite checks (named in the error message)."""
    cat = ctx.catalog
    return {"corpus": str(cat.corpus_path), "qa": cat.qa_label,
            "qa_references": f"{cat.qa_label} (doc_ids)"}


def failure_text(report: ValidationReport, scans: dict[str, Scan], pii: PiiConfig,
                 ctx: StageContext) -> str:
    """The error: each failed expectation; under policy fail, the first findings by line."""
    sources = failure_sources(ctx)
    text = failure_message(report, sources)
    if pii.policy == "fail" and report.pii.get("total"):
        text += "\n" + describe_findings(scans, sources, pii.examples)
    return text


# ---- effects ------------------------------------------------------------------------------------


def log_report(report: ValidationReport, ctx: StageContext, pii: PiiConfig) -> None:
    """The report's metrics (PII counts too), tag, files and Data Docs in the active MLflow run."""
    import mlflow

    cat, out_dir = ctx.catalog, ctx.catalog.validation_dir
    mlflow.log_metrics({"failed_expectations": len(report.failures),
                        "expectations": report.checked,
                        **{f"rows_{k}": v for k, v in report.rows.items()},
                        **pii_metrics(report.pii["counts"], pii.kinds)})
    mlflow.set_tag("validation.success", str(report.success).lower())
    for name in REPORT_FILES:
        mlflow.log_artifact(str(out_dir / name), "validation")
    if cat.data_docs_path.parent.is_dir():
        mlflow.log_artifacts(str(cat.data_docs_path.parent), "validation/data_docs")


def validate_stage(section: ValidateConfig, pii: PiiConfig, ctx: StageContext) -> dict[str, Any]:
    """Validate the raw data in the stage's MLflow run; raise ValidationFailed on any failure."""
    import mlflow

    from tasks.lib.data import load_corpus, load_qa
    from tasks.lib.files import data_md5s
    from tasks.lib.tracking import log_dataset, stage_run

    cat, out_dir = ctx.catalog, ctx.catalog.validation_dir
    md5s = data_md5s(cat.corpus_path, cat.qa_path)
    with stage_run(ctx, "validate", section, pii):
        try:
            corpus = load_corpus(str(cat.corpus_path))
            # No QA file is a corpus-only project (synthesize.mode auto -> only); whether that
            # is allowed is synthesize's to say, which knows the mode.
            qa = load_qa(str(cat.qa_path)) if cat.has_qa else None
        except DataError as err:  # structural errors: still leave a report behind
            write_report(ValidationReport(False, {}, 0), out_dir, md5s, str(err))
            for name in REPORT_FILES:
                mlflow.log_artifact(str(out_dir / name), "validation")
            raise
        gated, scans = gate_frames({"corpus": corpus} | ({"qa": qa} if qa is not None else {}),
                                   pii)
        corpus, qa = gated["corpus"], gated.get("qa")
        log_dataset(corpus, str(cat.corpus_path), "raw_corpus", "raw")
        if qa is None:
            log.info("validate: %s does not exist: the corpus alone is validated", cat.qa_label)
        else:
            log_dataset(qa, str(cat.qa_path), "raw_qa", "raw")
        frames, suites = with_pii_checks(*suites_for(corpus, qa, section), scans, pii.policy)
        failures, checked = run_suites(frames, suites, out_dir, section.examples)
        report = ValidationReport(not failures, {k: len(v) for k, v in frames.items()}, checked,
                                  failures, pii_summary(scans, pii))
        write_report(report, out_dir, md5s)
        log_report(report, ctx, pii)
        log.info("validation %s: %d expectations, %d failed (report: %s)",
                 "passed" if report.success else "FAILED", report.checked,
                 len(report.failures), out_dir / "summary.md")
        if (warning := pii_warning(report.pii)) is not None:
            log.warning(warning)
        if not report.success:
            raise ValidationFailed(failure_text(report, scans, pii, ctx))
    return {**report.to_dict(), "summary_path": str(cat.validation_summary_path)}


# ---- Prefect task -------------------------------------------------------------------------------


@task(name="validate", **IO_RETRIES)
def validate(section: ValidateConfig, pii: PiiConfig, ctx: StageContext) -> dict[str, Any]:
    """Validate raw data with Great Expectations; fail the flow on any failed expectation."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "validate", lambda: validate_stage(section, pii, ctx))
