"""Per-question results of one evaluation (reports/evaluate/per_question.json), pure.

evaluate writes them; promote logs them with the release and pairs candidate and champion on
the questions both answered; the scoreboard's drill-down reads them. Shape:

    {"questions": [{"qid", "question", "reference", "doc_ids", "metadata"}],
     "retrieval": {method: {qid: {"ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10",
                                  "retrieved": [{"doc_id", "chunk_id", "score"}, ...]}}},
     "answers": {setup: {qid: {"answer", "token_f1", "rouge_l", "exact_match", "semantic_sim",
                               "groundedness", "accuracy", "cited"}}}}

accuracy: 1.0/0.0 on a short-answer question (qa.jsonl `choices`, tasks/lib/choices.py), else null.

A function of the inputs only (no timings): DVC hashes it and two runs on the same data agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tasks.lib.metrics import retrieval_scores

RETRIEVED_K = 10  # documents kept per question and method (the deepest cut-off scored)
RETRIEVAL_FIELDS = ("ndcg@10", "recall@1", "recall@5", "recall@10", "mrr@10", "retrieved")
ANSWER_FIELDS = ("answer", "token_f1", "rouge_l", "exact_match", "semantic_sim", "groundedness",
                 "accuracy", "cited")
SCORED = {"retrieval": RETRIEVAL_FIELDS[:-1], "answers": ANSWER_FIELDS[1:-1]}  # gate metrics


def question_record(question: dict[str, Any]) -> dict[str, Any]:
    """One eval question as the per-question file lists it (`choices` only where it has some:
    re-scoring a champion asks such questions with the same prompt)."""
    record = {"qid": question["qid"], "question": question["question"],
              "reference": question["answer"], "doc_ids": list(question["doc_ids"]),
              "metadata": question.get("metadata") or {}}
    return {**record, "choices": question["choices"]} if question.get("choices") else record


def retrieved_docs(hits: Sequence[dict[str, Any]], k: int = RETRIEVED_K) -> list[dict[str, Any]]:
    """The top-k documents of a chunk ranking, each at its best chunk (as the metrics rank them)."""
    best: dict[str, dict[str, Any]] = {}
    for hit in hits:
        best.setdefault(hit["doc_id"], hit)
    return [{"doc_id": h["doc_id"], "chunk_id": h["chunk_id"], "score": float(h["score"])}
            for h in list(best.values())[:k]]


def score_retrieval(hits: Sequence[dict[str, Any]], relevant: set[str]) -> dict[str, Any]:
    """One question's retrieval metrics plus the documents it retrieved."""
    retrieved = retrieved_docs(hits, len(hits))
    return {**retrieval_scores([h["doc_id"] for h in retrieved], relevant),
            "retrieved": retrieved[:RETRIEVED_K]}


def build_per_question(questions: Sequence[dict[str, Any]],
                       retrieval: dict[str, Sequence[dict[str, Any]]],
                       answers: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """The per-question file from evaluate's rows: retrieval rows align with `questions`,
    answer rows carry their qid (the answer setups may cover fewer questions)."""
    qids = [q["qid"] for q in questions]
    return {"questions": [question_record(q) for q in questions],
            "retrieval": {method: {qid: {f: row[f] for f in RETRIEVAL_FIELDS}
                                   for qid, row in zip(qids, rows, strict=True)}
                          for method, rows in retrieval.items()},
            "answers": {setup: {row["qid"]: {f: row.get(f) for f in ANSWER_FIELDS} for row in rows}
                        for setup, rows in answers.items()}}


def eval_set_digest(per_question: dict[str, Any]) -> str:
    """A digest of the eval set (qid, question, reference; order-free): equal digests mean
    two evaluations asked the same questions and expected the same answers."""
    triples = sorted((q["qid"], q["question"], q["reference"]) for q in per_question["questions"])
    return hashlib.sha256(json.dumps(triples, ensure_ascii=False).encode()).hexdigest()[:16]


def metric_values(per_question: dict[str, Any], metric: str) -> dict[str, float] | None:
    """Per-question values of a gate metric ("retrieval.<method>.<m>", "answers.<setup>.<m>")
    by qid, None where the file has none (latencies, a method or setup not run). Questions
    without a value (groundedness of an answer with no content words) are left out."""
    kind, _, rest = metric.partition(".")
    group, _, name = rest.partition(".")
    found = per_question.get(kind, {})
    rows = found.get(group) or (found.get("hybrid") if kind == "retrieval" and group == "fusion"
                                else None)  # a file from before the rename (hybrid = fusion)
    if name not in SCORED.get(kind, ()) or not rows:
        return None
    return {qid: float(row[name]) for qid, row in rows.items() if row.get(name) is not None}


# ---- MLflow tables: one row per (question, setup) and per (question, method) ------------------

TABLE_DOCS = 5  # retrieved documents shown per row of the retrieval table (the file keeps 10)
ANSWER_TABLE = "per_question.json"  # artifact files of evaluate's run (MLflow table view)
RETRIEVAL_TABLE = "per_question_retrieval.json"


def _ids(doc_ids: Sequence[str] | None) -> str:
    return ", ".join(doc_ids or ())


def answer_rows(per_question: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per question and answer setup (questions in file order, setups as they come):
    what the MLflow table view groups by qid to compare setups."""
    rows = []
    for q in per_question["questions"]:
        for setup, by_qid in per_question["answers"].items():
            if q["qid"] in by_qid:
                got = by_qid[q["qid"]]
                rows.append({"qid": q["qid"], "question": q["question"],
                             "reference": q["reference"], "setup": setup,
                             **{f: got.get(f) for f in ANSWER_FIELDS[:-1]},
                             "cited": _ids(got.get("cited"))})
    return rows


def retrieval_rows(per_question: dict[str, Any], top: int = TABLE_DOCS) -> list[dict[str, Any]]:
    """One row per question and retrieval method: nDCG@10, Recall@10, the top documents and
    the relevant ones."""
    rows = []
    for q in per_question["questions"]:
        for method, by_qid in per_question["retrieval"].items():
            if q["qid"] in by_qid:
                got = by_qid[q["qid"]]
                rows.append({"qid": q["qid"], "question": q["question"], "method": method,
                             "ndcg@10": got["ndcg@10"], "recall@10": got["recall@10"],
                             "top_doc_ids": _ids([d["doc_id"] for d in got["retrieved"][:top]]),
                             "relevant_doc_ids": _ids(q["doc_ids"])})
    return rows


def per_question_tables(per_question: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The tables evaluate logs to MLflow, by artifact file."""
    return {ANSWER_TABLE: answer_rows(per_question),
            RETRIEVAL_TABLE: retrieval_rows(per_question)}
