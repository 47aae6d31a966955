"""Querying a chunk table (tasks/lib/search.py): rank fusion, documents from chunk hits, the
errors a reader sees."""

import pytest

from tasks.lib.errors import ServingError
from tasks.lib.search import best_per_doc, collapse_to_docs, connect, open_pinned, rrf_fuse, search


def hit(cid, doc):
    return {"chunk_id": cid, "doc_id": doc, "text": cid}


def test_rrf_fuse_rewards_agreement():
    bm25 = [hit("a#0", "a"), hit("b#0", "b"), hit("c#0", "c")]
    vec = [hit("b#0", "b"), hit("d#0", "d"), hit("a#0", "a")]
    fused = rrf_fuse([bm25, vec], rrf_k=60)
    assert [h["chunk_id"] for h in fused] == ["b#0", "a#0", "d#0", "c#0"]
    assert fused[0]["score"] == pytest.approx(1 / 62 + 1 / 61)


def test_rrf_fuse_breaks_ties_by_chunk_id():
    fused = rrf_fuse([[hit("z#0", "z")], [hit("a#0", "a")]], rrf_k=0)
    assert [(h["chunk_id"], h["score"]) for h in fused] == [("a#0", 1.0), ("z#0", 1.0)]


def test_collapse_and_best_per_doc_keep_first_occurrence():
    hits = [hit("a#1", "a"), hit("b#0", "b"), hit("a#0", "a"), hit("c#0", "c")]
    assert collapse_to_docs(hits) == ["a", "b", "c"]
    assert [h["chunk_id"] for h in best_per_doc(hits, 2)] == ["a#1", "b#0"]


def test_unknown_mode_is_refused():
    class Encoder:
        def encode(self, texts, **kwargs):
            return [[1.0, 0.0]]

    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'; expected one of "
                                         r"\('vector', 'bm25', 'fusion', 'fusion_native'\)"):
        search(None, "q", "fuzzy", 3, Encoder())


def test_a_reader_never_creates_a_missing_index(tmp_path):
    missing = tmp_path / "lancedb"
    with pytest.raises(ServingError, match=f"LanceDB index directory {missing} does not exist"):
        connect(str(missing), create=False)
    assert not missing.exists()
    db = connect(str(missing))  # a writer creates it
    assert missing.is_dir()
    with pytest.raises(ServingError, match="LanceDB table chunks_x is missing from .*; re-run the "
                                           "index stage"):
        open_pinned(db, {"table": "chunks_x", "version": 1})
    with pytest.raises(ServingError, match=r"chunks_x \(pinned by release v3\) is missing .*"
                                           "run `tunedex rollback`"):
        open_pinned(db, {"table": "chunks_x", "version": 1}, release=3)


def small_table(tmp_path):
    """12 chunks of 6 documents with FTS and 3-d unit vectors: enough for both rankings."""
    import numpy as np
    from lancedb.index import FTS

    words = ["cards cash visa", "refund return order", "delivery shipping order",
             "cash refund", "visa cards payment", "account login password"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        v = rng.normal(size=3)
        rows.append({"chunk_id": f"d{i // 2}#{i % 2}", "doc_id": f"d{i // 2}",
                     "text": f"{words[i // 2]} part {i % 2}",
                     "vector": (v / np.linalg.norm(v)).astype("float32")})
    table = connect(str(tmp_path / "db")).create_table("chunks", rows)
    table.create_index("text", config=FTS(), replace=True)
    return table


class Fixed:
    """An encoder returning one fixed unit vector."""

    def encode(self, texts, **kwargs):
        import numpy as np

        return np.array([[0.6, 0.8, 0.0]] * len(texts), dtype="float32")


def test_native_fusion_matches_ours(tmp_path):
    table = small_table(tmp_path)
    ours = search(table, "cards refund order", "fusion", 8, Fixed(), 60)
    native = search(table, "cards refund order", "fusion_native", 8, Fixed(), 60)
    # the same fused scores; only hits with equal scores may come in another order
    assert [round(h["score"], 6) for h in native] == [round(h["score"], 6) for h in ours]
    assert ({(h["chunk_id"], round(h["score"], 6)) for h in native}
            == {(h["chunk_id"], round(h["score"], 6)) for h in ours})


def test_hybrid_mode_is_fusion_with_a_warning(tmp_path, caplog):
    table = small_table(tmp_path)
    with caplog.at_level("WARNING", logger="tasks.lib.search"):
        old = search(table, "cash", "hybrid", 5, Fixed(), 60)
    assert old == search(table, "cash", "fusion", 5, Fixed(), 60)
    assert "search mode 'hybrid' is deprecated: use 'fusion'" in caplog.text
