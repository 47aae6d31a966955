"""evaluate: the retrieval scoreboard on held-out questions (BM25, base, LoRA, hybrid).

Reads data/prepared/eval_qa.jsonl and reports/index/index.json (tables + retrievers); writes
reports/evaluate/retrieval.json (per-method metrics with bootstrap 95% intervals, paired
differences, latency), retrieval.md (readable table) and metrics.json (means, for DVC).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import Config, EvaluateConfig
from tasks.metrics import bootstrap_ci, latency_summary, paired_diff_ci, retrieval_scores, separated

log = logging.getLogger(__name__)

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
# method -> (table role, search mode, model role)
METHODS = {"bm25": ("base", "bm25", None), "base": ("base", "vector", "base"),
           "lora": ("candidate", "vector", "candidate"),
           "hybrid": ("candidate", "hybrid", "candidate")}
COMPARISONS = (("lora", "base"), ("hybrid", "base"), ("hybrid", "lora"), ("base", "bm25"))

# ---- pure: aggregation and the report ---------------------------------------------------------


def summarize_method(per_query: list[dict[str, float]], seconds: list[float],
                     cfg: EvaluateConfig, seed: int) -> dict[str, Any]:
    """Mean and bootstrap interval of each metric, plus latency percentiles."""
    out = {m: bootstrap_ci([q[m] for q in per_query], cfg.bootstrap, seed) for m in METRICS}
    return {**out, "latency": latency_summary(seconds)}


def compare(per_method: dict[str, list[dict[str, float]]], cfg: EvaluateConfig,
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
    lines += ["", "Paired differences in nDCG@10 (bootstrap 95% interval):", ""]
    words = {1: "better", -1: "worse", 0: "no separable difference"}
    for key, diff in report["comparisons"].items():
        a, b = key.split("_vs_")
        lines.append(f"- {a} − {b}: {diff['ndcg@10']['mean']:+.3f} "
                     f"[{diff['ndcg@10']['lo']:+.3f}, {diff['ndcg@10']['hi']:+.3f}] → "
                     f"{a} {words[diff['verdict']]}")
    return "\n".join(lines) + "\n"


# ---- effects: models, tables, files -----------------------------------------------------------


def run_queries(questions: list[dict[str, Any]], table: Any, mode: str, model: Any,
                cfg: Config) -> tuple[list[dict[str, float]], list[float]]:
    """Search every question one at a time (as serving would); score and time each."""
    from tasks.search import collapse_to_docs, search

    scores, seconds = [], []
    for q in questions:
        started = time.perf_counter()
        hits = search(table, q["question"], mode, cfg.evaluate.chunk_k, model,
                      cfg.evaluate.rrf_k, cfg.index)
        seconds.append(time.perf_counter() - started)
        scores.append(retrieval_scores(collapse_to_docs(hits), set(q["doc_ids"])))
    return scores, seconds


def evaluate_retrieval(cfg: Config, questions: list[dict[str, Any]],
                       index_info: dict[str, Any]) -> dict[str, Any]:
    """Run every method available in the index on the eval questions."""
    from tasks.models import load_retriever, retriever_base_dir
    from tasks.search import connect, open_pinned

    db = connect(index_info["index_uri"])
    base_dir = retriever_base_dir(cfg)
    tables, models = {}, {}
    for role, info in index_info["tables"].items():
        tables[role] = open_pinned(db, info)  # the recorded version, not "whatever is newest"
        adapter = Path(info["adapter_dir"]) if info["adapter_dir"] else None
        models[role] = load_retriever(base_dir, adapter, cfg.index.device)
    per_method, report_methods = {}, {}
    for name, (table_role, mode, model_role) in METHODS.items():
        if table_role not in tables:
            continue
        scores, seconds = run_queries(questions, tables[table_role], mode,
                                      models.get(model_role), cfg)
        per_method[name] = scores
        report_methods[name] = summarize_method(scores, seconds, cfg.evaluate, cfg.project.seed)
        log.info("evaluate %s: nDCG@10 %s, p95 %.1f ms", name, fmt(report_methods[name]["ndcg@10"]),
                 report_methods[name]["latency"]["p95_ms"])
    return {"questions": len(questions), "methods": report_methods,
            "comparisons": compare(per_method, cfg.evaluate, cfg.project.seed),
            "tables": {r: {"table": i["table"], "version": i["version"]}
                       for r, i in index_info["tables"].items()}}


def evaluate_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Score retrieval in the stage's MLflow run; write reports/evaluate/."""
    import mlflow

    from tasks.data import read_jsonl
    from tasks.search import load_index_info
    from tasks.tracking import stage_run

    with stage_run(cfg, "evaluate", parent_run_id):
        questions = read_jsonl(Path(cfg.paths.prepared_dir) / "eval_qa.jsonl")
        if cfg.evaluate.max_questions:
            questions = questions[: cfg.evaluate.max_questions]
        report = evaluate_retrieval(cfg, questions, load_index_info(cfg))
        out = Path(cfg.paths.reports_dir) / "evaluate"
        out.mkdir(parents=True, exist_ok=True)
        (out / "retrieval.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "retrieval.md").write_text(retrieval_markdown(report), encoding="utf-8")
        means = {name: {m: round(row[m]["mean"], 4) for m in METRICS}
                 | {"p95_ms": round(row["latency"]["p95_ms"], 2)}
                 for name, row in report["methods"].items()}
        (out / "metrics.json").write_text(json.dumps({"retrieval": means}, indent=2) + "\n")
        mlflow.log_metrics({f"{name}_{m.replace('@', '_at_')}": v for name, row in means.items()
                            for m, v in row.items()})
        for name in ("retrieval.json", "retrieval.md", "metrics.json"):
            mlflow.log_artifact(str(out / name), "evaluate")
    return report


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="evaluate")
def evaluate(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Write the retrieval scoreboard to reports/evaluate and MLflow."""
    return evaluate_stage(cfg, parent_run_id)
