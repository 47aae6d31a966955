"""Querying a chunk table: vector, full-text (BM25) and fusion (reciprocal-rank fusion of both).

`fusion` fuses our two hit lists in Python (rrf_fuse); `fusion_native` asks LanceDB for the same
thing in one hybrid query (the same FTS match query, cosine vector search and RRF constant, via
lancedb.rerankers.RRFReranker: no embedding registry, no network). The two differ only in the
order of hits with equal fused scores.

Used by evaluate, train_generator (context), reindex and serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

HIT_COLUMNS = ["chunk_id", "doc_id", "text"]
MODES = ("vector", "bm25", "fusion", "fusion_native")
FUSION_DEPTH = 10  # context retrieval by fusion: hits fused per list, as a multiple of k
LEGACY_MODES = {"hybrid": "fusion"}  # old name -> current (accepted with a deprecation warning)

# ---- pure -------------------------------------------------------------------------------------


def rrf_fuse(rankings: Sequence[Sequence[dict[str, Any]]], rrf_k: int = 60) -> list[dict[str, Any]]:
    """Fuse ranked hit lists by reciprocal rank: score = sum 1 / (rrf_k + rank)."""
    scores: dict[str, float] = {}
    hits: dict[str, dict[str, Any]] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit["chunk_id"]] = scores.get(hit["chunk_id"], 0.0) + 1.0 / (rrf_k + rank)
            hits.setdefault(hit["chunk_id"], hit)
    order = sorted(scores, key=lambda cid: (-scores[cid], cid))
    return [{**hits[cid], "score": scores[cid]} for cid in order]


def collapse_to_docs(hits: Sequence[dict[str, Any]]) -> list[str]:
    """Document ranking from chunk hits: each document at its best chunk's rank."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(hit["doc_id"], None)
    return list(seen)


def best_per_doc(hits: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The top-k documents, each represented by its best-ranked chunk hit."""
    best: dict[str, dict[str, Any]] = {}
    for hit in hits:
        best.setdefault(hit["doc_id"], hit)
    return list(best.values())[:k]


# ---- effects: LanceDB queries -------------------------------------------------------------------


def connect(index_uri: str, create: bool = True):
    """Connect to a LanceDB URI (local directory or object store). Readers pass create=False:
    a missing local directory is an error naming it, not a new empty index."""
    import lancedb

    from tasks.lib.errors import ServingError

    if "://" not in index_uri:
        if not create and not Path(index_uri).is_dir():
            raise ServingError(f"LanceDB index directory {index_uri} does not exist (run from the "
                               "project directory, or check paths.index_uri / the release's "
                               "index.uri tag)")
        Path(index_uri).mkdir(parents=True, exist_ok=True)
    return lancedb.connect(index_uri)


def load_index_info(cat: Any) -> dict[str, Any]:
    """The tables recorded by the last index run (error naming the stage when absent)."""
    from tasks.lib.files import read_json

    return read_json(cat.index_info_path, "index")


def open_pinned(db: Any, info: dict[str, Any], release: int | None = None):
    """Open a table at the version recorded for it (read-only), naming it when missing."""
    from tasks.lib.errors import ServingError, first_line

    where = f" (pinned by release v{release})" if release is not None else ""
    fix = ("run `tunedex rollback` to serve the previous release, or re-run the pipeline"
           if release is not None else "re-run the index stage")
    if info["table"] not in db.list_tables().tables:
        raise ServingError(f"LanceDB table {info['table']}{where} is missing from {db.uri}; {fix}")
    table = db.open_table(info["table"])
    try:
        table.checkout(info["version"])
    except Exception as err:  # noqa: BLE001 - lance reports a missing version in several ways
        raise ServingError(f"LanceDB table {info['table']} has no version {info['version']}{where} "
                           f"({first_line(err, 200)}); {fix}") from None
    return table


def vector_hits(table: Any, vector: Any, k: int, index_cfg: Any = None) -> list[dict[str, Any]]:
    """Top-k chunks by cosine similarity to a unit query vector (ANN knobs from index_cfg)."""
    query = (table.search(vector, vector_column_name="vector").distance_type("cosine")
             .select([*HIT_COLUMNS, "_distance"]).limit(k))
    if index_cfg is not None:  # ignored by a flat scan, used once the table has an ANN index
        query = query.nprobes(index_cfg.nprobes).refine_factor(index_cfg.refine_factor)
        if index_cfg.ef:  # HNSW needs at least as many candidates as the rows it hands on
            query = query.ef(max(index_cfg.ef, k * max(1, index_cfg.refine_factor)))
    rows = query.to_list()
    return [{**{c: r[c] for c in HIT_COLUMNS}, "score": 1.0 - r["_distance"]} for r in rows]


def text_hits(table: Any, query: str, k: int) -> list[dict[str, Any]]:
    """Top-k chunks by BM25 over the full-text index (the query is matched, not parsed)."""
    from lancedb.query import MatchQuery

    rows = (table.search(MatchQuery(query, "text"), query_type="fts")
            .select([*HIT_COLUMNS, "_score"]).limit(k).to_list())
    return [{**{c: r[c] for c in HIT_COLUMNS}, "score": r["_score"]} for r in rows]


def native_fusion_hits(table: Any, query: str, vector: Any, k: int, rrf_k: int,
                       index_cfg: Any = None) -> list[dict[str, Any]]:
    """Top-k chunks by LanceDB's own hybrid query with its RRF reranker (cf. rrf_fuse)."""
    from lancedb.query import MatchQuery
    from lancedb.rerankers import RRFReranker

    query_builder = (table.search(query_type="hybrid", vector_column_name="vector").vector(vector)
                     .text(MatchQuery(query, "text")).distance_type("cosine")
                     .rerank(RRFReranker(K=rrf_k)).select(HIT_COLUMNS).limit(k))
    if index_cfg is not None:
        query_builder = query_builder.nprobes(index_cfg.nprobes).refine_factor(index_cfg.refine_factor)
    return [{**{c: r[c] for c in HIT_COLUMNS}, "score": r["_relevance_score"]}
            for r in query_builder.to_list()]


def canonical_mode(mode: str) -> str:
    """The current name of a search mode; an old one ("hybrid") is accepted with a warning."""
    import logging

    if mode in LEGACY_MODES:
        logging.getLogger(__name__).warning("search mode %r is deprecated: use %r", mode,
                                            LEGACY_MODES[mode])
        return LEGACY_MODES[mode]
    return mode


def encode_query(model: Any, query: str) -> Any:
    """A unit-length query embedding."""
    return model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0]


