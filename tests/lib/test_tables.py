"""LanceDB chunk tables (tasks/lib/tables.py): change planning, and incremental upkeep on a real
LanceDB with the tiny retriever."""

import pytest

from tasks.lib.config import IndexConfig
from tasks.lib.errors import ConfigError
from tasks.lib.search import connect, text_hits, vector_hits
from tasks.lib.tables import (
    build_rows,
    ensure_indexes,
    plan_changes,
    schema,
    sql_list,
    table_name,
    update_table,
)
from tests.conftest import RETRIEVER_CHUNKS as CHUNKS
from tests.conftest import retriever_chunk as chunk

CFG = IndexConfig(batch_size=8)


# ---- pure -----------------------------------------------------------------------------------------


def test_plan_changes_finds_new_changed_deleted():
    existing = {"a#0": "h1", "b#0": "h2", "gone#0": "h3"}
    chunks = [{"chunk_id": "a#0", "content_hash": "h1"}, {"chunk_id": "b#0", "content_hash": "NEW"},
              {"chunk_id": "c#0", "content_hash": "h4"}]
    plan = plan_changes(existing, chunks)
    assert [c["chunk_id"] for c in plan.to_embed] == ["b#0", "c#0"]
    assert plan.deleted == ["gone#0"] and plan.unchanged == 1


def test_sql_list_quotes():
    assert sql_list(["a", "o'k"]) == "'a', 'o''k'"
    assert table_name("abc") == "chunks_abc"


def test_build_rows_store_the_embedded_passage_text():
    titled = {**CHUNKS[0], "title": "Meters", "chunk_index": "2"}
    [row] = build_rows([titled], [[0.5, 0.5]])
    assert row == {"chunk_id": "meter#0", "doc_id": "meter", "chunk_index": 2,
                   "text": "Meters\n" + CHUNKS[0]["text"], "content_hash": CHUNKS[0]["content_hash"],
                   "vector": [0.5, 0.5]}
    with pytest.raises(ValueError):
        build_rows(CHUNKS, [[0.0]])  # one vector per chunk, or nothing


# ---- effects: a real LanceDB -------------------------------------------------------------------


def test_incremental_add_change_delete(tiny_retriever, tmp_path):
    _, model = tiny_retriever
    db = connect(str(tmp_path / "db"))
    first = update_table(db, "t", model, CHUNKS, CFG)
    assert (first["rows"], first["embedded"], first["deleted"]) == (3, 3, 0)

    again = update_table(db, "t", model, CHUNKS, CFG)
    assert (again["embedded"], again["deleted"], again["version"]) == (0, 0, first["version"])

    changed = [chunk("meter#0", "Meter readings are due by the 9th of the month."), CHUNKS[1],
               chunk("solar#0", "SunTile panels export surplus power.")]
    third = update_table(db, "t", model, changed, CFG)
    assert (third["rows"], third["embedded"], third["deleted"], third["unchanged"]) == (3, 2, 1, 1)
    table = db.open_table("t")
    ids = sorted(table.to_arrow().column("chunk_id").to_pylist())
    assert ids == ["battery#0", "meter#0", "solar#0"]
    assert [h["doc_id"] for h in text_hits(table, "SunTile export", 3)][0] == "solar"
    assert not text_hits(table, "Night Owl", 3)  # the deleted chunk is gone from BM25 too
    assert "9th" in text_hits(table, "meter readings due", 1)[0]["text"]


def test_failed_update_leaves_previous_version_queryable(tiny_retriever, tmp_path, monkeypatch):
    _, model = tiny_retriever
    db = connect(str(tmp_path / "db"))
    before = update_table(db, "t", model, CHUNKS, CFG)

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-embedding")

    monkeypatch.setattr(model, "encode", boom)
    with pytest.raises(RuntimeError, match="killed"):
        update_table(db, "t", model, [*CHUNKS, chunk("new#0", "A new article.")], CFG)
    table = db.open_table("t")
    assert table.version == before["version"] and table.count_rows() == 3
    assert len(vector_hits(table, [0.1] * 32, 2)) == 2


def test_dimension_mismatch_is_refused(tiny_retriever, tmp_path):
    _, model = tiny_retriever
    db = connect(str(tmp_path / "db"))
    db.create_table("t", data=build_rows(CHUNKS[:1], [[0.0] * 8]), schema=schema(8))
    with pytest.raises(ConfigError, match="holds 8-d vectors but the retriever makes 32-d"):
        update_table(db, "t", model, CHUNKS, CFG)
    assert db.open_table("t").count_rows() == 1


def test_ann_index_past_threshold_keeps_results(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(600, 16)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [chunk(f"d{i}#0", f"text {i}") for i in range(600)]
    db = connect(str(tmp_path / "db"))
    table = db.create_table("t", data=build_rows(chunks, vectors.tolist()), schema=schema(16))
    cfg = IndexConfig(ann_min_rows=500, refine_factor=20)
    ensure_indexes(table, cfg, rebuilt_text=True)
    assert {tuple(i.columns) for i in table.list_indices()} == {("text",), ("vector",)}
    exact = np.argsort(-(vectors[:20] @ vectors.T), axis=1)[:, :5]
    found = [[int(h["chunk_id"][1:].split("#")[0]) for h in vector_hits(table, v, 5, cfg)]
             for v in vectors[:20]]
    recall = np.mean([len(set(f) & set(e)) / 5 for f, e in zip(found, exact, strict=True)])
    assert recall >= 0.9
    # An ef below limit x refine (which HNSW refuses) is raised to it, not an error per query.
    few = IndexConfig(ann_min_rows=500, refine_factor=20, ef=8)
    assert len(vector_hits(table, vectors[0], 5, few)) == 5
