"""Data tests on the shipped demo data: the contract, its size, and honest eval phrasing."""

import re
from collections import Counter

import pytest

from tasks.lib.data import load_corpus, load_qa
from tasks.lib.text import normalize_question
from tests.conftest import REPO

DEMO = REPO / "data" / "demo"
WORD = re.compile(r"[a-z0-9£%.:]+")


@pytest.fixture(scope="module")
def demo():
    return load_corpus(DEMO / "corpus.jsonl"), load_qa(DEMO / "qa.jsonl")


def words(text: str) -> set[str]:
    return {w.strip(".:") for w in WORD.findall(text.lower())} - {""}


def test_size_and_topics(demo):
    corpus, qa = demo
    assert len(corpus) >= 60 and len(qa) >= 400
    topics = Counter(m["topic"] for m in corpus["metadata"])
    assert len(topics) >= 8 and min(topics.values()) >= 5


def test_every_document_has_train_and_eval_questions(demo):
    corpus, qa = demo
    per_doc = qa.explode("doc_ids").groupby("doc_ids")["split"].agg(set)
    assert set(per_doc.index) == set(corpus["doc_id"])
    assert all(splits == {"train", "eval"} for splits in per_doc)


def test_eval_questions_are_rephrased_not_copied(demo):
    _, qa = demo
    train = [words(normalize_question(q)) for q in qa.loc[qa["split"] == "train", "question"]]
    for question in qa.loc[qa["split"] == "eval", "question"]:
        mine = words(normalize_question(question))
        overlap = max(len(mine & t) / len(mine | t) for t in train)
        assert overlap < 0.6, question


def test_numbers_in_answers_appear_in_their_documents(demo):
    corpus, qa = demo
    text = dict(zip(corpus["doc_id"], corpus["text"], strict=True))
    for row in qa.itertuples():
        source = " ".join(text[d] for d in row.doc_ids).replace(",", "")
        for number in re.findall(r"\d+(?:\.\d+)?", row.answer.replace(",", "")):
            assert number in source, (row.qid, number)


def test_some_documents_need_chunking(demo):
    corpus, _ = demo
    assert (corpus["text"].str.split().str.len() > 500).sum() >= 2
