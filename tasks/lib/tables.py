"""LanceDB chunk tables: one per retriever fingerprint, kept up to date incrementally.

Used by index (base and candidate tables) and reindex (the champion's table). One commit per data
change (a merge that upserts changed chunks and deletes removed ones); vectors of two models
never share a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tasks.lib.config import IndexConfig
from tasks.lib.diskfull import disk_full_as_error
from tasks.lib.errors import ConfigError
from tasks.lib.failpoints import failpoint
from tasks.lib.text import passage_text

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


def create_or_drop(db: Any, name: str, rows: list[dict[str, Any]], table_schema: Any):
    """Create a table with every row in one write; when the write fails (a full disk) a table
    that was not there before is dropped again (lance leaves a folder list_tables would show)."""
    existed = name in db.list_tables().tables
    try:
        return db.create_table(name, data=rows, schema=table_schema, mode="overwrite")
    except Exception:
        if not existed:
            try:
                db.drop_table(name)
            except Exception:  # noqa: BLE001 - the write's error is the one to show
                pass
        raise


def update_table(db: Any, name: str, model: Any, chunks: list[dict[str, Any]],
                 cfg: IndexConfig, encoder: Any = None) -> dict[str, Any]:
    """Bring one retriever's table up to date with the chunks; one commit per data change.

    `encoder` replaces `encode` (same signature), e.g. the sharded one of tasks/lib/shards.py."""
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
    with disk_full_as_error(f"LanceDB table {name}", db.uri, "paths.index_uri"):
        if table is None:  # one write creates the table with every row (nothing half-built)
            table = create_or_drop(db, name, rows, schema(dim))
        elif rows or plan.deleted:  # one merge commit: upsert changed, delete removed
            merge = table.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all()
            if plan.deleted:
                merge = merge.when_not_matched_by_source_delete(
                    f"{KEY} IN ({sql_list(plan.deleted)})")
            failpoint("index.merge")  # crash tests (":go": the kill lands inside the merge)
            merge.execute(rows or schema(dim).empty_table())  # a failed write commits no version
        ensure_indexes(table, cfg, rebuilt_text=bool(rows or plan.deleted)
                       or not any(i.columns == ["text"] for i in table.list_indices()))
    seconds = time.perf_counter() - started
    return {"table": name, "version": table.version, "rows": table.count_rows(),
            "embedded": len(plan.to_embed), "deleted": len(plan.deleted),
            "unchanged": plan.unchanged, "seconds": round(seconds, 3),
            "encode_seconds": round(encode_seconds, 3),
            "chunks_per_second": round(len(plan.to_embed) / seconds, 2) if plan.to_embed else None}
