"""Retriever inference at reduced precision (int8 dynamic, bf16) against fp32, in one run.

For each precision: chunk-encoding throughput (what index does; best of --repeats, precisions
interleaved so drift hits all alike), one-question encode latency p50/p95 (what /search pays),
and nDCG@10 / Recall@10 on the eval questions by exact search over the chunks encoded at that
precision (document level, as evaluate scores), paired against fp32 on the same questions (BCa).
Targets (issue 15): >= 1.5x fp32 throughput at |mean delta nDCG@10| <= 0.005.

usage: python bench/retriever_precision.py --prepared data/prepared [--adapter models/retriever]
         [--config configs/cpu.yaml] [--precisions fp32 int8 bf16] [--repeats 3] [--out F.json]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

import numpy as np  # noqa: E402

from bench.precision_args import precision_parser  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.metrics import latency_summary, paired_diff_ci, retrieval_scores  # noqa: E402
from tasks.lib.models import load_retriever, retriever_base_dir  # noqa: E402
from tasks.lib.precision import apply_precision  # noqa: E402
from tasks.lib.tables import encode  # noqa: E402
from tasks.lib.text import passage_text  # noqa: E402

TOLERANCE = 0.005  # |mean delta nDCG@10| a precision may lose (issue 15)
TARGET = 1.5  # throughput ratio over fp32
INT8_ENGINES = ("x86", "fbgemm")  # torch's quantised CPU engines with int8 GEMM kernels


def at_precision(model, precision: str):
    """The retriever at `precision`: fp32 and bf16 as the pipeline runs them, int8 by dynamic
    quantisation of its Linear layers (measured here only: the pipeline does not offer it)."""
    if precision != "int8":
        return apply_precision(model, precision)
    import torch

    engine = next((e for e in INT8_ENGINES if e in torch.backends.quantized.supported_engines),
                  None)
    if engine is None:
        raise SystemExit("int8: this torch has no quantised CPU engine (x86 or fbgemm)")
    torch.backends.quantized.engine = engine
    model[0].auto_model = torch.ao.quantization.quantize_dynamic(
        model[0].auto_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model.eval()


def doc_scores(query_vecs: np.ndarray, chunk_vecs: np.ndarray, chunk_docs: list[str],
               questions: list[dict]) -> list[dict]:
    """Per-question retrieval metrics of an exact search, chunks folded to documents."""
    out = []
    for vec, q in zip(query_vecs, questions, strict=True):
        order = np.argsort(-(chunk_vecs @ vec))
        ranked: list[str] = []
        for i in order:
            if chunk_docs[i] not in ranked:
                ranked.append(chunk_docs[i])
            if len(ranked) == 10:
                break
        out.append(retrieval_scores(ranked, set(q["doc_ids"])))
    return out


def main() -> None:
    parser = precision_parser(__doc__, "retriever", 3)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "bf16"])
    parser.add_argument("--max-chunks", type=int, default=2000, help="cap on chunks encoded")
    args = parser.parse_args()
    cfg = load_config(args.config, dict(parse_override(s) for s in args.sets))
    prepared = Path(args.prepared)
    chunks = read_jsonl(prepared / "chunks.jsonl")[: args.max_chunks]
    docs = {c["doc_id"] for c in chunks}
    questions = [q for q in read_jsonl(prepared / "eval_qa.jsonl") if set(q["doc_ids"]) & docs]
    texts, batch = [passage_text(c) for c in chunks], cfg.index.batch_size
    base = retriever_base_dir(cfg.models, cfg.paths.models_dir)
    adapter = Path(args.adapter) if args.adapter else None
    models = {p: at_precision(load_retriever(base, adapter, "cpu"), p) for p in args.precisions}
    for model in models.values():
        encode(model, texts[:batch], batch)  # warm-up (kernels, allocator)

    seconds: dict[str, list[float]] = {p: [] for p in models}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for p, model in models.items():
            started = time.perf_counter()
            vectors[p] = np.asarray(model.encode(texts, batch_size=batch, normalize_embeddings=True,
                                                 convert_to_numpy=True), dtype=np.float32)
            seconds[p].append(time.perf_counter() - started)
    report = {"chunks": len(chunks), "questions": len(questions), "batch_size": batch,
              "repeats": args.repeats, "adapter": args.adapter, "precisions": {}}
    lat: dict[str, list[float]] = {p: [] for p in models}
    qvecs: dict[str, list[np.ndarray]] = {p: [] for p in models}
    for q in questions:  # one question at a time, as /search encodes; precisions interleaved
        for p, model in models.items():
            started = time.perf_counter()
            qvecs[p].append(model.encode([q["question"]], normalize_embeddings=True,
                                         convert_to_numpy=True)[0])
            lat[p].append(time.perf_counter() - started)
    per_q = {}
    for p in models:
        per_q[p] = doc_scores(np.asarray(qvecs[p], dtype=np.float32), vectors[p],
                              [c["doc_id"] for c in chunks], questions)
        report["precisions"][p] = {
            "encode_seconds": seconds[p], "chunks_per_second": len(texts) / min(seconds[p]),
            "query_latency": latency_summary(lat[p]),
            "ndcg@10": float(np.mean([s["ndcg@10"] for s in per_q[p]])),
            "recall@10": float(np.mean([s["recall@10"] for s in per_q[p]]))}
    ref = report["precisions"].get("fp32")
    print(f"{len(chunks)} chunks, {len(questions)} eval questions, batch {batch}, best of "
          f"{args.repeats}{', adapter ' + args.adapter if args.adapter else ''}")
    for p, row in report["precisions"].items():
        line = (f"{p:5s} {row['chunks_per_second']:7.1f} chunks/s  query p50 "
                f"{row['query_latency']['p50_ms']:6.1f} ms p95 {row['query_latency']['p95_ms']:6.1f}"
                f" ms  nDCG@10 {row['ndcg@10']:.4f}")
        if ref is not None and p != "fp32":
            speed = row["chunks_per_second"] / ref["chunks_per_second"]
            diff = paired_diff_ci([s["ndcg@10"] for s in per_q[p]],
                                  [s["ndcg@10"] for s in per_q["fp32"]], 1000, 13)
            cos = float(np.mean(np.sum(vectors[p] * vectors["fp32"], axis=1)))
            ok = speed >= TARGET and abs(diff["mean"]) <= TOLERANCE
            row |= {"speedup": speed, "ndcg_delta": diff, "mean_cosine_to_fp32": cos,
                    "meets_target": ok}
            line += (f"  x{speed:.2f} fp32, delta {diff['mean']:+.4f} [{diff['lo']:+.4f}, "
                     f"{diff['hi']:+.4f}], cos {cos:.4f} -> {'PASS' if ok else 'FAIL'}")
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
