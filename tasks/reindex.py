"""reindex steps: corpus-only refresh of the champion's index, pinned only if retrieval holds.

Reads paths.corpus_path, data/prepared/eval_qa.jsonl (the eval questions of the last prepare)
and the champion release from the registry. Writes a new version of the champion's LanceDB table
(incremental, one merge commit), reports/reindex/ (GX Data Docs for the corpus suite,
reindex.json, decision.md) and, when the rules pass, the champion version's index tags.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import task

from tasks.lib.config import (
    EvaluateConfig,
    GateRule,
    IndexConfig,
    PiiConfig,
    PrepareConfig,
    PromoteConfig,
    ValidateConfig,
)
from tasks.lib.context import StageContext
from tasks.lib.errors import ConfigError, DataError, ValidationFailed
from tasks.lib.failpoints import failpoint
from tasks.lib.runtime import IO_RETRIES

log = logging.getLogger(__name__)

# ---- pure -------------------------------------------------------------------------------------


# what a refresh of the champion's table measures (method -> search mode)
REINDEX_METHODS = {"bm25": "bm25", "lora": "vector", "fusion": "fusion",
                   "fusion_native": "fusion_native"}


def retrieval_rules(rules: tuple[GateRule, ...]) -> tuple[GateRule, ...]:
    """The gate's rules on metrics reindex measures (retrieval.chosen: the champion's chosen
    method, resolved by pin_release), without `min_improvement`: a refresh must hold, not
    improve. (Rules on answers or the base retriever do not apply to a refresh.)"""
    measured = [["retrieval", m] for m in (*REINDEX_METHODS, "chosen")]
    return tuple(r.model_copy(update={"min_improvement": None}) for r in rules
                 if r.metric.split(".")[:2] in measured)


def check_release_settings(release_tags: dict[str, str], prepare: PrepareConfig) -> None:
    """Refuse to re-chunk with other settings than the release's (its metrics would not compare)."""
    for key in ("chunk_tokens", "chunk_overlap"):
        recorded = release_tags.get(f"prepare.{key}")
        if recorded is not None and recorded != str(getattr(prepare, key)):
            raise ConfigError(f"prepare.{key} is {getattr(prepare, key)} but the champion "
                              f"release was indexed with {recorded}: reindex with the release's "
                              "settings, or retrain (the pipeline) to change them")


def corpus_to_index(corpus: Any, pii: PiiConfig) -> Any:
    """The corpus as prepare would chunk it: under `pii.policy: redact` with personal data in
    titles and texts replaced, so a refreshed index holds none either."""
    from tasks.lib.pii import scan_frames

    return scan_frames({"corpus": corpus}, pii)["corpus"].frame if pii.policy == "redact" else corpus


def answerable(questions: list[dict[str, Any]], doc_ids: set[str]) -> list[dict[str, Any]]:
    """Eval questions whose documents all still exist (a deleted document's questions go)."""
    return [q for q in questions if set(q["doc_ids"]) <= doc_ids]


# ---- effects ------------------------------------------------------------------------------------


def validate_corpus_step(section: ValidateConfig, pii: PiiConfig, ctx: StageContext
                         ) -> dict[str, Any]:
    """Run the corpus suite (GX) and the PII gate on the raw corpus; stop the flow on any
    failed expectation."""
    import mlflow

    from tasks.lib.data import load_corpus
    from tasks.lib.expectations import (
        ValidationReport,
        corpus_expectations,
        failure_message,
        run_suites,
    )
    from tasks.lib.files import file_md5
    from tasks.lib.pii import describe_findings, pii_metrics
    from tasks.lib.pii_gate import gate_frames, pii_summary, pii_warning, with_pii_checks
    from tasks.lib.tracking import log_dataset, stage_run

    corpus_path = str(ctx.catalog.corpus_path)
    with stage_run(ctx, "validate_corpus", section, pii):
        gated, scans = gate_frames({"corpus": load_corpus(corpus_path)}, pii)
        corpus = gated["corpus"]
        log_dataset(corpus, corpus_path, "raw_corpus", "raw")
        frames, suites = with_pii_checks({"corpus": corpus.drop(columns=["metadata"])},
                                         {"corpus": corpus_expectations(section)}, scans,
                                         pii.policy)
        out = ctx.catalog.reindex_dir / "validation"
        failures, checked = run_suites(frames, suites, out, section.examples)
        found = pii_summary(scans, pii)
        mlflow.log_metrics({"expectations": checked, "failed_expectations": len(failures),
                            **pii_metrics(found["counts"], pii.kinds)})
        if failures:
            report = ValidationReport(False, {"corpus": len(corpus)}, checked, failures, found)
            text = failure_message(report, {"corpus": corpus_path})
            if pii.policy == "fail" and found["total"]:
                text += "\n" + describe_findings(scans, {"corpus": corpus_path}, pii.examples)
            raise ValidationFailed(text)
        if (warning := pii_warning(found)) is not None:
            log.warning("reindex: %s", warning)
        log.info("reindex: corpus valid (%d documents, %d expectations)", len(corpus), checked)
    return {"documents": len(corpus), "expectations": checked, "corpus_md5": file_md5(corpus_path),
            "pii": found["counts"]}


