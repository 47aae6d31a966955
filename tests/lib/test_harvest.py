"""From served questions to reviewed training data: candidates, the review file, accept."""

import json

import pytest

from tasks.lib.errors import ConfigError, DataError
from tasks.lib.harvest import (
    accept_queries,
    add_to_review,
    harvest,
    latest_ratings,
    read_review,
)
from tests.conftest import TINY_DOCS, TINY_QA, write_jsonl_lines

RELEASE = {"retriever_version": 1, "generator_version": 1, "table": "t", "table_version": 2}


def ask(rid, question, sources=("pay-01",), answer="Visa and Mastercard."):
    return {"kind": "ask", "request_id": rid, "release": RELEASE, "question": question,
            "setup": "hybrid", "doc_ids": list(sources), "sources": list(sources), "answer": answer}


def test_latest_rating_wins():
    records = [{"kind": "feedback", "rates": "a", "rating": 1}, {"kind": "ask", "request_id": "a"},
               {"kind": "feedback", "rates": "a", "rating": -1}, {"kind": "feedback", "rates": "b",
                                                                  "rating": 1}]
    assert latest_ratings(records) == {"a": -1, "b": 1}


def test_only_helpful_confident_new_questions_become_candidates():
    requests = [ask("r1", "Do you take Amex? mail me at jo@x.org"),
                ask("r2", "Do you take Diners?"),      # rated unhelpful
                ask("r3", "Do you take JCB?"),         # not rated
                ask("r4", "Do you take Discover?"),    # helpful, but retrieval not confident
                ask("r5", "Which cards do you take?"),  # already a QA question (normalised)
                ask("r6", "What about Maestro?", sources=())]
    ratings = {"r1": 1, "r2": -1, "r4": 1, "r5": 1, "r6": 1}
    top1 = {"r1": 0.8, "r2": 0.9, "r3": 0.9, "r4": 0.3, "r5": 0.9, "r6": 0.9}
    rows, dropped = harvest(requests, top1, ratings, 0.5, {"which cards do you take"})
    assert [r["qid"] for r in rows] == ["served-r1"]
    assert dropped == {"not_rated_helpful": 2, "low_confidence": 1, "already_known": 1,
                       "no_document": 1}
    row = rows[0]
    assert row["question"] == "Do you take Amex? mail me at [EMAIL]"  # redacted before written
    assert row["doc_ids"] == ["pay-01"] and row["split"] == "train" and row["review"] == "pending"
    assert row["answer"] == "Visa and Mastercard."  # rated helpful: the served answer is kept
    assert row["metadata"]["source"] == "served" and row["metadata"]["redacted"] == {"email": 1}
    search = {**ask("r7", "amex?"), "kind": "search", "answer": None}
    rows, _ = harvest([search], {"r7": 0.9}, {"r7": 1}, 0.5, set())
    assert rows[0]["answer"] == ""  # a /search has no answer: the reviewer writes one


@pytest.fixture
def project(tmp_path):
    paths = {"corpus": write_jsonl_lines(tmp_path / "corpus.jsonl", TINY_DOCS),
             "qa": write_jsonl_lines(tmp_path / "qa.jsonl", TINY_QA),
             "review": tmp_path / "monitor" / "review.jsonl"}
    rows, _ = harvest([ask("r1", "Do you take Amex?"), ask("r2", "Is Visa fine?"),
                       {**ask("r3", "amex card ok?"), "kind": "search", "answer": None}],
                      {"r1": 0.9, "r2": 0.9, "r3": 0.9}, {"r1": 1, "r2": 1, "r3": 1}, 0.5, set())
    assert add_to_review(paths["review"], rows) == 3
    return paths


def set_review(path, states):
    rows = [row for _, row in read_review(path)]
    path.write_text("".join(json.dumps({**row, "review": states.get(row["qid"], row["review"])})
                            + "\n" for row in rows))


def test_accept_appends_only_accepted_rows(project):
    before = project["qa"].read_bytes()
    set_review(project["review"], {"served-r1": "accept", "served-r2": "reject"})
    out = accept_queries(project["review"], project["qa"], project["corpus"])
    assert out["accepted"] == ["served-r1"] and out["pending"] == 1
    after = project["qa"].read_bytes()
    assert after.startswith(before)
    added = json.loads(after[len(before):])
    assert added["qid"] == "served-r1" and added["split"] == "train" and "review" not in added
    states = {row["qid"]: row["review"] for _, row in read_review(project["review"])}
    assert states == {"served-r1": "accepted", "served-r2": "reject", "served-r3": "pending"}
    again = accept_queries(project["review"], project["qa"], project["corpus"])
    assert again["accepted"] == [] and project["qa"].read_bytes() == after  # idempotent


def test_accept_all_leaves_incomplete_rows_pending(project):
    out = accept_queries(project["review"], project["qa"], project["corpus"], accept_all=True)
    assert out["accepted"] == ["served-r1", "served-r2"] and out["incomplete"] == [3]
    assert out["pending"] == 1  # the /search question still needs an answer written in


def test_a_bad_accepted_row_writes_nothing_and_names_the_line(project):
    before = project["qa"].read_bytes()
    set_review(project["review"], {"served-r1": "accept", "served-r3": "accept"})
    with pytest.raises(DataError, match=r"review.jsonl, line 3: field 'answer': a non-blank string"):
        accept_queries(project["review"], project["qa"], project["corpus"])
    assert project["qa"].read_bytes() == before
    set_review(project["review"], {"served-r1": "maybe"})
    with pytest.raises(DataError, match=r"line 1: field 'review': expected one of"):
        accept_queries(project["review"], project["qa"], project["corpus"])
    project["review"].write_text('{"qid": "x"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        accept_queries(project["review"], project["qa"], project["corpus"])
    assert project["qa"].read_bytes() == before


def test_accepted_rows_must_cite_corpus_documents(project, tmp_path):
    rows = [row for _, row in read_review(project["review"])]
    rows[0] = {**rows[0], "doc_ids": ["gone-01"], "review": "accept"}
    project["review"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line 1: field 'doc_ids'.*gone-01"):
        accept_queries(project["review"], project["qa"], project["corpus"])


def test_a_corpus_only_projects_first_accept_starts_the_qa_file(project, tmp_path):
    set_review(project["review"], {"served-r1": "accept"})
    with pytest.raises(ConfigError, match="paths.qa_path is unset"):
        accept_queries(project["review"], None, project["corpus"])
    assert read_review(project["review"])[0][1]["review"] == "accept"  # nothing written
    new = tmp_path / "new" / "qa.jsonl"
    out = accept_queries(project["review"], new, project["corpus"])
    assert out["accepted"] == ["served-r1"]
    assert [json.loads(line)["qid"] for line in new.read_text().splitlines()] == ["served-r1"]
