"""Per-question results (tasks/lib/per_question.py): the file's exact shape, the eval-set digest,
and the per-question values the gate pairs on."""

import pytest

from tasks.lib.per_question import (
    answer_rows,
    build_per_question,
    eval_set_digest,
    metric_values,
    per_question_tables,
    question_record,
    retrieval_rows,
    retrieved_docs,
    score_retrieval,
)

QUESTIONS = [
    {"qid": "q1", "question": "Which cards?", "answer": "Visa.", "doc_ids": ["d1"],
     "metadata": {"topic": "pay"}, "split": "eval"},
    {"qid": "q2", "question": "Night hours?", "answer": "22 to 6.", "doc_ids": ["d2", "d3"]},
]
HITS = [{"doc_id": "d2", "chunk_id": "d2#0", "score": 0.9, "text": "..."},
        {"doc_id": "d1", "chunk_id": "d1#1", "score": 0.8, "text": "..."},
        {"doc_id": "d2", "chunk_id": "d2#1", "score": 0.7, "text": "..."},
        {"doc_id": "d3", "chunk_id": "d3#0", "score": 0.5, "text": "..."}]


def test_retrieved_documents_each_at_its_best_chunk():
    assert retrieved_docs(HITS) == [{"doc_id": "d2", "chunk_id": "d2#0", "score": 0.9},
                                    {"doc_id": "d1", "chunk_id": "d1#1", "score": 0.8},
                                    {"doc_id": "d3", "chunk_id": "d3#0", "score": 0.5}]
    assert retrieved_docs(HITS, 1) == [{"doc_id": "d2", "chunk_id": "d2#0", "score": 0.9}]


def test_score_retrieval_ranks_documents_and_keeps_the_top_ten():
    row = score_retrieval(HITS, {"d1"})
    assert row == {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "mrr@10": 0.5,
                   "ndcg@10": pytest.approx(1 / 1.5849625007211563),
                   "retrieved": retrieved_docs(HITS)}
    many = [{"doc_id": f"d{i}", "chunk_id": f"d{i}#0", "score": 1 / (i + 1)} for i in range(15)]
    assert [h["doc_id"] for h in score_retrieval(many, {"d14"})["retrieved"]] == [
        f"d{i}" for i in range(10)]


def per_question():
    retrieval = {"fusion": [score_retrieval(HITS, {"d1"}), score_retrieval(HITS, {"d2", "d3"})]}
    answers = {"rag": [{"qid": "q1", "answer": "Visa", "token_f1": 1.0, "rouge_l": 1.0,
                        "exact_match": 1.0, "semantic_sim": 0.9, "groundedness": None,
                        "cited": ["d2", "d1"], "accuracy": 1.0, "note": "x"}]}  # note: not in the file
    return build_per_question(QUESTIONS, retrieval, answers)


def test_build_per_question_has_exactly_the_agreed_shape():
    out = per_question()
    assert out["questions"] == [
        {"qid": "q1", "question": "Which cards?", "reference": "Visa.", "doc_ids": ["d1"],
         "metadata": {"topic": "pay"}},
        {"qid": "q2", "question": "Night hours?", "reference": "22 to 6.", "doc_ids": ["d2", "d3"],
         "metadata": {}}]
    assert list(out["retrieval"]["fusion"]) == ["q1", "q2"]
    assert list(out["retrieval"]["fusion"]["q2"]) == ["ndcg@10", "recall@1", "recall@5",
                                                      "recall@10", "mrr@10", "retrieved"]
    assert out["retrieval"]["fusion"]["q2"]["recall@1"] == 0.5
    assert out["answers"] == {"rag": {"q1": {
        "answer": "Visa", "token_f1": 1.0, "rouge_l": 1.0, "exact_match": 1.0,
        "semantic_sim": 0.9, "groundedness": None, "accuracy": 1.0, "cited": ["d2", "d1"]}}}


def test_eval_set_digest_follows_questions_and_references_not_order():
    out = per_question()
    digest = eval_set_digest(out)
    assert len(digest) == 16
    assert eval_set_digest({"questions": out["questions"][::-1]}) == digest
    changed = [{**out["questions"][0], "reference": "Visa and Mastercard."}, out["questions"][1]]
    assert eval_set_digest({"questions": changed}) != digest
    assert eval_set_digest({"questions": out["questions"][:1]}) != digest