def search(table: Any, query: str, mode: str, k: int, model: Any = None, rrf_k: int = 60,
           index_cfg: Any = None) -> list[dict[str, Any]]:
    """Top-k chunk hits for a query: vector (needs model), bm25, or fusion (RRF of both; ours or
    LanceDB's native hybrid query)."""
    mode = canonical_mode(mode)
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; expected one of {MODES}")
    if mode == "bm25":
        return text_hits(table, query, k)
    vector = encode_query(model, query)
    if mode == "vector":
        return vector_hits(table, vector, k, index_cfg)
    if mode == "fusion_native":
        return native_fusion_hits(table, query, vector, k, rrf_k, index_cfg)
    if mode == "fusion":
        return rrf_fuse([text_hits(table, query, k), vector_hits(table, vector, k, index_cfg)],
                        rrf_k)[:k]
    raise ValueError(f"unknown search mode {mode!r}; expected one of {MODES}")


def open_retriever(info: dict[str, Any], role: str, base_dir: Path, device: str = "auto",
                   precision: str = "fp32") -> tuple[Any, Any]:
    """(pinned table, retriever model) of one indexed role ("base" or "candidate")."""
    from tasks.lib.models import cached_retriever

    table_info = info["tables"][role]
    table = open_pinned(connect(info["index_uri"], create=False), table_info)
    adapter = table_info["adapter_dir"]
    return table, cached_retriever(str(base_dir), adapter, device, precision)


def retrieve_contexts(table: Any, model: Any, questions: list[str], k: int,
                      index_cfg: Any = None) -> list[list[dict[str, Any]]]:
    """Top-k chunk hits per question by vector search (the context of rag/hybrid answers when
    the chosen method is a vector search)."""
    vectors = model.encode(questions, batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True)
    return [vector_hits(table, v, k, index_cfg) for v in vectors]


def method_contexts(table: Any, model: Any, questions: list[str], k: int, mode: str,
                    rrf_k: int = 60, index_cfg: Any = None) -> list[list[dict[str, Any]]]:
    """Top-k chunk hits per question by a search mode (vector batched; fusion fuses lists
    FUSION_DEPTH times deeper than k before the cut, as a search for documents would)."""
    if mode == "vector":
        return retrieve_contexts(table, model, questions, k, index_cfg)
    depth = k if mode == "bm25" else k * FUSION_DEPTH
    return [search(table, q, mode, depth, model, rrf_k, index_cfg)[:k] for q in questions]
