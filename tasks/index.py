"""index: embed chunks into LanceDB, one table per retriever fingerprint, incrementally.

Reads data/prepared/chunks.jsonl and the retrievers (base model, candidate adapter); writes LanceDB
tables `chunks_<fingerprint>` under paths.index_uri (vector + full-text index, ANN index past
index.ann_min_rows) and reports/index/index.json naming each table and its version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import Config, IndexConfig
from tasks.errors import ConfigError, DataError
from tasks.prepare import passage_text
from tasks.runtime import IO_RETRIES
from tasks.search import connect, index_path

log = logging.getLogger(__name__)

KEY = "chunk_id"

# ---- pure: change planning, rows --------------------------------------------------------------


@dataclass(frozen=True)
class ChangePlan:
    to_embed: list[dict[str, Any]]  # new or changed chunks
    deleted: list[str]  # chunk ids no longer in the corpus
    unchanged: int


def plan_changes(existing: dict[str, str], chunks: list[dict[str, Any]]) -> ChangePlan:
    """Compare stored content hashes with the current chunks: what to embed, what to delete."""
    current = {c[KEY] for c in chunks}
    to_embed = [c for c in chunks if existing.get(c[KEY]) != c["content_hash"]]
    deleted = sorted(set(existing) - current)
    return ChangePlan(to_embed, deleted, len(chunks) - len(to_embed))


def table_name(fingerprint: str) -> str:
    """The LanceDB table of one retriever: vectors of two models never share a table."""
    return f"chunks_{fingerprint}"


def sql_list(values: list[str]) -> str:
    """A SQL IN-list of quoted strings."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def build_rows(chunks: list[dict[str, Any]], vectors: Any) -> list[dict[str, Any]]:
    """Table rows: chunk fields, the text that was embedded, and its vector."""
    return [{KEY: c[KEY], "doc_id": c["doc_id"], "chunk_index": int(c["chunk_index"]),
             "text": passage_text(c), "content_hash": c["content_hash"], "vector": v}
            for c, v in zip(chunks, vectors, strict=True)]


def schema(dim: int):
    """Arrow schema of a chunk table with `dim`-dimensional float32 vectors."""
    import pyarrow as pa

    return pa.schema([pa.field(KEY, pa.string()), pa.field("doc_id", pa.string()),
                      pa.field("chunk_index", pa.int32()), pa.field("text", pa.string()),
                      pa.field("content_hash", pa.string()),
                      pa.field("vector", pa.list_(pa.float32(), dim))])


# ---- effects: LanceDB, encoding --------------------------------------------------------------


def open_table_or_none(db: Any, name: str):
    """Open a table, or None when it does not exist (or was never committed)."""
    if name not in db.list_tables().tables:
        return None
    try:
        return db.open_table(name)
    except (ValueError, FileNotFoundError, RuntimeError):
        return None


def table_dim(table: Any) -> int:
    """The vector dimension of an existing table."""
    return table.schema.field("vector").type.list_size


def stored_hashes(table: Any) -> dict[str, str]:
    """chunk_id -> content_hash of every row in a table."""
    data = table.to_arrow().select([KEY, "content_hash"]).to_pydict()
    return dict(zip(data[KEY], data["content_hash"], strict=True))


def encode(model: Any, texts: list[str], batch_size: int) -> Any:
    """Unit-length float32 embeddings (cosine = dot product)."""
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=len(texts) > batch_size)


