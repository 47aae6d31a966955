"""Statistics the monitor uses, pure numpy/scipy: is what users ask still what the release knows?

- query drift: an unbiased MMD² two-sample permutation test (Gretton et al. 2012) on question
  embeddings, RBF kernel with the median-heuristic bandwidth; the witness function names the
  questions that differ most from the reference;
- retrieval confidence: a one-sided Mann-Whitney U test (are served top-1 scores lower than the
  eval questions'?) and the share below a score floor;
- rates (thumbs-down, low confidence) with Wilson score intervals.

Why not Evidently: 0.7 does not import with pandas 3.1 (STACK.md), and its embedding drift took
~40 s a run and returns a score without a test. The permutation test here runs in well under a
second for 1,000 + 1,000 questions (bench/monitor_power.py measures it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PERMUTATION_BLOCK = 64  # permutations evaluated per matrix product


def subsample(n: int, cap: int, seed: int) -> np.ndarray:
    """Indices of a seeded sample of at most `cap` of n items (all of them, in order, when n <= cap)."""
    if cap <= 0 or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def corpus_profile(embeddings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Each question as its cosine similarities to anchor chunks of the corpus, standardised per
    question: which parts of the corpus it points at, not how it is worded. (Measured: on raw
    embeddings the demo's casually written held-out questions read as drift against the formal
    train questions at n=25; on profiles they do not, while other domains still do.)"""
    s = np.asarray(embeddings, np.float64) @ np.asarray(anchors, np.float64).T
    return (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-9)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared euclidean distances between the rows of a and b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(d2: np.ndarray) -> float:
    """The median heuristic: the median of the off-diagonal squared distances (1.0 if all zero)."""
    off = d2[~np.eye(len(d2), dtype=bool)]
    med = float(np.median(off)) if off.size else 0.0
    return med if med > 0 else 1.0


def _mmd2_blocks(kd: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each column of a 0/1 label matrix (1 = first sample), from the kernel
    matrix with a zeroed diagonal."""
    a = labels.astype(np.float64)
    n = a.sum(0)
    m = len(a) - n
    ka = kd @ a
    kb = kd.sum(1)[:, None] - ka
    xx = (a * ka).sum(0) / (n * (n - 1))
    yy = ((1 - a) * kb).sum(0) / (m * (m - 1))
    xy = (a * kb).sum(0) / (n * m)
    return xx + yy - 2 * xy


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0) -> dict[str, Any]:
    """Unbiased MMD² between samples x (reference) and y (served), with a permutation p-value."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"the MMD test needs at least 2 vectors per sample, got {len(x)} and {len(y)}")
    z = np.vstack([x, y])
    d2 = squared_distances(z, z)
    bandwidth = median_bandwidth(d2)
    kd = np.exp(-d2 / bandwidth)
    np.fill_diagonal(kd, 0.0)
    labels = np.zeros((len(z), 1))
    labels[: len(x), 0] = 1
    observed = float(_mmd2_blocks(kd, labels)[0])
    rng = np.random.default_rng(seed)
    exceed, done = 0, 0
    while done < permutations:
        size = min(PERMUTATION_BLOCK, permutations - done)
        block = np.zeros((len(z), size))
        for j in range(size):
            block[rng.permutation(len(z))[: len(x)], j] = 1
        exceed += int((_mmd2_blocks(kd, block) >= observed - 1e-12).sum())
        done += size
    return {"method": "MMD² permutation test (RBF kernel, median-heuristic bandwidth)",
            "mmd2": observed, "p_value": (1 + exceed) / (1 + permutations),
            "bandwidth": bandwidth, "n_reference": len(x), "n_served": len(y),
            "permutations": permutations}


def witness(x: np.ndarray, y: np.ndarray, points: np.ndarray, bandwidth: float) -> np.ndarray:
    """The MMD witness at each point: mean kernel to y minus mean kernel to x. High values lie
    where served questions are and reference questions are not (the most drifted)."""
    kx = np.exp(-squared_distances(points, x) / bandwidth).mean(1)
    ky = np.exp(-squared_distances(points, y) / bandwidth).mean(1)
    return ky - kx


def confidence_shift(served: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Are served top-1 retrieval scores lower than the reference's? One-sided Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    served, reference = np.asarray(served, float), np.asarray(reference, float)
    if len(served) == 0 or len(reference) == 0:
        raise ValueError("confidence_shift needs scores on both sides")
    result = mannwhitneyu(served, reference, alternative="less")
    return {"method": "one-sided Mann-Whitney U (served top-1 scores lower than eval's)",
            "p_value": float(result.pvalue), "served_median": float(np.median(served)),
            "reference_median": float(np.median(reference)),
            "median_change": float(np.median(served) - np.median(reference))}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion k/n ((0, 1) when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson interval."""
    low, high = wilson_interval(k, n)
    return {"count": k, "n": n, "rate": (k / n) if n else None, "low": low, "high": high,
            "method": "Wilson score 95% interval"}