def reindex_table_step(prepare: PrepareConfig, index: IndexConfig, promote: PromoteConfig,
                       pii: PiiConfig, ctx: StageContext) -> dict[str, Any]:
    """Chunk the corpus and bring the champion's table up to date with the champion retriever."""
    import mlflow

    from tasks.lib.chunking import chunk_corpus
    from tasks.lib.data import load_corpus
    from tasks.lib.models import cached_retriever
    from tasks.lib.registry import CHAMPION, RegistryRef, adapter_dir, resolve_release
    from tasks.lib.resolve import load_tokenizer, resolve_model_dir
    from tasks.lib.search import connect
    from tasks.lib.shards import sharded_encoder
    from tasks.lib.tables import update_table
    from tasks.lib.tracking import stage_run

    cat = ctx.catalog
    reg = RegistryRef.of(ctx.tracking, promote, cat, ctx.lock)
    with stage_run(ctx, "reindex_table", prepare, index, pii):
        release = resolve_release(reg, CHAMPION)
        check_release_settings(release.tags, prepare)
        base_dir = resolve_model_dir(release.retriever_base, ctx.models.allow_download,
                                     cat.models_dir)
        corpus = corpus_to_index(load_corpus(str(cat.corpus_path)), pii)
        chunks = [c.__dict__ for c in chunk_corpus(corpus, load_tokenizer(base_dir), prepare)]
        if not chunks:
            raise DataError(str(cat.corpus_path), None, None, "no chunks to index")
        adapter = adapter_dir(reg, reg.retriever_model, release.retriever_version)
        model = cached_retriever(str(base_dir), str(adapter), index.device,  # evaluate reuses it
                                 index.precision)
        stats = update_table(connect(release.index_uri), release.table, model, chunks, index,
                             sharded_encoder(base_dir, adapter, index))
        mlflow.log_metrics({k: v for k, v in stats.items()
                            if isinstance(v, int | float) and k != "version"})
        mlflow.set_tags({"index.table": release.table, "index.version": str(stats["version"]),
                         "release.retriever_version": str(release.retriever_version)})
        log.info("reindex: table %s v%d -> v%d (%d embedded, %d deleted, %d unchanged) in %.1f s",
                 release.table, release.table_version, stats["version"], stats["embedded"],
                 stats["deleted"], stats["unchanged"], stats["seconds"])
    return {**stats, "index_uri": release.index_uri, "pinned_version": release.table_version,
            "release": release.retriever_version, "doc_ids": sorted({c["doc_id"] for c in chunks}),
            "retriever": {"base_dir": str(base_dir), "adapter_dir": str(adapter)}}


def evaluate_reindexed_step(section: EvaluateConfig, index: IndexConfig, ctx: StageContext,
                            table: dict[str, Any]) -> dict[str, Any]:
    """Retrieval metrics (REINDEX_METHODS) of the new table version, as evaluate computes them."""
    import mlflow

    from tasks.lib.data import read_jsonl
    from tasks.lib.models import cached_retriever
    from tasks.lib.retrieval_eval import METRICS, run_queries, summarize_method
    from tasks.lib.search import connect, open_pinned
    from tasks.lib.tracking import mlflow_key, stage_run

    eval_path = ctx.catalog.eval_qa_path
    if not eval_path.is_file():
        raise ConfigError(f"{eval_path} not found: run the pipeline once before reindexing")
    with stage_run(ctx, "evaluate_reindexed", section):
        questions = answerable(read_jsonl(eval_path), set(table["doc_ids"]))
        if section.max_questions:
            questions = questions[: section.max_questions]
        if not questions:
            raise DataError(str(eval_path), None, "doc_ids",
                            "no eval question refers only to documents still in the corpus")
        opened = open_pinned(connect(table["index_uri"], create=False),
                             {"table": table["table"], "version": table["version"]})
        retriever = table["retriever"]  # the model reindex_table embedded with (loaded once)
        model = cached_retriever(retriever["base_dir"], retriever["adapter_dir"], index.device,
                                 index.precision)
        metrics: dict[str, float] = {}
        for name, mode in REINDEX_METHODS.items():
            scores, seconds = run_queries(questions, opened, mode, model, section, index)
            summary = summarize_method(scores, seconds, section, ctx.seed)
            metrics |= {f"retrieval.{name}.{m}": round(summary[m]["mean"], 4) for m in METRICS}
            metrics[f"retrieval.{name}.p95_ms"] = round(summary["latency"]["p95_ms"], 2)
        mlflow.log_metrics({mlflow_key(k): v for k, v in metrics.items()})
        mlflow.log_metric("questions", len(questions))
    return {"questions": len(questions), "metrics": metrics}


