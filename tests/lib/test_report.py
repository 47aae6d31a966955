"""The HTML report (tasks/lib/report*.py) and its inputs (tasks/lib/report_inputs.py), on a fixture
made from a real cpu-profile demo run: 24 eval questions with the four setups' answers and scores,
the run's costs, speed and retrieval report; topic metadata from the qid prefix, per-question
retrieval rows and loss curves synthesized (tests/lib/fixtures/report_run.json)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tasks.lib.recommend import recommend_reports
from tasks.lib.report import render_report
from tasks.lib.report_inputs import embedding_spaces, loss_histories
from tasks.lib.report_plots import nearest_gold, pca_2d
from tasks.lib.report_questions import SHOWN_CHARS, question_rows, slice_metrics

FIXTURE = Path(__file__).parent / "fixtures" / "report_run.json"


def load_run() -> dict:
    """answers (with its recommendation), retrieval, per_question and loss curves of the fixture."""
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    per_question = data["per_question"]
    rows = {s: [{"qid": q, **r} for q, r in by_qid.items()]
            for s, by_qid in per_question["answers"].items()}
    answers = {**data["answers_report"], "answers": rows}
    answers["recommendation"] = recommend_reports(answers, data["retrieval_report"], 400, 13)
    return {"answers": answers, "retrieval": data["retrieval_report"],
            "per_question": per_question, "losses": data["loss"]}


@pytest.fixture
def run():
    return load_run()


def page_of(run, **changes) -> str:
    args = {**run, **changes}
    return render_report(args["answers"], args["retrieval"], args["per_question"],
                         losses=args["losses"], resamples=200, seed=0)


def test_the_recommendation_comes_first_with_its_evidence_and_costs(run):
    page = page_of(run)
    assert page.index("id=recommendation") < page.index("<h2>Answers</h2>") < \
        page.index("<h2>Retrieval</h2>") < page.index("<h2>Plots</h2>") < page.index("<h2>Questions</h2>")
    assert "Ship <strong>embed</strong> <span class=setup>(rag)</span> <span class=badge>tied" in page
    assert "rag − hybrid -0.058 [" in page and "(paired 95% interval, 24 questions)" in page
    assert "<b>What would change it:</b> With about" in page
    options = re.search(r"<table class=options>.*?</table>", page).group(0)
    assert [m for m in re.findall(r"<tr(?: class=pick)?><td>([^<]+)</td>", options)] == \
        ["base", "embed", "fine-tune", "both"]
    assert "<tr class=pick><td>embed</td><td>rag</td><td class=n>0.145</td><td class=n>109</td>" in options
    assert "beaten by hybrid" in options and "tied with the top" in options


def test_tables_carry_intervals_and_every_setup_and_method(run):
    page = page_of(run)
    answers = re.search(r"<table class=answers>.*?</table>", page).group(0)
    assert answers.count("<tr>") == 5 and "embed (rag)</td><td class='n'>0.145 [" in answers
    retrieval = re.search(r"<table class=retrieval>.*?</table>", page).group(0)
    assert [m for m in re.findall(r"<tr><td>(\w+)</td>", retrieval)] == ["bm25", "base", "lora", "hybrid"]
    assert "<td class=n>0.698 [0.647, 0.751]</td>" in retrieval
    pairwise = re.search(r"<table class=pairwise>.*?</table>", page).group(0)
    assert pairwise.count("<td class='n pos'>") == pairwise.count("<td class='n neg'>") > 0


def test_one_row_per_question_widest_disagreement_first(run):
    page = page_of(run)
    assert page.count("<tr data-qid=") == 24 and "<span id=shown>24 of 24 questions</span>" in page
    spreads = [float(v) for v in re.findall(r"<tr data-qid=\"[^\"]+\"><td class=n data-v=\"([^\"]+)\"",
                                            page)]
    assert len(spreads) == 24 and spreads == sorted(spreads, reverse=True)
    top = question_rows(run["per_question"])[0]
    assert top["question"]["qid"] == "acc-02-q6"  # hybrid 1.00, rag 0.09
    assert top["disagreement"] == pytest.approx(1.0 - 0.0889, abs=1e-3)
    assert page.index('data-qid="acc-02-q6"') < page.index('data-qid="acc-07-q7"')
    assert "<details class=hits><summary>lora · nDCG " in page and "first relevant #" in page


def test_text_is_escaped_and_long_text_collapses(run):
    per_question = copy.deepcopy(run["per_question"])
    per_question["questions"][0]["question"] = "<script>alert('x')</script> & <b>bold</b>?"
    qid = per_question["questions"][0]["qid"]
    per_question["answers"]["rag"][qid]["answer"] = "</td></tr><tr><td>" + "long " * 100
    page = page_of(run, per_question=per_question)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;?" in page
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;/td&gt;&lt;/tr&gt;&lt;tr&gt;&lt;td&gt;long" in page
    assert page.count("<tr data-qid=") == 24
    assert "<details class=more><summary>" in page and len("long " * 100) > SHOWN_CHARS


def test_the_page_is_self_contained(run):
    page = page_of(run)
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", page)
    assert "<script src" not in page and "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # only the SVGs' own clip paths: url(#id)
    assert page.count("<svg") == 3  # quality, cost vs quality, loss curves (no vectors given)


def test_slices_appear_only_when_metadata_names_them(run):
    page = page_of(run)
    assert "<h2>By topic</h2>" in page and "<tr><td>acc</td><td class=n>14</td>" in page
    slices = slice_metrics(run["per_question"], "token_f1", 200, 0)
    assert {k: v["n"] for k, v in slices["slices"].items()} == {"acc": 14, "bil": 10}
    plain = copy.deepcopy(run["per_question"])
    for q in plain["questions"]:
        q["metadata"] = None
    assert "<h2>By " not in page_of(run, per_question=plain)


def test_without_per_question_rows_the_page_still_renders(run):
    page = render_report(run["answers"], run["retrieval"])
    assert "<h2>Questions</h2>" not in page and "Ship <strong>embed</strong>" in page


# ---- the embedding map and the report's inputs --------------------------------------------------


def test_pca_2d_keeps_the_main_direction_on_the_first_axis():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [2.0, 0.0, 0.0], [3.0, -0.1, 0.0]])
    xy = pca_2d(points)
    assert xy.shape == (4, 2) and list(np.argsort(xy[:, 0])) == [0, 1, 2, 3]
    assert np.allclose(xy[:, 0], [-1.5, -0.5, 0.5, 1.5], atol=0.01)
    assert np.allclose(pca_2d(points[:1]), 0.0)


def test_nearest_gold_picks_each_questions_closest_relevant_chunk():
    space = {"chunks": np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), "chunk_doc_ids": ["a", "b", "b"],
             "questions": np.array([[0.8, 0.6], [1.0, 0.0]]), "question_doc_ids": [["b"], ["z"]]}
    picks, cosines = nearest_gold(space)
    assert picks == [2, None] and cosines == [pytest.approx(0.96)]


class FakeTable:
    def to_arrow(self):
        return pa.table({"vector": [[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], "doc_id": ["a", "b", "c"],
                         "text": ["x", "y", "z"]})


class FakeModel:
    def encode(self, texts, **_):
        return np.array([[0.0, 1.0]] * len(texts))


def test_embedding_spaces_read_each_tables_vectors_and_encode_the_questions():
    questions = [{"qid": "q1", "question": "Q?", "doc_ids": ["b"]}]
    spaces = embedding_spaces({"base": FakeTable(), "candidate": FakeTable()},
                              {"base": FakeModel(), "candidate": FakeModel()}, questions)
    assert list(spaces) == ["base retriever", "LoRA retriever"]
    space = spaces["LoRA retriever"]
    assert np.allclose(space["chunks"], [[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    assert space["chunk_doc_ids"] == ["a", "b", "c"] and space["question_doc_ids"] == [["b"]]
    assert nearest_gold(space) == ([1], [pytest.approx(1.0)])


@pytest.mark.slow  # a fresh MLflow sqlite store migrates its schema (~5 s)
def test_loss_histories_read_the_latest_finished_training_runs(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    for losses in ([9.0, 8.0], [3.0, 2.0, 1.0]):  # the second run is the latest
        with mlflow.start_run(experiment_id=experiment, tags={"tunedex.stage": "train_retriever"}):
            for step, loss in enumerate(losses, 1):
                mlflow.log_metric("train_loss", loss, step=step)
    assert loss_histories(experiment) == {
        "train_retriever": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.0}],
        "train_generator": []}
