"""Questions in a release's own embedding space: encode them, score them against the pinned
table (top-1 cosine), and test them against the questions the release knows (drift).

The numbers of the monitor (tasks/monitor.py) and its benchmark (bench/monitor_power.py) come
from these functions, so the benchmark measures exactly what the monitor runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_IN_MEMORY_ROWS = 200_000  # chunk vectors held for exact top-1; beyond: LanceDB search
ANCHORS = 256  # corpus chunks the drift profile measures similarity to


def chunk_vectors(table: Any) -> tuple[np.ndarray, list[str]] | None:
    """Every chunk vector (unit length) and its doc_id, or None for a table too big to hold."""
    if table.count_rows() > MAX_IN_MEMORY_ROWS:
        return None
    from tasks.lib.held_vectors import unit_vectors

    data = table.to_arrow().select(["vector", "doc_id"])
    return unit_vectors(data.column("vector")), data.column("doc_id").to_pylist()


def top1(embeddings: np.ndarray, table: Any, held: tuple[np.ndarray, list[str]] | None,
         index_cfg: Any) -> tuple[np.ndarray, list[str]]:
    """(top-1 cosine, its doc_id) of each embedding against the pinned table."""
    if len(embeddings) == 0:
        return np.zeros(0), []
    if held is None:
        from tasks.lib.search import vector_hits

        hits = [vector_hits(table, e, 1, index_cfg)[0] for e in embeddings]
        return np.array([h["score"] for h in hits]), [h["doc_id"] for h in hits]
    vectors, doc_ids = held
    best_score, best_row = np.empty(len(embeddings)), np.empty(len(embeddings), int)
    for start in range(0, len(embeddings), 512):
        sims = embeddings[start:start + 512] @ vectors.T
        best_row[start:start + 512] = sims.argmax(1)
        best_score[start:start + 512] = sims.max(1)
    return best_score, [doc_ids[i] for i in best_row]


def anchors_of(table: Any, held: tuple[np.ndarray, list[str]] | None, seed: int) -> np.ndarray:
    """Up to ANCHORS chunk vectors (a seeded sample) the drift profile is measured against."""
    from tasks.lib.drift import subsample

    if held is None:
        rows = table.search().select(["vector"]).limit(ANCHORS).to_arrow()
        return np.stack(rows.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    return held[0][subsample(len(held[0]), ANCHORS, seed)]


def encode(model: Any, texts: list[str]) -> np.ndarray:
    """Unit embeddings of texts, each distinct text encoded once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, 1), np.float32)
    vectors = model.encode(unique, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    where = {t: i for i, t in enumerate(unique)}
    return vectors[[where[t] for t in texts]]


def reference_sample(section: Any, reference: dict[str, list[str]], seed: int) -> list[str]:
    """A seeded sample (at most monitor.max_questions) of the release's train + eval questions."""
    from tasks.lib.drift import subsample

    texts = reference["train"] + reference["eval"]
    return [texts[i] for i in subsample(len(texts), section.max_questions, seed)]


def drift_test(section: Any, anchors: np.ndarray, ref_emb: np.ndarray, served_emb: np.ndarray,
               seed: int, profiles: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray,
                                                          np.ndarray]:
    """The MMD test of served questions against the reference sample, both as corpus profiles
    (at most monitor.max_questions served, seeded); also returns both profiles and which served
    questions were sampled. `profiles=False` tests the raw embeddings (the benchmark's
    comparison, not what the monitor runs)."""
    from tasks.lib.drift import corpus_profile, mmd_test, subsample

    srv_idx = subsample(len(served_emb), section.max_questions, seed + 1)
    features = (lambda e: corpus_profile(e, anchors)) if profiles else (lambda e: e)
    ref_prof, srv_prof = features(ref_emb), features(served_emb[srv_idx])
    drift = mmd_test(ref_prof, srv_prof, section.permutations, seed)
    drift["features"] = (f"cosine to {len(anchors)} corpus chunks, standardised per question"
                         if profiles else "raw question embeddings")
    return drift, ref_prof, srv_prof, srv_idx


def confidence(section: Any, scores: np.ndarray, eval_scores: np.ndarray) -> dict[str, Any]:
    """Served top-1 scores against the eval questions': the shift and the share below the floor."""
    from tasks.lib.drift import confidence_shift, rate

    if len(eval_scores) == 0:
        return {"status": "no eval questions in the release's reference"}
    if section.score_floor is not None:
        floor, source = section.score_floor, "monitor.score_floor"
    else:
        floor = float(np.quantile(eval_scores, section.floor_quantile))
        source = f"the {section.floor_quantile:g} quantile of the eval questions' top-1 cosine"
    low = int((scores < floor).sum())
    return {**confidence_shift(scores, eval_scores), "status": "ok", "floor": floor,
            "floor_source": source, "low_share": rate(low, len(scores))}