def pin_release_step(promote: PromoteConfig, ctx: StageContext, table: dict[str, Any],
                     evaluation: dict[str, Any]) -> dict[str, Any]:
    """Point the champion's index tags at the new version if the retrieval rules hold."""
    import mlflow

    from tasks.lib import registry
    from tasks.lib.choice import METHOD_TAG, resolve_chosen
    from tasks.lib.files import file_md5, write_json
    from tasks.lib.gate import check_rule
    from tasks.lib.tracking import stage_run

    reg = registry.RegistryRef.of(ctx.tracking, promote, ctx.catalog, ctx.lock)
    with stage_run(ctx, "pin_release", promote):
        c = registry.client(reg)
        champion = registry.alias_version(c, reg.retriever_model, registry.CHAMPION)
        if champion is None or int(champion.version) != table["release"]:
            raise ConfigError("the champion changed during the reindex run; not pinning")
        recorded = registry.version_metrics(c, champion)
        # retrieval.chosen: the champion's method (fusion, which the gate judged, before choices)
        rules = resolve_chosen(promote.gate, champion.tags.get(METHOD_TAG) or "fusion")
        rows = [check_rule(rule, evaluation["metrics"][rule.metric], recorded.get(rule.metric))
                for rule in retrieval_rules(rules) if rule.metric in evaluation["metrics"]]
        held = all(r["passed"] for r in rows)
        unchanged = table["version"] == table["pinned_version"]
        version = str(champion.version)
        if held and not unchanged:
            for key, value in {"index.previous_version": str(table["pinned_version"]),
                               "index.version": str(table["version"]),
                               "index.rows": str(table["rows"]),
                               "data.corpus_md5": file_md5(ctx.catalog.corpus_path) or "missing",
                               "reindex.run_id": ctx.parent_run_id or "",
                               "reindex.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                               }.items():
                c.set_model_version_tag(reg.retriever_model, version, key, value)
            failpoint("reindex.pin")  # crash tests: the record moved, the portable model not yet
        if held:  # the portable model too (also repairs one a crash left behind)
            registry.repin_rag(reg, int(version), int(table["version"]))
        outcome = ("unchanged" if unchanged else "pinned" if held else "kept")
        summary = {
            "unchanged": f"nothing changed in the corpus: v{table['version']} stays pinned",
            "pinned": f"release v{table['release']} now serves table {table['table']} "
                      f"v{table['version']} (was v{table['pinned_version']})",
            "kept": f"retrieval did not hold on v{table['version']}: release v{table['release']} "
                    f"keeps serving v{table['pinned_version']}. Failed: " + " | ".join(
                        f"{r['metric']}: " + "; ".join(ch["text"] for ch in r["checks"]
                                                       if not ch["passed"])
                        for r in rows if not r["passed"])}[outcome]
        decision = {"outcome": outcome, "summary": summary, "rules": rows,
                    "questions": evaluation["questions"], "table": {k: table[k] for k in (
                        "table", "version", "pinned_version", "rows", "embedded", "deleted",
                        "unchanged")}}
        path = write_json(ctx.catalog.reindex_dir / "reindex.json", decision)
        mlflow.log_artifact(str(path), "reindex")
        mlflow.set_tag("reindex.outcome", outcome)
        (log.info if held else log.warning)("reindex: %s", summary)
    return decision


# ---- Prefect tasks (I/O and idempotent index writes: retried) --------------------------------


@task(name="validate_corpus", **IO_RETRIES)
def validate_corpus(section: ValidateConfig, pii: PiiConfig, ctx: StageContext) -> dict[str, Any]:
    return validate_corpus_step(section, pii, ctx)


@task(name="reindex_table", **IO_RETRIES)
def reindex_table(prepare: PrepareConfig, index: IndexConfig, promote: PromoteConfig,
                  pii: PiiConfig, ctx: StageContext, corpus: dict[str, Any]) -> dict[str, Any]:
    return reindex_table_step(prepare, index, promote, pii, ctx)


@task(name="evaluate_reindexed", **IO_RETRIES)
def evaluate_reindexed(section: EvaluateConfig, index: IndexConfig, ctx: StageContext,
                       table: dict[str, Any]) -> dict[str, Any]:
    return evaluate_reindexed_step(section, index, ctx, table)


@task(name="pin_release", **IO_RETRIES)
def pin_release(promote: PromoteConfig, ctx: StageContext, table: dict[str, Any],
                evaluation: dict[str, Any]) -> dict[str, Any]:
    return pin_release_step(promote, ctx, table, evaluation)
