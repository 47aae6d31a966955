"""evaluate: the scoreboard on held-out questions — retrieval (BM25, base, LoRA, fusion and
LanceDB's native fusion) and answers (base, finetuned, rag, hybrid).

First the retrieval method the release uses is chosen on a seeded slice of the *train* questions
(tasks/lib/choice.py); rag/hybrid answers take their context from it. Reads
data/prepared/{train,eval}_qa.jsonl, reports/index/index.json (pinned tables + retrievers) and the
generator adapter; writes reports/evaluate/: retrieval.json/.md (with the "chosen" method),
answers.json (with the recommendation), per_question.json (every question's scores, retrieved
documents and answers: what promote pairs releases on and the report's drill-down shows),
scoreboard.md,
report.html (the page a person reads: recommendation, tables, plots, every question;
self-contained), metrics.json (means, for DVC) and plots/{retrieval,answers}.json (bars per
method and setup, for `dvc plots`); in MLflow, per-question tables (tasks/lib/per_question.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect import task

from tasks.lib.choice import chosen_metrics
from tasks.lib.config import EvaluateConfig, GenerateConfig, IndexConfig
from tasks.lib.context import StageContext
from tasks.lib.provenance import SYNTHETIC_EVAL_WARNING, provenance
from tasks.lib.retrieval_eval import (
    DIAGNOSTIC,
    METHODS,
    METRICS,
    compare,
    fmt,
    retrieval_markdown,
    run_queries,
    summarize_method,
)
from tasks.lib.runtime import IO_RETRIES

log = logging.getLogger(__name__)

# ---- effects: models, tables, files -----------------------------------------------------------


def open_indexed(ctx: StageContext, index: IndexConfig, info: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pinned table and loaded retriever of each indexed role (base, candidate), loaded once."""
    from tasks.lib.models import retriever_base_dir
    from tasks.lib.search import open_retriever

    base_dir = retriever_base_dir(ctx.models, ctx.catalog.models_dir)
    opened = {role: open_retriever(info, role, base_dir, index.device, index.precision)
              for role in info["tables"]}
    return {r: t for r, (t, _) in opened.items()}, {r: m for r, (_, m) in opened.items()}


