"""index: embed chunks into LanceDB, one table per retriever fingerprint, incrementally.

Reads data/prepared/chunks.jsonl and the retrievers (base model, candidate adapter, and the
per-source adapters when train_retriever trained them); writes LanceDB
tables `chunks_<fingerprint>` under paths.index_uri (vector + full-text index, ANN index past
index.ann_min_rows), reports/index/index.json naming each table and its version (what later
stages read; no timings), and reports/index/metrics.json (seconds, chunks/s, bytes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from tasks.lib.config import IndexConfig
from tasks.lib.context import StageContext
from tasks.lib.errors import DataError
from tasks.lib.provenance import SOURCE_ROLES
from tasks.lib.runtime import IO_RETRIES
from tasks.lib.tables import table_name, update_table

log = logging.getLogger(__name__)

# What this run did and what it took -> reports/index/metrics.json; index.json holds only the state
# later stages read (table, version, rows), so a rerun that changes nothing rewrites the same bytes.
RUN_STATS = ("embedded", "deleted", "unchanged", "seconds", "encode_seconds", "chunks_per_second",
             "bytes")


def split_run_stats(stats: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the table's state, for index.json; this run's counts, timings and sizes, for metrics)."""
    return ({k: v for k, v in stats.items() if k not in RUN_STATS},
            {k: v for k, v in stats.items() if k in RUN_STATS})


@dataclass(frozen=True)
class Retriever:
    role: str  # base | candidate | candidate_real | candidate_synthetic (see SOURCE_ROLES)
    base_dir: Path
    adapter_dir: Path | None
    fingerprint: str


def retrievers(ctx: StageContext) -> list[Retriever]:
    """The base retriever and, when trained, the candidate (base + LoRA adapter), plus the
    adapters train_retriever trained on one question source alone (scored, never served)."""
    from tasks.lib.models import check_adapter_base, retriever_base_dir, retriever_fingerprint

    model_id = ctx.models.retriever_id
    base_dir = retriever_base_dir(ctx.models, ctx.catalog.models_dir)
    out = [Retriever("base", base_dir, None, retriever_fingerprint(model_id, base_dir, None))]
    adapter = ctx.catalog.retriever_adapter_dir
    if adapter.is_dir():
        check_adapter_base(adapter, base_dir, model_id)
        out.append(Retriever("candidate", base_dir, adapter,
                             retriever_fingerprint(model_id, base_dir, adapter)))
    for role, source in SOURCE_ROLES.items():
        adapter = ctx.catalog.retriever_sources_dir / source
        if adapter.is_dir():
            check_adapter_base(adapter, base_dir, model_id)
            out.append(Retriever(role, base_dir, adapter,
                                 retriever_fingerprint(model_id, base_dir, adapter)))
    return out


def index_role(db: Any, r: Retriever, chunks: list[dict[str, Any]], section: IndexConfig,
               index_uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bring one retriever's table up to date; (table info for index.json, its timings)."""
    import mlflow

    from tasks.lib.costs import dir_bytes
    from tasks.lib.models import load_retriever
    from tasks.lib.shards import sharded_encoder

    model = load_retriever(r.base_dir, r.adapter_dir, section.device, precision=section.precision)
    stats = update_table(db, table_name(r.fingerprint), model, chunks, section,
                         sharded_encoder(r.base_dir, r.adapter_dir, section))
    local = Path(index_uri) / f"{stats['table']}.lance"
    stats["bytes"] = dir_bytes(local) if local.is_dir() else None  # None: object store
    log.info("index %s: table %s v%d, %d rows (%d embedded, %d deleted, %d unchanged) in %.1f s",
             r.role, stats["table"], stats["version"], stats["rows"], stats["embedded"],
             stats["deleted"], stats["unchanged"], stats["seconds"])
    mlflow.set_tags({f"index.{r.role}.table": stats["table"],
                     f"index.{r.role}.version": str(stats["version"])})
    mlflow.log_metrics({f"{r.role}_{k}": v for k, v in stats.items()
                        if isinstance(v, int | float) and k != "version"})
    info, timings = split_run_stats(stats)
    return ({**info, "fingerprint": r.fingerprint,
             "adapter_dir": str(r.adapter_dir) if r.adapter_dir else None}, timings)


def missing_tables(cat: Any) -> str | None:
    """Why index.json cannot be reused: a table or version it names is gone (DVC does not
    track LanceDB), or None when every one opens."""
    from tasks.lib.errors import TunedexError
    from tasks.lib.search import connect, load_index_info, open_pinned

    try:
        info = load_index_info(cat)
        db = connect(info["index_uri"], create=False)
        for table in info["tables"].values():
            open_pinned(db, table)
    except TunedexError as err:
        return str(err)
    return None


def index_stage(section: IndexConfig, ctx: StageContext) -> dict[str, Any]:
    """Index chunks for the base and candidate retrievers in the stage's MLflow run."""
    import mlflow

    from tasks.lib.data import read_jsonl
    from tasks.lib.files import write_json
    from tasks.lib.search import connect
    from tasks.lib.tracking import stage_run

    cat = ctx.catalog
    with stage_run(ctx, "index", section):
        chunks = read_jsonl(cat.chunks_path)
        if not chunks:
            raise DataError(str(cat.chunks_path), None, None,
                            "no chunks to index: the corpus is empty after validation")
        db = connect(cat.index_uri)
        tables, timings = {}, {}
        for r in retrievers(ctx):
            tables[r.role], timings[r.role] = index_role(db, r, chunks, section, cat.index_uri)
        result = {"index_uri": cat.index_uri, "retriever_id": ctx.models.retriever_id,
                  "tables": tables}
        write_json(cat.index_info_path, result)
        write_json(cat.stage_metrics_path("index"), timings)
        mlflow.log_artifact(str(cat.index_info_path), "index")
    return {**result, "index_info_path": str(cat.index_info_path)}


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="index", **IO_RETRIES)
def index(section: IndexConfig, ctx: StageContext, adapter: dict[str, Any]) -> dict[str, Any]:
    """Embed chunks into LanceDB with the base and the new adapter (`adapter`: train_retriever's
    result). Retried: a rerun is idempotent by content hash."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "index", lambda: index_stage(section, ctx),
                        lambda: missing_tables(ctx.catalog))
