"""Exact vector search over a pinned table's chunks held in memory, for serving.

A table without an ANN index (fewer rows than `index.ann_min_rows`) is searched by LanceDB as a
flat scan; the same scan over vectors held in one numpy array skips LanceDB's per-query
planning, which on a small table costs more than the scan (bench/search_paths.py measures both,
and the hits they return). Evaluate keeps LanceDB's search: what it scores is what this returns
(the same cosine on the same vectors; rows with equal scores come in row order here and in
LanceDB's own order there, so duplicate chunks may swap places).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.lib.search import HIT_COLUMNS


@dataclass(frozen=True)
class HeldVectors:
    vectors: np.ndarray  # (rows, dim) float32, unit length
    rows: list[dict[str, Any]]  # HIT_COLUMNS of each row, in table order

    def hits(self, vector: Any, k: int) -> list[dict[str, Any]]:
        """Top-k rows by cosine similarity to a unit query vector (vector_hits' shape)."""
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]  # best first; equal scores by row order
        return [{**self.rows[i], "score": float(scores[i])} for i in top]


def hold_vectors(table: Any, max_rows: int) -> HeldVectors | None:
    """The table's chunks in memory, or None when it has an ANN index or `max_rows` rows or more
    (LanceDB's own search then: an ANN query, or a table too big to keep a copy of in memory)."""
    if table.count_rows() >= max_rows or any(i.columns == ["vector"] for i in table.list_indices()):
        return None
    data = table.to_arrow().select([*HIT_COLUMNS, "vector"])
    if len(data) == 0:
        return None
    return HeldVectors(unit_vectors(data.column("vector")), data.select(HIT_COLUMNS).to_pylist())


def unit_vectors(column: Any) -> np.ndarray:
    """An Arrow column of fixed-size vectors as unit-length float32 rows (one array)."""
    column = column.combine_chunks()
    vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)
