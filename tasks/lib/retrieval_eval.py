"""Retrieval evaluation: run questions through a table, score them, aggregate with intervals.

Used by evaluate (BM25, base, LoRA, fusion and LanceDB's native fusion on the candidate tables)
and reindex (the champion's refreshed table). `fusion` is BM25 + LoRA vectors fused by reciprocal
rank (it was called "hybrid", a word the answer setup LoRA generator + context keeps).
lora_real / lora_synthetic are LoRA trained on one question source alone (synthesize.mode add):
scored beside lora (trained on both), never chosen or served.
"""

from __future__ import annotations

import time
from typing import Any

from tasks.lib.config import EvaluateConfig, IndexConfig
from tasks.lib.metrics import bootstrap_ci, latency_summary, paired_diff_ci, separated

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
# method -> (table role, search mode, model role)
METHODS = {"bm25": ("base", "bm25", None), "base": ("base", "vector", "base"),
           "lora": ("candidate", "vector", "candidate"),
           "fusion": ("candidate", "fusion", "candidate"),
           "fusion_native": ("candidate", "fusion_native", "candidate"),
           "lora_real": ("candidate_real", "vector", "candidate_real"),
           "lora_synthetic": ("candidate_synthetic", "vector", "candidate_synthetic")}
DIAGNOSTIC = frozenset({"lora_real", "lora_synthetic"})  # scored, never chosen for answers
SOURCE_NOTE = ("lora_real / lora_synthetic: LoRA trained on the real / the synthetic train "
               "questions alone (lora: on both); scored for comparison, never chosen or served.")
COMPARISONS = (("lora", "base"), ("fusion", "base"), ("fusion", "lora"), ("base", "bm25"),
               ("fusion_native", "fusion"), ("lora_real", "base"), ("lora_synthetic", "base"),
               ("lora_synthetic", "lora_real"), ("lora", "lora_real"))


def source_note(methods: dict[str, Any]) -> str | None:
    """The line explaining the per-source rows, where there are any."""
    return SOURCE_NOTE if DIAGNOSTIC & set(methods) else None


# ---- pure: aggregation and the report ---------------------------------------------------------


def summarize_method(per_query: list[dict[str, Any]], seconds: list[float],
                     cfg: EvaluateConfig, seed: int) -> dict[str, Any]:
    """Mean and bootstrap interval of each metric, plus latency percentiles."""
    out = {m: bootstrap_ci([q[m] for q in per_query], cfg.bootstrap, seed) for m in METRICS}
    return {**out, "latency": latency_summary(seconds)}


def compare(per_method: dict[str, list[dict[str, Any]]], cfg: EvaluateConfig,
            seed: int) -> dict[str, Any]:
    """Paired nDCG@10 / Recall@10 differences between methods, with intervals and a verdict."""
    out = {}
    for a, b in COMPARISONS:
        if a in per_method and b in per_method:
            diffs = {m: paired_diff_ci([q[m] for q in per_method[a]],
                                       [q[m] for q in per_method[b]], cfg.bootstrap, seed)
                     for m in ("ndcg@10", "recall@10")}
            out[f"{a}_vs_{b}"] = {**diffs, "verdict": separated(diffs["ndcg@10"])}
    return out


def fmt(ci: dict[str, float]) -> str:
    return f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def retrieval_markdown(report: dict[str, Any]) -> str:
    """The retrieval scoreboard as a Markdown table plus the paired comparisons."""
    lines = [f"## Retrieval ({report['questions']} eval questions, document level)", "",
             "| method | " + " | ".join(METRICS) + " | p50 ms | p95 ms |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    for name, row in report["methods"].items():
        lat = row["latency"]
        lines.append(f"| {name} | " + " | ".join(fmt(row[m]) for m in METRICS)
                     + f" | {lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} |")
    if note := source_note(report["methods"]):
        lines += ["", note]
    lines += chosen_lines(report.get("chosen"))
    lines += ["", "Paired differences in nDCG@10 (bootstrap 95% interval):", ""]
    words = {1: "better", -1: "worse", 0: "no separable difference"}
    for key, diff in report["comparisons"].items():
        a, b = key.split("_vs_")
        lines.append(f"- {a} − {b}: {diff['ndcg@10']['mean']:+.3f} "
                     f"[{diff['ndcg@10']['lo']:+.3f}, {diff['ndcg@10']['hi']:+.3f}] → "
                     f"{a} {words[diff['verdict']]}")
    return "\n".join(lines) + "\n"


def chosen_lines(chosen: dict[str, Any] | None) -> list[str]:
    """The retrieval method chosen on the train slice, and why (nothing before choices existed)."""
    if not chosen:
        return []
    scores = ", ".join(f"{m} {fmt(ci)}" for m, ci in chosen["validation"].items())
    return ["", f"Chosen method: **{chosen['method']}** — {chosen['why']} "
                f"({chosen['questions']} train questions, nDCG@10: {scores}); the rag/hybrid "
                "answers, serving's default search and gate rules on retrieval.chosen use it."]


# ---- effects: queries ---------------------------------------------------------------------------


def run_queries(questions: list[dict[str, Any]], table: Any, mode: str, model: Any,
                section: EvaluateConfig, index: IndexConfig) -> tuple[list[dict[str, Any]], list[float]]:
    """Search every question one at a time (as serving would); score and time each. A row holds
    the question's metrics and its top documents ("retrieved"), for the per-question file."""
    from tasks.lib.per_question import score_retrieval
    from tasks.lib.search import search

    rows, seconds = [], []
    for q in questions:
        started = time.perf_counter()
        hits = search(table, q["question"], mode, section.chunk_k, model, section.rrf_k, index)
        seconds.append(time.perf_counter() - started)
        rows.append(score_retrieval(hits, set(q["doc_ids"])))
    return rows, seconds
