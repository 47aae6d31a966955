"""RAFT training context (tasks/lib/raft.py): the oracle chunk, distractors from other documents,
the seeded share with the oracle; and the even cut that keeps every chunk's head (sft.py)."""

import random

from tasks.lib.raft import oracle_chunk, pick_distractors, raft_context, raft_contexts
from tasks.lib.sft import cut_chunks_evenly


def chunk(doc: str, i: int, text: str) -> dict:
    return {"chunk_id": f"{doc}#{i}", "doc_id": doc, "text": text}


CHUNKS = [chunk("a", 0, "Opening hours are nine to five on weekdays."),
          chunk("a", 1, "Refunds are paid within 14 days to the original card."),
          chunk("b", 0, "Parking is free for customers after six."),
          chunk("c", 0, "The warranty covers parts for two years."),
          chunk("d", 0, "Delivery takes three working days.")]
ROW = {"question": "How fast do refunds arrive?", "answer": "Within 14 days, to the card you paid with.",
       "doc_ids": ["a"]}


def test_the_oracle_is_the_own_chunk_sharing_most_answer_words():
    assert oracle_chunk(ROW, CHUNKS[:2])["chunk_id"] == "a#1"
    assert oracle_chunk({"question": "hours?", "answer": "unrelated"}, CHUNKS[:2])["chunk_id"] == "a#0"
    assert oracle_chunk(ROW, []) is None


def test_distractors_are_other_documents_hits_first_then_random():
    hits = [CHUNKS[1], CHUNKS[3], CHUNKS[0]]  # own chunks are skipped wherever they rank
    picked = pick_distractors({"a"}, hits, CHUNKS, 3, random.Random(1))
    assert picked[0]["chunk_id"] == "c#0"
    assert {c["doc_id"] for c in picked} <= {"b", "c", "d"} and len(picked) == 3
    assert len({c["chunk_id"] for c in picked}) == 3  # no chunk twice
    assert len(pick_distractors({"a"}, [], CHUNKS[:2], 2, random.Random(1))) == 0  # none to take


def test_an_example_with_the_oracle_has_it_once_among_k_minus_one_distractors():
    by_doc = {"a": CHUNKS[:2], "b": [CHUNKS[2]], "c": [CHUNKS[3]], "d": [CHUNKS[4]]}
    positions = set()
    for seed in range(30):
        texts, kind = raft_context(ROW, [CHUNKS[3]], by_doc, CHUNKS, 3, True, random.Random(seed))
        assert kind == "oracle" and len(texts) == 3 and texts.count(CHUNKS[1]["text"]) == 1
        assert CHUNKS[0]["text"] not in texts  # the other own chunk is not a distractor
        positions.add(texts.index(CHUNKS[1]["text"]))
    assert positions == {0, 1, 2}  # not always first: the model must find it
    texts, kind = raft_context(ROW, [CHUNKS[3]], by_doc, CHUNKS, 2, False, random.Random(0))
    assert kind == "distractors" and len(texts) == 2 and CHUNKS[1]["text"] not in texts
    orphan = {**ROW, "doc_ids": ["zz"]}  # its document has no chunk: the retrieved hits
    assert raft_context(orphan, CHUNKS[2:4], by_doc, CHUNKS, 2, True, random.Random(0)) == \
        ([CHUNKS[2]["text"], CHUNKS[3]["text"]], "no_oracle")


def test_the_oracle_share_is_seeded_and_counted():
    rows = [ROW] * 10
    contexts, counts = raft_contexts(rows, [[CHUNKS[2]]] * 10, CHUNKS, 2, 0.8, seed=13)
    assert counts == {"raft_oracle": 8, "raft_distractors": 2, "raft_no_oracle": 0}
    assert sum(CHUNKS[1]["text"] in c for c in contexts) == 8
    assert (contexts, counts) == raft_contexts(rows, [[CHUNKS[2]]] * 10, CHUNKS, 2, 0.8, seed=13)
    assert raft_contexts(rows, [[CHUNKS[2]]] * 10, CHUNKS, 2, 0.0, 1)[1]["raft_oracle"] == 0


def test_even_cut_keeps_the_head_of_every_chunk(generator_tokenizer):
    tok = generator_tokenizer
    long_a, long_b, short = "alpha " * 100, "bravo " * 100, "charlie delta"
    cut = cut_chunks_evenly(tok, [long_a, short, long_b], 60)
    assert len(cut) == 3 and cut[1] == short  # the short chunk whole, its spare share passed on
    sizes = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in cut]
    assert sum(sizes) <= 62 and abs(sizes[0] - sizes[2]) <= 2 and min(sizes[0], sizes[2]) >= 25
    assert cut[0].split()[0] == "alpha" and cut[2].split()[0] == "bravo"
    assert cut_chunks_evenly(tok, ["one two", "three"], 1000) == ["one two", "three"]
