"""The reindex flow: refresh the champion's index from the corpus, without training anything.

validate the corpus (GX) -> incremental index with the champion retriever -> retrieval
evaluation on the pinned eval questions -> pin the new table version on the champion only if
the gate's retrieval rules hold (floors and tolerated regressions; no improvement is required).
Reads paths.corpus_path, data/prepared/eval_qa.jsonl and the registry; writes a new version of
the champion's LanceDB table, reports/reindex/ and one MLflow parent run with nested step runs.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.lib.config import DEFAULT_CONFIG_PATH, load_config
from tasks.lib.context import StageContext
from tasks.lib.errors import ConfigError
from tasks.lib.lock import write_lock
from tasks.lib.registry import check_registry, registry_ref
from tasks.lib.runtime import clean_killed_runs, notify_failure, until_cancelled
from tasks.lib.tracking import pipeline_run
from tasks.reindex import (
    evaluate_reindexed,
    pin_release,
    reindex_table,
    retrieval_rules,
    validate_corpus,
)


@flow(name="tunedex-reindex", flow_run_name="{config_path}", on_failure=[notify_failure],
      on_crashed=[notify_failure], on_cancellation=[notify_failure])
def reindex(config_path: str = DEFAULT_CONFIG_PATH,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Re-index the corpus with the champion retriever; pin the new version if retrieval holds."""
    cfg = load_config(config_path, overrides)
    reg = registry_ref(cfg)
    check_registry(reg)
    if not retrieval_rules(cfg.promote.gate):
        raise ConfigError("promote.gate has no rule on retrieval.bm25|lora|fusion|chosen metrics: a "
                          "reindex would have nothing to check before pinning")
    with write_lock(cfg.lock, f"reindex {config_path}"):
        clean_killed_runs(reg.catalog)  # temp outputs of a killed run
        return until_cancelled("reindex", run_steps, cfg)


def run_steps(cfg: Any) -> dict[str, Any]:
    """The four steps inside one MLflow parent run (the write lock is held)."""
    with pipeline_run(cfg, run_name="reindex") as run_id:
        ctx = StageContext.of(cfg, run_id)
        # 1. Corpus expectations and the PII gate (the QA file is the pipeline's business).
        corpus = validate_corpus(cfg.validate_, cfg.pii, ctx)
        # 2. Chunk and embed what changed into the champion's table (one merge commit).
        table = reindex_table(cfg.prepare, cfg.index, cfg.promote, cfg.pii, ctx, corpus)
        # 3. Retrieval metrics of the new version on the eval questions whose documents remain.
        metrics = evaluate_reindexed(cfg.evaluate, cfg.index, ctx, table)
        # 4. Move the champion's pin to the new version only if the retrieval rules pass.
        pinned = pin_release(cfg.promote, ctx, table, metrics)
    return {"run_id": run_id, "corpus": corpus, "index": table, "metrics": metrics, "pin": pinned}