def test_metric_values_by_qid_or_none_without_per_question_values():
    out = per_question()
    assert metric_values(out, "retrieval.fusion.recall@1") == {"q1": 0.0, "q2": 0.5}
    assert metric_values(out, "answers.rag.token_f1") == {"q1": 1.0}
    assert metric_values(out, "answers.rag.groundedness") == {}  # no value for any question
    assert metric_values(out, "retrieval.fusion.p95_ms") is None  # latency: a point value only
    assert metric_values(out, "retrieval.bm25.ndcg@10") is None  # method not run
    assert metric_values(out, "answers.rag.cited") is None
    assert metric_values(out, "answers.rag.accuracy") == {"q1": 1.0}  # short-answer questions
    assert metric_values(out, "other.rag.token_f1") is None


def table_input():
    ranked = [{"doc_id": f"d{i}", "chunk_id": f"d{i}#0", "score": 1 - i / 10} for i in range(7)]
    retrieval = {"bm25": [score_retrieval(ranked, {"d1"}), score_retrieval(ranked[::-1], {"d2"})],
                 "lora": [score_retrieval(ranked[1:], {"d1"}), score_retrieval(ranked, {"d9"})]}
    answer = {"answer": "Visa", "token_f1": 1.0, "rouge_l": 0.5, "exact_match": 1.0,
              "semantic_sim": 0.9, "groundedness": None, "cited": ["d2", "d1"]}
    answers = {"base": [{**answer, "qid": "q2", "cited": []}],
               "rag": [{**answer, "qid": "q2"}, {**answer, "qid": "q1", "token_f1": 0.25}]}
    return build_per_question(QUESTIONS, retrieval, answers)


def test_answer_rows_one_per_question_and_setup_in_question_order():
    head = {"answer": "Visa", "rouge_l": 0.5, "exact_match": 1.0, "semantic_sim": 0.9,
            "groundedness": None, "accuracy": None}  # accuracy: None without choices
    assert answer_rows(table_input()) == [
        {"qid": "q1", "question": "Which cards?", "reference": "Visa.", "setup": "rag",
         **head, "token_f1": 0.25, "cited": "d2, d1"},
        {"qid": "q2", "question": "Night hours?", "reference": "22 to 6.", "setup": "base",
         **head, "token_f1": 1.0, "cited": ""},
        {"qid": "q2", "question": "Night hours?", "reference": "22 to 6.", "setup": "rag",
         **head, "token_f1": 1.0, "cited": "d2, d1"}]
    assert list(answer_rows(table_input())[0]) == [
        "qid", "question", "reference", "setup", "answer", "token_f1", "rouge_l", "exact_match",
        "semantic_sim", "groundedness", "accuracy", "cited"]


def test_retrieval_rows_one_per_question_and_method_with_the_top_documents():
    rows = retrieval_rows(table_input(), top=3)
    assert [(r["qid"], r["method"]) for r in rows] == [
        ("q1", "bm25"), ("q1", "lora"), ("q2", "bm25"), ("q2", "lora")]
    assert rows[0] == {"qid": "q1", "question": "Which cards?", "method": "bm25",
                       "ndcg@10": pytest.approx(1 / 1.5849625007211563), "recall@10": 1.0,
                       "top_doc_ids": "d0, d1, d2", "relevant_doc_ids": "d1"}
    assert rows[1]["ndcg@10"] == 1.0 and rows[1]["top_doc_ids"] == "d1, d2, d3"
    assert rows[2]["top_doc_ids"] == "d6, d5, d4" and rows[2]["relevant_doc_ids"] == "d2, d3"
    assert rows[3]["recall@10"] == 0.0
    assert len(retrieval_rows(table_input())[0]["top_doc_ids"].split(", ")) == 5


def test_per_question_tables_by_artifact_file():
    tables = per_question_tables(table_input())
    assert list(tables) == ["per_question.json", "per_question_retrieval.json"]
    assert tables["per_question.json"] == answer_rows(table_input())


def test_question_record_keeps_choices_only_where_a_question_has_some():
    plain = {"qid": "q1", "question": "Q?", "answer": "A.", "doc_ids": ["d1"]}
    assert "choices" not in question_record(plain)
    chosen = question_record({**plain, "answer": "Yes. Because.", "choices": ["yes", "no"]})
    assert chosen["choices"] == ["yes", "no"] and chosen["reference"] == "Yes. Because."


def test_a_file_from_before_the_rename_pairs_its_hybrid_rows_as_fusion():
    old = {"retrieval": {"hybrid": {"q1": {"ndcg@10": 0.5}}}}
    assert metric_values(old, "retrieval.fusion.ndcg@10") == {"q1": 0.5}
    assert metric_values(old, "retrieval.lora.ndcg@10") is None
