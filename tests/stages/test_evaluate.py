"""evaluate (tasks/evaluate.py): the reports it writes from the retrieval and answer results (no
models); the full stage runs under the pipeline flow test."""

import json

from tasks.evaluate import with_recommendation, write_reports
from tasks.lib.retrieval_eval import METRICS


def ci(mean: float) -> dict[str, float]:
    return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1}


RETRIEVAL = {
    "questions": 2,
    "methods": {name: {**{m: ci(v) for m in METRICS}, "latency": {"p50_ms": 1.0, "p95_ms": p95}}
                for name, v, p95 in (("bm25", 0.51234, 2.345), ("fusion", 0.8, 9.876))},
    "comparisons": {"fusion_vs_bm25": {"ndcg@10": ci(0.3), "recall@10": ci(0.2), "verdict": 1}},
    "tables": {"base": {"table": "chunks_a", "version": 1}},
    "chosen": {"method": "fusion", "why": "fusion: best nDCG@10 on the validation slice (0.700)",
               "validation": {"bm25": ci(0.4), "fusion": ci(0.7)}, "questions": 20}}
ANSWERS = {
    "questions": 2, "verdict": "On this data, embeddings (rag) answers best.",
    "summary": {"base": {"token_f1": ci(0.21234)}, "rag": {"token_f1": ci(0.4)}},
    "winners": {"token_f1": "rag"},
    "speed": {"base": {"latency_ms": 10.0, "tokens_per_s": 5.0},
              "rag": {"latency_ms": 20.0, "tokens_per_s": 4.0}},
    "costs": {"base": {"train_seconds": 0.0}, "rag": {"train_seconds": 3.0}},
    "answers": {"base": [], "rag": []}}


PER_QUESTION = {"questions": [], "retrieval": {}, "answers": {}}


def test_write_reports_writes_every_report_and_rounded_metrics(tmp_path):
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "scoreboard.html").write_text("the page before report.html")
    out = write_reports(tmp_path / "evaluate", RETRIEVAL, ANSWERS, PER_QUESTION)
    assert sorted(p.name for p in out.iterdir()) == [
        "answers.json", "metrics.json", "per_question.json", "report.html", "retrieval.json",
        "retrieval.md", "scoreboard.md"]
    assert json.loads((out / "per_question.json").read_text()) == PER_QUESTION
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {
        "retrieval": {"bm25": {**dict.fromkeys(METRICS, 0.5123), "p95_ms": 2.35},
                      "fusion": {**dict.fromkeys(METRICS, 0.8), "p95_ms": 9.88},
                      "chosen": {**dict.fromkeys(METRICS, 0.8), "p95_ms": 9.88}},
        "answers": {"base": {"token_f1": 0.2123}, "rag": {"token_f1": 0.4}}}
    assert json.loads((out / "retrieval.json").read_text()) == RETRIEVAL
    md = (out / "scoreboard.md").read_text()
    assert md.startswith("# tunedex scoreboard\n\n## Answers (2 eval questions)")
    assert "| fusion |" in (out / "retrieval.md").read_text() and "## Retrieval" in md
    assert ("Chosen method: **fusion** — fusion: best nDCG@10 on the validation slice (0.700) "
            "(20 train questions, nDCG@10: bm25 0.400 [0.300, 0.500], fusion 0.700 [0.600, 0.800])"
            in md)
    assert "- fusion − bm25: +0.300 [+0.200, +0.400] → fusion better" in md
    page = (out / "report.html").read_text()
    assert "<h2>Answers</h2>" in page and "<h2>Retrieval</h2>" in page and page.count("<svg") == 1
    assert "No recommendation" in page  # these answers carry none (no per-question scores)


def test_with_recommendation_adds_the_decision_and_makes_its_line_the_verdict():
    rows = {s: [{"qid": f"q{i}", "token_f1": v + 0.1 * (i % 2)} for i in range(20)]
            for s, v in (("base", 0.1), ("rag", 0.6))}
    answers = with_recommendation({**ANSWERS, "answers": rows}, RETRIEVAL, 200, 0)
    rec = answers["recommendation"]
    assert (rec["setup"], rec["confidence"]) == ("rag", "separated")
    assert answers["verdict"] == rec["summary"] and answers["verdict"].startswith("Ship embed (rag)")
    assert list(answers)[-1] == "answers" and "recommendation" not in ANSWERS


def test_the_retrieval_method_is_chosen_on_a_seeded_slice_of_the_train_questions(tmp_path):
    from tasks.evaluate import choose_retrieval
    from tasks.lib.config import EvaluateConfig, IndexConfig
    from tests.lib.test_search import Fixed, small_table

    table = small_table(tmp_path)
    train = [{"qid": f"t{i}", "question": q, "doc_ids": [d]} for i, (q, d) in enumerate(
        [("visa cards", "d0"), ("refund order", "d1"), ("shipping delivery", "d2"),
         ("cash refund", "d3"), ("card payment", "d4"), ("password login", "d5")] * 3)]
    chosen = choose_retrieval(EvaluateConfig(choice_questions=10, chunk_k=10, bootstrap=200),
                              IndexConfig(), 0, train, {"base": table, "candidate": table},
                              {"base": Fixed(), "candidate": Fixed()})
    assert chosen["questions"] == 10
    assert set(chosen["validation"]) == {"bm25", "base", "lora", "fusion", "fusion_native"}
    # the words match the text and the fixed vector carries nothing: BM25 is best (or tied
    # with fusion, and cheaper)
    best = max(v["mean"] for v in chosen["validation"].values())
    assert chosen["method"] == "bm25" and chosen["validation"]["bm25"]["mean"] == best