def ensure_indexes(table: Any, cfg: IndexConfig, rebuilt_text: bool) -> None:
    """Full-text index on `text`; an ANN index once the table is large enough."""
    from lancedb.index import FTS, IvfHnswSq

    if rebuilt_text:
        table.create_index("text", config=FTS(), replace=True)
    rows = table.count_rows()
    if rows < cfg.ann_min_rows:
        return
    has_ann = any(i.columns == ["vector"] for i in table.list_indices())
    if has_ann:
        if rebuilt_text:  # rows changed: fold them into the ANN index; keep every old version
            # (releases pin versions; lancedb's default would delete those older than 7 days)
            table.optimize(cleanup_older_than=timedelta(days=365 * 100))
        return
    # HNSW graphs inside IVF partitions with scalar-quantised vectors: on 100k x 384 this kept
    # Recall@10 at 1.0 (with refine_factor) where IVF-PQ lost a quarter of the neighbours.
    partitions = cfg.ann_partitions or max(1, rows // 1_000_000)
    table.create_index("vector", config=IvfHnswSq(distance_type="cosine",
                                                  num_partitions=partitions))


def update_table(db: Any, name: str, model: Any, chunks: list[dict[str, Any]],
                 cfg: IndexConfig, encoder: Any = None) -> dict[str, Any]:
    """Bring one retriever's table up to date with the chunks; one commit per data change.

    `encoder` replaces `encode` (same signature), e.g. the sharded one of tasks/shards.py."""
    dim = model.get_embedding_dimension()
    table = open_table_or_none(db, name)
    if table is not None and table_dim(table) != dim:
        raise ConfigError(f"LanceDB table {name} holds {table_dim(table)}-d vectors but the "
                          f"retriever makes {dim}-d ones; drop the table or fix the model")
    plan = plan_changes(stored_hashes(table) if table is not None else {}, chunks)
    started = time.perf_counter()
    vectors = (encoder or encode)(model, [passage_text(c) for c in plan.to_embed], cfg.batch_size)
    encode_seconds = time.perf_counter() - started
    rows = build_rows(plan.to_embed, vectors)
    if table is None:  # one write creates the table with every row (nothing half-built)
        table = db.create_table(name, data=rows, schema=schema(dim), mode="overwrite")
    elif rows or plan.deleted:  # one merge commit: upsert changed, delete removed
        merge = table.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all()
        if plan.deleted:
            merge = merge.when_not_matched_by_source_delete(f"{KEY} IN ({sql_list(plan.deleted)})")
        merge.execute(rows or schema(dim).empty_table())
    ensure_indexes(table, cfg, rebuilt_text=bool(rows or plan.deleted)
                   or not any(i.columns == ["text"] for i in table.list_indices()))
    seconds = time.perf_counter() - started
    return {"table": name, "version": table.version, "rows": table.count_rows(),
            "embedded": len(plan.to_embed), "deleted": len(plan.deleted),
            "unchanged": plan.unchanged, "seconds": round(seconds, 3),
            "encode_seconds": round(encode_seconds, 3),
            "chunks_per_second": round(len(plan.to_embed) / seconds, 2) if plan.to_embed else None}


@dataclass(frozen=True)
class Retriever:
    role: str  # base | candidate
    base_dir: Path
    adapter_dir: Path | None
    fingerprint: str


def retrievers(cfg: Config) -> list[Retriever]:
    """The base retriever and, when trained, the candidate (base + LoRA adapter)."""
    from tasks.models import check_adapter_base, retriever_base_dir, retriever_fingerprint
    from tasks.train_retriever import adapter_dir

    base_dir = retriever_base_dir(cfg)
    out = [Retriever("base", base_dir, None,
                     retriever_fingerprint(cfg.models.retriever_id, base_dir, None))]
    adapter = adapter_dir(cfg)
    if adapter.is_dir():
        check_adapter_base(adapter, cfg.models.retriever_id, base_dir)
        out.append(Retriever("candidate", base_dir, adapter,
                             retriever_fingerprint(cfg.models.retriever_id, base_dir, adapter)))
    return out


def index_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Index chunks for the base and candidate retrievers in the stage's MLflow run."""
    import mlflow

    from tasks.data import read_jsonl
    from tasks.models import load_retriever
    from tasks.shards import sharded_encoder
    from tasks.tracking import stage_run
    from tasks.train_retriever import dir_bytes

    with stage_run(cfg, "index", parent_run_id):
        chunks = read_jsonl(Path(cfg.paths.prepared_dir) / "chunks.jsonl")
        if not chunks:
            raise DataError(str(Path(cfg.paths.prepared_dir) / "chunks.jsonl"), None, None,
                            "no chunks to index: the corpus is empty after validation")
        db = connect(cfg.paths.index_uri)
        tables: dict[str, Any] = {}
        for r in retrievers(cfg):
            model = load_retriever(r.base_dir, r.adapter_dir, cfg.index.device)
            stats = update_table(db, table_name(r.fingerprint), model, chunks, cfg.index,
                                 sharded_encoder(r.base_dir, r.adapter_dir, cfg.index))
            local = Path(cfg.paths.index_uri) / f"{stats['table']}.lance"
            stats["bytes"] = dir_bytes(local) if local.is_dir() else None  # None: object store
            tables[r.role] = {**stats, "fingerprint": r.fingerprint,
                              "adapter_dir": str(r.adapter_dir) if r.adapter_dir else None}
            log.info("index %s: table %s v%d, %d rows (%d embedded, %d deleted, %d unchanged) "
                     "in %.1f s", r.role, stats["table"], stats["version"], stats["rows"],
                     stats["embedded"], stats["deleted"], stats["unchanged"], stats["seconds"])
            mlflow.set_tags({f"index.{r.role}.table": stats["table"],
                             f"index.{r.role}.version": str(stats["version"])})
            mlflow.log_metrics({f"{r.role}_{k}": v for k, v in stats.items()
                                if isinstance(v, int | float) and k != "version"})
        result = {"index_uri": cfg.paths.index_uri, "retriever_id": cfg.models.retriever_id,
                  "tables": tables}
        path = index_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        mlflow.log_artifact(str(path), "index")
    return result


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="index", **IO_RETRIES)
def index(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Embed chunks into LanceDB (retried: a rerun is idempotent by content hash)."""
    return index_stage(cfg, parent_run_id)
