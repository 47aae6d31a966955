"""evaluate: the scoreboard on held-out questions — retrieval (BM25, base, LoRA, hybrid) and
answers (base, finetuned, rag, hybrid).

Reads data/prepared/eval_qa.jsonl, reports/index/index.json (pinned tables + retrievers) and the
generator adapter; writes reports/evaluate/: retrieval.json/.md, answers.json, scoreboard.md,
scoreboard.html (self-contained, with plots) and metrics.json (means, for DVC).
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
from tasks.runtime import IO_RETRIES

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


def open_indexed(cfg: Config, index_info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pinned table and loaded retriever of each indexed role (base, candidate), loaded once."""
    from tasks.search import open_retriever

    opened = {role: open_retriever(cfg, index_info, role) for role in index_info["tables"]}
    return {r: t for r, (t, _) in opened.items()}, {r: m for r, (_, m) in opened.items()}


def evaluate_retrieval(cfg: Config, questions: list[dict[str, Any]], index_info: dict[str, Any],
                       tables: dict[str, Any], models: dict[str, Any]) -> dict[str, Any]:
    """Run every method available in the index on the eval questions."""
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


def answer_report(cfg: Config, questions: list[dict[str, Any]], tables: dict[str, Any],
                  models: dict[str, Any]) -> dict[str, Any]:
    """The four-way answer scoreboard: summaries, winners, costs and the one-sentence verdict."""
    from tasks.evaluate_answers import evaluate_answers, load_stage_reports, option_costs
    from tasks.scoreboard import HEADLINE, summarize_setups, verdict, winner

    limit = cfg.evaluate.answer_questions
    questions = questions[:limit] if limit else questions
    answers = evaluate_answers(cfg, questions, tables, models)
    per_setup, e = answers["per_setup"], cfg.evaluate
    summary = summarize_setups(per_setup, e.bootstrap, cfg.project.seed)
    winners = {m: winner(per_setup, m, e.bootstrap, cfg.project.seed) for m in HEADLINE
               if all(m in row for row in summary.values())}
    costs = {s: c for s, c in option_costs(load_stage_reports(cfg)).items() if s in summary}
    return {"questions": len(questions), "summary": summary, "winners": winners,
            "speed": answers["speed"], "costs": costs,
            "verdict": verdict(summary, winners, costs), "answers": per_setup}


def write_reports(cfg: Config, retrieval: dict[str, Any], answers: dict[str, Any]) -> Path:
    """reports/evaluate/: retrieval and answer JSON, Markdown, self-contained HTML, DVC metrics."""
    from tasks.scoreboard import plot_bars, plot_cost_quality, scoreboard_html, scoreboard_markdown

    out = Path(cfg.paths.reports_dir) / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.json").write_text(json.dumps(retrieval, indent=2) + "\n")
    (out / "answers.json").write_text(json.dumps(answers, indent=2) + "\n")
    md = f"# tunedex scoreboard\n\n{scoreboard_markdown(answers)}\n{retrieval_markdown(retrieval)}"
    (out / "retrieval.md").write_text(retrieval_markdown(retrieval), encoding="utf-8")
    (out / "scoreboard.md").write_text(md, encoding="utf-8")
    plots = {"answer quality": plot_bars(answers), "cost vs quality": plot_cost_quality(answers)}
    (out / "scoreboard.html").write_text(scoreboard_html(md, plots, "tunedex scoreboard"),
                                         encoding="utf-8")
    metrics = {"retrieval": {name: {m: round(row[m]["mean"], 4) for m in METRICS}
                             | {"p95_ms": round(row["latency"]["p95_ms"], 2)}
                             for name, row in retrieval["methods"].items()},
               "answers": {s: {m: round(ci["mean"], 4) for m, ci in row.items()}
                           for s, row in answers["summary"].items()}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def evaluate_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Score retrieval and answers in the stage's MLflow run; write reports/evaluate/."""
    import mlflow

    from tasks.config import flatten
    from tasks.data import read_jsonl
    from tasks.search import load_index_info
    from tasks.tracking import mlflow_key, stage_run

    with stage_run(cfg, "evaluate", parent_run_id):
        questions = read_jsonl(Path(cfg.paths.prepared_dir) / "eval_qa.jsonl")
        if cfg.evaluate.max_questions:
            questions = questions[: cfg.evaluate.max_questions]
        info = load_index_info(cfg)
        tables, models = open_indexed(cfg, info)
        retrieval = evaluate_retrieval(cfg, questions, info, tables, models)
        answers = answer_report(cfg, questions, tables, models)
        out = write_reports(cfg, retrieval, answers)
        metrics = json.loads((out / "metrics.json").read_text())
        mlflow.log_metrics({mlflow_key(k): v for k, v in flatten(metrics).items()})
        mlflow.log_artifacts(str(out), "evaluate")
        log.info("evaluate: %s", answers["verdict"])
    return {"retrieval": retrieval, "answers": {k: v for k, v in answers.items() if k != "answers"},
            "report_dir": str(out)}


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="evaluate", **IO_RETRIES)
def evaluate(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Write the scoreboard to reports/evaluate and MLflow; publish it as a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    result = evaluate_stage(cfg, parent_run_id)
    markdown = (Path(result["report_dir"]) / "scoreboard.md").read_text(encoding="utf-8")
    create_markdown_artifact(markdown, key="scoreboard", description="fine-tune, embed or both?")
    return result
