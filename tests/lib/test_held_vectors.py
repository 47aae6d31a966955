"""Exact vector search over held chunks (tasks/lib/held_vectors.py) against LanceDB's flat scan
on real tables, and LoadedRelease serving from it."""

from dataclasses import replace

import numpy as np
import pytest

from tasks.lib.config import IndexConfig
from tasks.lib.held_vectors import hold_vectors
from tasks.lib.search import connect, search, vector_hits
from tasks.lib.serving import NOT_HELD, LoadedRelease

from .test_serving import SECTIONS, catalog, served

WORDS = ["cards cash visa", "refund return order", "delivery shipping order", "cash refund",
         "visa cards payment", "account login password", "plan price month", "order status"]


def unit(rng, n, dim=8):
    v = rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype("float32")


def chunk_rows(n, seed=0, duplicate_every=0):
    vectors = unit(np.random.default_rng(seed), n)
    if duplicate_every:  # equal vectors: equal scores, which row order must break
        vectors[duplicate_every::duplicate_every] = vectors[0]
    return [{"chunk_id": f"d{i // 2:03d}#{i % 2}", "doc_id": f"d{i // 2:03d}",
             "text": f"{WORDS[i % len(WORDS)]} part {i}", "vector": vectors[i]} for i in range(n)]


def pinned(tmp_path, rows):
    """A table with FTS over `rows`, pinned; a row added after the pin (never to be served)."""
    from lancedb.index import FTS

    table = connect(str(tmp_path / "lancedb")).create_table("chunks", rows)
    table.create_index("text", config=FTS(), replace=True)
    version = table.version
    late = {**rows[0], "chunk_id": "late#0", "doc_id": "late", "text": "cards cash visa late"}
    table.add([late])
    return table, version


@pytest.mark.parametrize("duplicate_every", [0, 7])
def test_held_hits_are_lancedb_flat_scan_hits(tmp_path, duplicate_every):
    table = connect(str(tmp_path / "db")).create_table("chunks", chunk_rows(60, 1, duplicate_every))
    held = hold_vectors(table, 50_000)
    queries = unit(np.random.default_rng(2), 25)
    queries[0] = held.vectors[0]  # its own row first, and the duplicates right behind it
    for query in queries:
        for k in (1, 5, 60, 100):
            ours, lance = held.hits(query, k), vector_hits(table, query, k, IndexConfig())
            assert [h["score"] for h in ours] == pytest.approx([h["score"] for h in lance], abs=1e-5)
            if not duplicate_every:
                assert [h["chunk_id"] for h in ours] == [h["chunk_id"] for h in lance]
                assert [h["text"] for h in ours] == [h["text"] for h in lance]
            else:  # equal scores may come in either order: the same hits above the last score
                last = ours[-1]["score"] + 1e-5
                assert ({h["chunk_id"] for h in ours if h["score"] > last}
                        == {h["chunk_id"] for h in lance if h["score"] > last})
                ties = [h["chunk_id"] for h in ours if abs(h["score"] - ours[0]["score"]) < 1e-6]
                assert ties == sorted(ties) or k == 1  # ours: equal scores in row order


def test_a_table_at_the_ann_threshold_or_with_an_ann_index_is_not_held(tmp_path):
    from lancedb.index import IvfPq

    table = connect(str(tmp_path / "db")).create_table("chunks", chunk_rows(300))
    assert hold_vectors(table, 300) is None and hold_vectors(table, 301) is not None
    table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=2,
                                              num_sub_vectors=2))
    assert hold_vectors(table, 50_000) is None


class Fixed:
    """An encoder returning one fixed unit vector (the query side of the comparison)."""

    def __init__(self, vector):
        self.vector = vector

    def encode(self, texts, **kwargs):
        return np.array([self.vector] * len(texts), dtype="float32")


@pytest.mark.parametrize("mode", ["vector", "fusion"])
def test_served_search_from_held_vectors_matches_lancedb_on_the_pinned_version(tmp_path, mode):
    table, version = pinned(tmp_path, chunk_rows(40, 3))
    release = LoadedRelease(served(tmp_path, "chunks", version), SECTIONS, catalog(tmp_path))
    held = release.held_vectors()
    assert held is not NOT_HELD and len(held.rows) == 40  # the row added after the pin is not held
    table.checkout(version)
    for query in unit(np.random.default_rng(4), 10):
        release._parts["retriever"] = model = Fixed(query)
        expected = search(table, "cards cash visa", mode, SECTIONS.evaluate.chunk_k, model,
                          SECTIONS.evaluate.rrf_k, SECTIONS.index)
        got = release.search("cards cash visa", mode, k=SECTIONS.evaluate.chunk_k)
        firsts = {}
        for h in expected:  # best_per_doc of LanceDB's hits
            firsts.setdefault(h["doc_id"], h["chunk_id"])
        assert [h["chunk_id"] for h in got] == list(firsts.values())
        assert "late#0" not in [h["chunk_id"] for h in got]


def test_a_one_shot_search_does_not_read_the_whole_table(tmp_path):
    _, version = pinned(tmp_path, chunk_rows(40, 3))
    release = LoadedRelease(served(tmp_path, "chunks", version), SECTIONS, catalog(tmp_path))
    release._parts["retriever"] = Fixed(chunk_rows(1)[0]["vector"])
    assert release.search("cards", "fusion", k=3)
    assert "held_vectors" not in release._parts  # only warm() or held_vectors() holds them


def test_a_release_over_the_threshold_searches_with_lancedb(tmp_path):
    _, version = pinned(tmp_path, chunk_rows(40, 3))
    sections = replace(SECTIONS, index=IndexConfig(ann_min_rows=40))
    release = LoadedRelease(served(tmp_path, "chunks", version), sections, catalog(tmp_path))
    assert release.held_vectors() is NOT_HELD
    release._parts["retriever"] = Fixed(chunk_rows(1)[0]["vector"])
    assert [h["doc_id"] for h in release.search("cards", "vector", k=3)]  # LanceDB answers
