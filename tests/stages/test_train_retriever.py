"""train_retriever (tasks/train_retriever.py): training pairs, negatives, the masked loss and a
seeded LoRA run on the tiny retriever."""

import pytest

from tasks.lib.config import TrainRetrieverConfig
from tasks.lib.errors import DataError
from tasks.lib.text import best_chunk
from tasks.train_retriever import (
    pairs_per_second,
    pick_negatives,
    same_document_masked_loss,
    source_rows,
    sources_plan,
    train_lora,
    training_pairs,
)
from tests.conftest import RETRIEVER_CHUNKS

CHUNKS = [
    {"chunk_id": "d#0", "doc_id": "d", "chunk_index": 0, "title": "Tariffs",
     "text": "Steady 12 is a fixed tariff."},
    {"chunk_id": "d#1", "doc_id": "d", "chunk_index": 1, "title": "Tariffs",
     "text": "Leaving Steady 12 early costs a 30 pound exit fee."},
    {"chunk_id": "e#0", "doc_id": "e", "chunk_index": 0, "title": None, "text": "Other."},
]


# ---- pure ---------------------------------------------------------------------------------------


def test_best_chunk_follows_the_answer():
    chosen = best_chunk("Can I leave early?", "There is a 30 pound exit fee.", CHUNKS[:2])
    assert chosen["chunk_id"] == "d#1"


def test_best_chunk_ties_go_to_the_question_then_the_first_chunk():
    chosen = best_chunk("Is Steady 12 fixed?", "no overlap here", CHUNKS[:2])
    assert chosen["chunk_id"] == "d#0"  # answer words tie at 0; the question has "fixed"
    assert best_chunk("zz", "zz", CHUNKS[:2])["chunk_id"] == "d#0"  # all tie: the earliest


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


def test_pairs_per_second_counts_epochs_or_capped_steps():
    epochs = TrainRetrieverConfig(epochs=2, max_steps=-1, batch_size=4)
    assert pairs_per_second(10, 6, epochs, 4.0) == 5.0  # 10 pairs x 2 epochs / 4 s
    capped = epochs.model_copy(update={"max_steps": 3})
    assert pairs_per_second(10, 3, capped, 4.0) == 3.0  # 3 steps x batch 4 / 4 s


# ---- the loss and training on the tiny retriever --------------------------------------------------


def test_same_document_chunks_are_not_negatives(tiny_retriever):
    import torch

    _, model = tiny_retriever
    loss = same_document_masked_loss(model)
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    c = torch.nn.functional.normalize(torch.tensor([[1.0, 0.9], [0.9, 1.0]]), dim=1)
    same_doc = loss.compute_loss_from_embeddings([q, c], torch.tensor([5, 5]))
    assert same_doc.item() == pytest.approx(0.0, abs=1e-6)  # the only candidate left is the positive
    other_doc = loss.compute_loss_from_embeddings([q, c], torch.tensor([5, 6]))
    assert other_doc.item() > 0


def test_lora_training_is_reproducible_for_a_seed(tiny_retriever, tmp_path):
    """Same data, config and seed: the same adapter weights (so a rerun is recognisable)."""
    import torch

    from tasks.lib.models import load_retriever

    model_dir, _ = tiny_retriever
    pairs = [{"anchor": f"question {i}", "positive": RETRIEVER_CHUNKS[i % 3]["text"] + f" {i}",
              "doc_id": f"d{i}"} for i in range(8)]
    cfg = TrainRetrieverConfig(max_steps=2, batch_size=4, target_modules=("query", "value"),
                               precision="fp32")
    weights = []
    for run in range(2):
        model = load_retriever(model_dir, device="cpu")
        train_lora(model, pairs, cfg, 13, tmp_path / f"w{run}", "cpu")
        weights.append({k: v.clone() for k, v in model.named_parameters() if "lora_" in k})
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_per_source_adapters_need_both_sources_with_two_questions_each():
    real, syn = {"metadata": {}}, {"metadata": {"synthetic": True}}
    by_source = source_rows([real, syn, real, syn, {"qid": "no metadata"}])
    assert [len(by_source[s]) for s in ("real", "synthetic")] == [3, 2]
    assert sources_plan(by_source, True)["compared"] is True
    assert "compare_sources is off" in sources_plan(by_source, False)["why"]
    assert "one source only" in sources_plan(source_rows([real, real]), True)["why"]
    assert "under 2" in sources_plan(source_rows([real, real, syn]), True)["why"]