def evaluate_retrieval(section: EvaluateConfig, index: IndexConfig, seed: int,
                       questions: list[dict[str, Any]], info: dict[str, Any],
                       tables: dict[str, Any], models: dict[str, Any]
                       ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Run every method available in the index on the eval questions: (report, rows per method)."""
    per_method, report_methods = {}, {}
    for name, (table_role, mode, model_role) in METHODS.items():
        if table_role not in tables:
            continue
        scores, seconds = run_queries(questions, tables[table_role], mode, models.get(model_role),
                                      section, index)
        per_method[name] = scores
        report_methods[name] = summarize_method(scores, seconds, section, seed)
        log.info("evaluate %s: nDCG@10 %s, p95 %.1f ms", name, fmt(report_methods[name]["ndcg@10"]),
                 report_methods[name]["latency"]["p95_ms"])
    return {"questions": len(questions), "methods": report_methods,
            "comparisons": compare(per_method, section, seed),
            "tables": {r: {"table": i["table"], "version": i["version"]}
                       for r, i in info["tables"].items()}}, per_method


def choose_retrieval(section: EvaluateConfig, index: IndexConfig, seed: int,
                     train_qa: list[dict[str, Any]], tables: dict[str, Any],
                     models: dict[str, Any]) -> dict[str, Any]:
    """Measure every indexed method on a seeded slice of the train questions (never eval) and
    choose the one the answers, serving and the gate use."""
    from tasks.lib.choice import choice_slice, choose_method
    from tasks.lib.metrics import latency_summary

    questions = choice_slice(train_qa, section.choice_questions, seed)
    scores, p95 = {}, {}
    for name, (table_role, mode, model_role) in METHODS.items():
        if table_role in tables and name not in DIAGNOSTIC:
            rows, seconds = run_queries(questions, tables[table_role], mode,
                                        models.get(model_role), section, index)
            scores[name] = [r["ndcg@10"] for r in rows]
            p95[name] = latency_summary(seconds)["p95_ms"]
    chosen = choose_method(scores, section.bootstrap, seed, p95)
    log.info("evaluate: retrieval method %s", chosen["why"])
    return chosen


def answer_report(section: EvaluateConfig, generate: GenerateConfig, index: IndexConfig,
                  ctx: StageContext, questions: list[dict[str, Any]], tables: dict[str, Any],
                  models: dict[str, Any], method: str) -> dict[str, Any]:
    """The four-way answer scoreboard (context by the chosen `method`): summaries, winners,
    costs."""
    from tasks.lib.answers import evaluate_answers, load_stage_reports, option_costs
    from tasks.lib.scoreboard import HEADLINE, summarize_setups, winner

    limit = section.answer_questions
    questions = questions[:limit] if limit else questions
    answers = evaluate_answers(generate, index, ctx, questions, tables, models,
                               method=method, rrf_k=section.rrf_k)
    per_setup, seed = answers["per_setup"], ctx.seed
    summary = summarize_setups(per_setup, section.bootstrap, seed)
    winners = {m: winner(per_setup, m, section.bootstrap, seed) for m in HEADLINE
               if all(m in row for row in summary.values())}
    costs = {s: c for s, c in option_costs(load_stage_reports(ctx.catalog)).items() if s in summary}
    return {"questions": len(questions), "summary": summary, "winners": winners,
            "speed": answers["speed"], "costs": costs, "answers": per_setup}


def with_recommendation(answers: dict[str, Any], retrieval: dict[str, Any], resamples: int,
                        seed: int) -> dict[str, Any]:
    """The answer report plus the option to ship; its one line is the verdict (log, scoreboard.md)."""
    from tasks.lib.recommend import recommend_reports

    rec = recommend_reports(answers, retrieval, resamples, seed)
    head = {k: v for k, v in answers.items() if k != "answers"}
    return {**head, "verdict": rec["summary"], "recommendation": rec, "answers": answers["answers"]}


def report_page(section: EvaluateConfig, seed: int, questions: list[dict[str, Any]],
                per_question: dict[str, Any], tables: dict[str, Any], models: dict[str, Any]
                ) -> dict[str, Any]:
    """What report.html shows beyond the scores: each question, loss curves, the embedding map."""
    import mlflow

    from tasks.lib.report_inputs import embedding_spaces, loss_histories

    return {"per_question": per_question,
            "losses": loss_histories(mlflow.active_run().info.experiment_id),
            "spaces": embedding_spaces(tables, models, questions),
            "resamples": section.bootstrap, "seed": seed}


def write_reports(out: Path, retrieval: dict[str, Any], answers: dict[str, Any],
                  per_question: dict[str, Any], page: dict[str, Any] | None = None) -> Path:
    """reports/evaluate/: retrieval and answer JSON, per-question results, Markdown, the HTML
    report, DVC metrics."""
    from tasks.lib.files import write_json, write_text_atomic
    from tasks.lib.report import render_report
    from tasks.lib.scoreboard import scoreboard_markdown

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "retrieval.json", retrieval)
    write_json(out / "answers.json", answers)
    write_json(out / "per_question.json", per_question)
    md = f"# tunedex scoreboard\n\n{scoreboard_markdown(answers)}\n{retrieval_markdown(retrieval)}"
    write_text_atomic(out / "retrieval.md", retrieval_markdown(retrieval))
    write_text_atomic(out / "scoreboard.md", md)
    write_text_atomic(out / "report.html", render_report(answers, retrieval, **(page or {})))
    # the page report.html replaced: a stale copy would be logged beside it and contradict it
    (out / "scoreboard.html").unlink(missing_ok=True)
    methods = {name: {m: round(row[m]["mean"], 4) for m in METRICS}
               | {"p95_ms": round(row["latency"]["p95_ms"], 2)}
               for name, row in retrieval["methods"].items()}
    chosen = retrieval.get("chosen", {}).get("method")
    metrics = {"retrieval": chosen_metrics(methods, chosen),
               "answers": {s: {m: round(ci["mean"], 4) for m, ci in row.items()}
                           for s, row in answers["summary"].items()}}
    write_json(out / "metrics.json", metrics)
    return out


def evaluate_stage(section: EvaluateConfig, generate: GenerateConfig, index: IndexConfig,
                   ctx: StageContext) -> dict[str, Any]:
    """Score retrieval and answers in the stage's MLflow run; write reports/evaluate/."""
    import mlflow

    from tasks.lib.config import flatten
    from tasks.lib.data import read_jsonl
    from tasks.lib.dvc_plots import write_evaluate_plots
    from tasks.lib.per_question import build_per_question, per_question_tables
    from tasks.lib.search import load_index_info
    from tasks.lib.tracking import log_tables, mlflow_key, stage_run

    cat = ctx.catalog
    with stage_run(ctx, "evaluate", section, generate, index):
        chosen_on = read_jsonl(cat.train_qa_path)  # the choice never sees an eval question
        questions = read_jsonl(cat.eval_qa_path)
        if section.max_questions:
            questions = questions[: section.max_questions]
        info = load_index_info(cat)
        tables, models = open_indexed(ctx, index, info)
        chosen = choose_retrieval(section, index, ctx.seed, chosen_on, tables, models)
        retrieval, rows = evaluate_retrieval(section, index, ctx.seed, questions, info, tables,
                                             models)
        retrieval = {**retrieval, "chosen": chosen}
        answers = answer_report(section, generate, index, ctx, questions, tables, models,
                                chosen["method"])
        answers = with_recommendation(answers, retrieval, section.bootstrap, ctx.seed)
        prov = provenance(chosen_on, questions)  # shown before the verdict
        answers = {"provenance": prov, **answers} | (
            {"warning": SYNTHETIC_EVAL_WARNING} if prov["eval_synthetic"] else {})
        per_question = build_per_question(questions, rows, answers["answers"])
        page = report_page(section, ctx.seed, questions, per_question, tables, models)
        out = write_reports(cat.evaluate_dir, retrieval, answers, per_question, page)
        metrics = json.loads(cat.evaluate_metrics_path.read_text())
        write_evaluate_plots(cat, metrics)  # per-method bars for `dvc plots`
        mlflow.log_metrics({mlflow_key(k): v for k, v in flatten(metrics).items()})
        mlflow.log_artifacts(str(out), "evaluate")
        log_tables(per_question_tables(per_question))  # the UI compares setups per question
        log.info("evaluate: %s", answers["verdict"])
        if answers["provenance"]["eval_synthetic"]:
            log.warning("evaluate: %s", SYNTHETIC_EVAL_WARNING)
    return {"retrieval": retrieval, "answers": {k: v for k, v in answers.items() if k != "answers"},
            "report_dir": str(out)}


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="evaluate", **IO_RETRIES)
def evaluate(section: EvaluateConfig, generate: GenerateConfig, index: IndexConfig,
             ctx: StageContext, prepared: dict[str, Any], tables: dict[str, Any],
             generator: dict[str, Any]) -> dict[str, Any]:
    """Write the scoreboard to reports/evaluate and MLflow; publish it as a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.lib.incremental import run_or_reuse

    result = run_or_reuse(ctx, "evaluate", lambda: evaluate_stage(section, generate, index, ctx))
    markdown = (ctx.catalog.evaluate_dir / "scoreboard.md").read_text(encoding="utf-8")
    create_markdown_artifact(markdown, key="scoreboard", description="fine-tune, embed or both?")
    return result
