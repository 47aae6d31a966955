"""ANN search over 100k synthetic 384-d chunks: p95 latency and Recall@10 vs exact search.

Vectors are a Gaussian mixture (clustered like real embeddings), unit length, cosine.
usage: python bench/ann_search.py [--rows 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tasks.lib.config import IndexConfig  # noqa: E402
from tasks.lib.search import connect, vector_hits  # noqa: E402
from tasks.lib.tables import ensure_indexes, schema  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(256, args.dim))
    vectors = unit(centers[rng.integers(0, 256, args.rows)] + 0.6 * rng.normal(size=(args.rows, args.dim)))
    queries = unit(centers[rng.integers(0, 256, args.queries)]
                   + 0.6 * rng.normal(size=(args.queries, args.dim)))
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

    import pyarrow as pa

    with tempfile.TemporaryDirectory() as tmp:
        db = connect(tmp)
        data = pa.table({"chunk_id": [f"c{i}" for i in range(args.rows)],
                         "doc_id": [f"d{i}" for i in range(args.rows)],
                         "chunk_index": pa.array(np.zeros(args.rows, dtype=np.int32)),
                         "text": [""] * args.rows, "content_hash": [""] * args.rows,
                         "vector": pa.FixedSizeListArray.from_arrays(vectors.ravel(), args.dim)},
                        schema=schema(args.dim))
        table = db.create_table("bench", data=data)
        cfg = IndexConfig(ann_min_rows=1)
        started = time.perf_counter()
        ensure_indexes(table, cfg, rebuilt_text=False)
        build = time.perf_counter() - started
        for q in queries[:10]:  # warm-up
            vector_hits(table, q, 10, cfg)
        seconds, recalls = [], []
        for q, truth in zip(queries, exact, strict=True):
            started = time.perf_counter()
            hits = vector_hits(table, q, 10, cfg)
            seconds.append(time.perf_counter() - started)
            found = {int(h["chunk_id"][1:]) for h in hits}
            recalls.append(len(found & set(truth.tolist())) / 10)
    p50, p95 = np.percentile(np.array(seconds) * 1000, [50, 95])
    recall = float(np.mean(recalls))
    print(f"rows {args.rows}, dim {args.dim}, ANN build {build:.1f} s, nprobes {cfg.nprobes}, "
          f"refine_factor {cfg.refine_factor}")
    print(f"latency p50 {p50:.2f} ms, p95 {p95:.2f} ms (target <= 10) {'PASS' if p95 <= 10 else 'FAIL'}")
    print(f"Recall@10 vs exact {recall:.3f} (target >= 0.95) {'PASS' if recall >= 0.95 else 'FAIL'}")


if __name__ == "__main__":
    main()
