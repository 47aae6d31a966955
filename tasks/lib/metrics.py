"""Retrieval metrics at document level and bootstrap intervals (pure numpy, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

K_VALUES = (1, 5, 10)


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k (0 when none)."""
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Binary-relevance nDCG@k."""
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def retrieval_scores(ranked: Sequence[str], relevant: set[str]) -> dict[str, float]:
    """Recall@1/5/10, MRR@10 and nDCG@10 of one query."""
    scores = {f"recall@{k}": recall_at_k(ranked, relevant, k) for k in K_VALUES}
    scores["mrr@10"] = mrr_at_k(ranked, relevant, 10)
    scores["ndcg@10"] = ndcg_at_k(ranked, relevant, 10)
    return scores


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, float]:
    """Mean with a percentile-bootstrap interval over queries."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return {"mean": float(data.mean()), "lo": float(np.percentile(means, tail)),
            "hi": float(np.percentile(means, 100 - tail))}


def paired_diff_ci(a: Sequence[float], b: Sequence[float], resamples: int = 1000,
                   seed: int = 0) -> dict[str, float]:
    """Bootstrap interval of mean(a - b) over the same queries (paired)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} != {len(b)}")
    return bootstrap_ci(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), resamples, seed)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95 latency in milliseconds."""
    ms = np.asarray(seconds, dtype=float) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def separated(diff: dict[str, float]) -> int:
    """+1 when a paired-difference interval lies above zero, -1 below, 0 when it covers zero."""
    return 1 if diff["lo"] > 0 else -1 if diff["hi"] < 0 else 0
