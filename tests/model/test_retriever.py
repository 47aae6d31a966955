"""Retriever and index behaviour on a real LanceDB with real (tiny or small) models."""

import json
from pathlib import Path

import pytest

from tasks.lib.config import IndexConfig
from tasks.lib.errors import ConfigError
from tasks.lib.tables import update_table
from tasks.lib.models import (
    ADAPTER_META,
    check_adapter_base,
    load_retriever,
    resolve_model_dir,
    retriever_fingerprint,
)
from tasks.prepare import content_hash
from tasks.lib.search import connect, search, text_hits, vector_hits

CFG = IndexConfig(batch_size=8)


def chunk(cid: str, text: str) -> dict:
    doc = cid.split("#")[0]
    return {"chunk_id": cid, "doc_id": doc, "chunk_index": 0, "title": None, "text": text,
            "content_hash": content_hash(None, text)}


CHUNKS = [chunk("meter#0", "Submit a meter reading in the app before the 5th of the month."),
          chunk("battery#0", "Error E07 on the battery means the inverter lost contact."),
          chunk("tariff#0", "Night Owl is cheap between 00:30 and 05:30.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model_dir = resolve_model_dir("tunedex/tiny-retriever", cache_dir=tmp_path_factory.mktemp("m"))
    return model_dir, load_retriever(model_dir, device="cpu")


def test_incremental_add_change_delete(tiny, tmp_path):
    _, model = tiny
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


def test_failed_update_leaves_previous_version_queryable(tiny, tmp_path, monkeypatch):
    _, model = tiny
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


def test_dimension_mismatch_is_refused(tiny, tmp_path):
    _, model = tiny
    db = connect(str(tmp_path / "db"))
    from tasks.lib.tables import build_rows, schema

    db.create_table("t", data=build_rows(CHUNKS[:1], [[0.0] * 8]), schema=schema(8))
    with pytest.raises(ConfigError, match="holds 8-d vectors but the retriever makes 32-d"):
        update_table(db, "t", model, CHUNKS, CFG)
    assert db.open_table("t").count_rows() == 1


def test_adapter_for_another_base_is_refused(tiny, tmp_path):
    model_dir, _ = tiny
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / ADAPTER_META).write_text(json.dumps({"base_model_id": "other/model",
                                                    "base_weights": "x"}))
    with pytest.raises(ConfigError, match="trained on base model 'other/model' but is being "
                                          "loaded onto 'tunedex/tiny-retriever'.*retrain"):
        check_adapter_base(adapter, model_dir, "tunedex/tiny-retriever")
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        check_adapter_base(tmp_path, model_dir, "tunedex/tiny-retriever")


def test_fingerprint_changes_with_adapter(tiny, tmp_path):
    model_dir, _ = tiny
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"1")
    base = retriever_fingerprint("x", model_dir, None)
    with_adapter = retriever_fingerprint("x", model_dir, adapter)
    assert base != with_adapter and base == retriever_fingerprint("x", model_dir, None)
    (adapter / "adapter_model.safetensors").write_bytes(b"2")
    assert retriever_fingerprint("x", model_dir, adapter) != with_adapter


@pytest.mark.slow
def test_pretrained_minilm_finds_the_obvious_document(tmp_path):
    """Minimum functionality of the real default retriever (bundled offline copy)."""
    model = load_retriever(resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2"),
                           device="cpu")
    db = connect(str(tmp_path / "db"))
    update_table(db, "t", model, CHUNKS, CFG)
    table = db.open_table("t")
    for query, doc in [("my battery shows E07", "battery"), ("cheap overnight electricity", "tariff"),
                       ("when do I send my meter reading", "meter")]:
        for mode in ("vector", "hybrid"):
            assert search(table, query, mode, 3, model)[0]["doc_id"] == doc, (query, mode)
    assert Path(tmp_path / "db").is_dir()


def test_same_document_chunks_are_not_negatives(tiny):
    import torch

    from tasks.train_retriever import same_document_masked_loss

    _, model = tiny
    loss = same_document_masked_loss(model)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    c = torch.nn.functional.normalize(torch.tensor([[1.0, 0.9], [0.9, 1.0]]), dim=1)
    same_doc = loss.compute_loss_from_embeddings([q, c], torch.tensor([5, 5]))
    assert same_doc.item() == pytest.approx(0.0, abs=1e-6)  # the only candidate left is the positive
    other_doc = loss.compute_loss_from_embeddings([q, c], torch.tensor([5, 6]))
    assert other_doc.item() > 0


def test_ann_index_past_threshold_keeps_results(tmp_path):
    import numpy as np

    from tasks.lib.tables import build_rows, ensure_indexes, schema

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


def test_lora_training_is_reproducible_for_a_seed(tmp_path):
    """Same data, config and seed: the same adapter weights (so a rerun is recognisable)."""
    import torch

    from tasks.lib.config import TrainRetrieverConfig
    from tasks.train_retriever import train_lora

    model_dir = resolve_model_dir("tunedex/tiny-retriever", cache_dir=tmp_path / "m")
    pairs = [{"anchor": f"question {i}", "positive": CHUNKS[i % 3]["text"] + f" {i}",
              "doc_id": f"d{i}"} for i in range(8)]
    cfg = TrainRetrieverConfig(max_steps=2, batch_size=4, target_modules=("query", "value"))
    weights = []
    for run in range(2):
        model = load_retriever(model_dir, device="cpu")
        train_lora(model, pairs, cfg, 13, tmp_path / f"w{run}", "cpu")
        weights.append({k: v.clone() for k, v in model.named_parameters() if "lora_" in k})
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
