"""Pure pieces of search, index and train_retriever."""

import pytest

from tasks.lib.errors import DataError
from tasks.lib.tables import plan_changes, sql_list, table_name
from tasks.lib.search import best_per_doc, collapse_to_docs, rrf_fuse
from tasks.train_retriever import best_chunk, pick_negatives, training_pairs


def hit(cid, doc):
    return {"chunk_id": cid, "doc_id": doc, "text": cid}


def test_rrf_fuse_rewards_agreement():
    bm25 = [hit("a#0", "a"), hit("b#0", "b"), hit("c#0", "c")]
    vec = [hit("b#0", "b"), hit("d#0", "d"), hit("a#0", "a")]
    fused = rrf_fuse([bm25, vec], rrf_k=60)
    assert [h["chunk_id"] for h in fused] == ["b#0", "a#0", "d#0", "c#0"]
    assert fused[0]["score"] == pytest.approx(1 / 62 + 1 / 61)


def test_collapse_and_best_per_doc_keep_first_occurrence():
    hits = [hit("a#1", "a"), hit("b#0", "b"), hit("a#0", "a"), hit("c#0", "c")]
    assert collapse_to_docs(hits) == ["a", "b", "c"]
    assert [h["chunk_id"] for h in best_per_doc(hits, 2)] == ["a#1", "b#0"]


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


CHUNKS = [
    {"chunk_id": "d#0", "doc_id": "d", "chunk_index": 0, "title": "Tariffs",
     "text": "Steady 12 is a fixed tariff."},
    {"chunk_id": "d#1", "doc_id": "d", "chunk_index": 1, "title": "Tariffs",
     "text": "Leaving Steady 12 early costs a 30 pound exit fee."},
    {"chunk_id": "e#0", "doc_id": "e", "chunk_index": 0, "title": None, "text": "Other."},
]


def test_best_chunk_follows_the_answer():
    chosen = best_chunk("Can I leave early?", "There is a 30 pound exit fee.", CHUNKS[:2])
    assert chosen["chunk_id"] == "d#1"


def test_training_pairs_use_passage_text_and_name_missing_docs():
    qa = [{"qid": "q1", "question": "Exit fee?", "answer": "30 pound exit fee.",
           "doc_ids": ["d"], "line": 1}]
    assert training_pairs(qa, CHUNKS, "qa.jsonl") == [
        {"anchor": "Exit fee?", "positive": "Tariffs\nLeaving Steady 12 early costs a 30 pound exit fee.",
         "doc_id": "d"}]
    bad = [{**qa[0], "doc_ids": ["zz"], "line": 7}]
    with pytest.raises(DataError, match="qa.jsonl, line 7: field 'doc_ids': question q1: document "
                                        "'zz' has no chunk"):
        training_pairs(bad, CHUNKS, "qa.jsonl")
    with pytest.raises(DataError, match="no chunks to train on"):
        training_pairs(qa, [], "qa.jsonl")


def test_pick_negatives_skips_own_document():
    ranked = [[0, 1, 2], [2, 0, 1]]
    assert pick_negatives(ranked, ["d", "e"], ["d", "d", "e"], 1) == [[2], [0]]
