"""RAFT-style training context for the generator (Zhang et al. 2024, "RAFT: Adapting Language
Model to Domain Specific RAG"): an example with context carries the question's *oracle* chunk
(the chunk of its own document that holds the answer) with probability p, among distractor
chunks, at a random position; without the oracle it carries distractors only. The fine-tuned
model so learns to use the right chunk and to ignore the others, rather than to trust whatever
comes first (what training on the top-k retrieved chunks alone teaches when retrieval is right).

Usage:
    contexts, counts = raft_contexts(rows, hits, chunks, k=2, oracle_share=0.8, seed=13)

Distractors are the retriever's own hits for the question from *other* documents, best first
(the near misses the model meets at answer time), topped up with a seeded random sample of other
documents' chunks when the hits run short. Every context has k chunks, the same length as the
retrieved context of `train_generator.context_source: retrieved`.
"""

from __future__ import annotations

import random
from typing import Any

from tasks.lib.text import best_chunk

# ---- pure ---------------------------------------------------------------------------------------


def oracle_chunk(row: dict[str, Any], doc_chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The chunk of the row's documents sharing most words with its answer (then its question;
    then the earlier chunk): where the answer most likely comes from. None without chunks."""
    if not doc_chunks:
        return None
    return best_chunk(row.get("question") or "", row.get("answer") or "", doc_chunks)


def pick_distractors(own_docs: set[str], hits: list[dict[str, Any]], pool: list[dict[str, Any]],
                     n: int, rng: random.Random) -> list[dict[str, Any]]:
    """`n` chunks of other documents: the retrieved hits first (rank order), then random ones."""
    picked = [h for h in hits if h["doc_id"] not in own_docs][:n]
    if len(picked) < n:
        seen = {c["chunk_id"] for c in picked}
        others = [c for c in pool if c["doc_id"] not in own_docs and c["chunk_id"] not in seen]
        picked += rng.sample(others, min(n - len(picked), len(others)))
    return picked


def raft_context(row: dict[str, Any], hits: list[dict[str, Any]],
                 by_doc: dict[str, list[dict[str, Any]]], pool: list[dict[str, Any]], k: int,
                 with_oracle: bool, rng: random.Random) -> tuple[list[str], str]:
    """The k chunk texts of one example and what it got: "oracle" (oracle + k-1 distractors,
    oracle at a random position), "distractors" (k distractors), "no_oracle" (its documents have
    no chunk: the retrieved hits, as `retrieved` would give)."""
    own = set(row.get("doc_ids") or [])
    oracle = oracle_chunk(row, [c for d in sorted(own) for c in by_doc.get(d, [])])
    if oracle is None:
        return [h["text"] for h in hits[:k]], "no_oracle"
    if not with_oracle:
        return [c["text"] for c in pick_distractors(own, hits, pool, k, rng)], "distractors"
    texts = [c["text"] for c in pick_distractors(own, hits, pool, k - 1, rng)]
    texts.insert(rng.randint(0, len(texts)), oracle["text"])
    return texts, "oracle"


def raft_contexts(rows: list[dict[str, Any]], hits: list[list[dict[str, Any]]],
                  chunks: list[dict[str, Any]], k: int, oracle_share: float, seed: int
                  ) -> tuple[list[list[str]], dict[str, int]]:
    """RAFT contexts for `rows` (each with its retrieved `hits`, deeper than k so that k
    distractors remain after dropping its own documents), and how many got what."""
    rng = random.Random(seed)
    with_oracle = set(rng.sample(range(len(rows)), round(oracle_share * len(rows))))
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk["doc_id"], []).append(chunk)
    counts = {"raft_oracle": 0, "raft_distractors": 0, "raft_no_oracle": 0}
    contexts = []
    for i, (row, row_hits) in enumerate(zip(rows, hits, strict=True)):
        texts, kind = raft_context(row, row_hits, by_doc, chunks, k, i in with_oracle, rng)
        contexts.append(texts)
        counts[f"raft_{kind}"] += 1
    return contexts, counts
