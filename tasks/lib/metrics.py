"""Retrieval metrics at document level and bootstrap intervals (numpy, scipy; no I/O)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

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


CONFIDENCE = 0.95  # every interval in the reports and the gate


def bootstrap_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                 level: float = CONFIDENCE) -> dict[str, Any]:
    """Mean with a BCa bootstrap interval over queries (scipy); `method` says how it was made.

    All-equal values (or fewer than two) have no spread to resample: the interval is the value
    itself ("degenerate"), without asking scipy, whose BCa returns NaN there. A NaN from BCa on
    near-constant data falls back to the percentile interval of the same resamples.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "method": "empty"}
    mean = float(data.mean())
    if data.size < 2 or np.ptp(data) == 0:
        return {"mean": mean, "lo": mean, "hi": mean, "method": "degenerate"}
    lo, hi, method = bca_interval(data, resamples, seed, level)
    return {"mean": mean, "lo": lo, "hi": hi, "method": method}


def bca_interval(data: np.ndarray, resamples: int, seed: int,
                 level: float) -> tuple[float, float, str]:
    """(lo, hi, method) of the mean: BCa, or percentile where BCa gives NaN."""
    from scipy.stats import DegenerateDataWarning, bootstrap

    with warnings.catch_warnings():  # a NaN is handled below and named in `method`
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap((data,), np.mean, n_resamples=resamples, confidence_level=level,
                           method="BCa", rng=np.random.default_rng(seed))
    lo, hi = (float(x) for x in result.confidence_interval)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi, "BCa"
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(result.bootstrap_distribution, [tail, 100 - tail])
    return float(lo), float(hi), "percentile"


def paired_diff_ci(a: Sequence[float], b: Sequence[float], resamples: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """BCa interval of mean(a - b) over the same queries (paired).

    Resampling the per-query differences is scipy's `paired=True` for a difference of means,
    with a one-sample statistic.
    """
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
