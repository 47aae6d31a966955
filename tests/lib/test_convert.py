"""Converters from PubMedQA and CovidFAQ to the data contract: exact outputs, errors, real data."""

import json
from pathlib import Path

import pytest

from tasks.lib.choices import choice_of
from tasks.lib.convert import (
    ShapeError,
    clean_faq_answer,
    convert_covidfaq,
    convert_dataset,
    convert_pubmedqa,
    pubmedqa_answer,
)
from tasks.lib.data import load_corpus, load_qa
from tasks.lib.errors import DataError
from tasks.lib.text import normalize_question
from tests.conftest import REPO

DATASETS = REPO.parent / "shared" / "datasets"

COVID_A = "COVID-19 is a new coronavirus."
COVID_B = "Masks stop droplets."
COVID_C = "No vaccine yet."


def pubmed_entry(question: str, contexts: list, **extra) -> dict:
    """One PQA-L entry with the fields the real file has."""
    return {"QUESTION": question, "CONTEXTS": contexts, "LABELS": ["BACKGROUND"] * len(contexts),
            "MESHES": ["Humans"], "YEAR": "2001", "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes", "final_decision": "yes", "LONG_ANSWER": "It does.", **extra}


def covid_row(n: int, kind: str, question: str, answer: str) -> dict:
    """One CovidFAQ pair as the real file has it."""
    return {"label": 1, "query_type": kind, "question": question, "answer": answer, "id": str(n)}


COVID_RAW = [
    covid_row(1, "faq", "What is COVID-19? ",
              COVID_A + "   [[Would you like to know more about COVID-19 symptoms?]]"),
    covid_row(2, "user_query", "what is covid 19", COVID_A),
    covid_row(3, "user_query", "How do masks help? ",
              "Masks  stop\n droplets. [[Would you like\nmore information?]]"),
    covid_row(4, "faq", "Do masks work?", COVID_B),
    covid_row(5, "user_query", "What is COVID-19?", COVID_B),  # same question, another answer
    covid_row(6, "user_query", "  ", COVID_A),
    covid_row(7, "user_query", "how do masks help ?", COVID_B),  # same question, same answer
    covid_row(8, "user_query", "Is there a vaccine?", COVID_C),
    covid_row(9, "faq", "What is covid-19", COVID_A),  # a second faq question for one answer
    covid_row(10, "user_query", "Anything else?", "[[Would you like more information?]]"),
]


# ---- pure functions -------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    ("Wash hands.   [[Would you like to know more about COVID-19 symptoms?]]", "Wash hands."),
    ("A [[Q one?]] B\n\n[[Q\ntwo?]]", "A B"),
    ("Keep [[ unclosed", "Keep [[ unclosed"),
    ("[[Would you like more information?]]", ""),
])
def test_clean_faq_answer(raw, clean):
    assert clean_faq_answer(raw) == clean


def test_covid_questions_are_merged_by_the_leakage_key():
    """Two spellings prepare's leakage check would call the same question become one question."""
    assert normalize_question("What is COVID-19?") == normalize_question("what is covid 19")
    _, qa, stats = convert_covidfaq([covid_row(1, "faq", "Q?", COVID_A),
                                     covid_row(2, "user_query", "What is COVID-19?", COVID_A),
                                     covid_row(3, "user_query", "what is covid 19", COVID_A)])
    assert [q["question"] for q in qa] == ["What is COVID-19?"]
    assert stats["duplicate_questions_merged"] == 1


def test_convert_pubmedqa_exact():
    raw = {"111": pubmed_entry("Does X help Y?", ["First part. ", "Second part."],
                               MESHES=["Humans", "Female"]),
           "222": pubmed_entry("Is Z safe?", ["Only part."], YEAR=None, final_decision="maybe",
                               LONG_ANSWER="Unclear. ")}
    corpus, qa, stats = convert_pubmedqa(raw)
    assert corpus == [
        {"doc_id": "pmid-111", "text": "First part.\n\nSecond part.",
         "metadata": {"year": "2001", "meshes": ["Humans", "Female"]}},
        {"doc_id": "pmid-222", "text": "Only part.", "metadata": {"year": None, "meshes": ["Humans"]}},
    ]
    ynm = ["yes", "no", "maybe"]
    assert qa == [
        {"qid": "pmid-111", "question": "Does X help Y?", "answer": "Yes. It does.",
         "doc_ids": ["pmid-111"], "choices": ynm, "metadata": {"final_decision": "yes"}},
        {"qid": "pmid-222", "question": "Is Z safe?", "answer": "Maybe. Unclear.",
         "doc_ids": ["pmid-222"], "choices": ynm, "metadata": {"final_decision": "maybe"}},
    ]

    assert stats == {"input_entries": 2, "blank_texts_dropped": 0, "blank_qa_dropped": 0,
                     "docs": 2, "qa": 2}


def test_pubmedqa_answer_puts_the_decision_first():
    assert pubmedqa_answer("no", " No difference was found. ") == "No. No difference was found."
    assert pubmedqa_answer("maybe", "No clear effect.") == "Maybe. No clear effect."
    assert pubmedqa_answer("yes", "  ") == ""  # blank conclusion: the question is dropped


def test_convert_pubmedqa_counts_blanks_and_keeps_meshes_a_list():
    raw = {"1": pubmed_entry("Q?", ["  ", ""]),
           "2": pubmed_entry(" ", ["Text."], MESHES="Humans"),
           "3": pubmed_entry("Q?", ["Text."], MESHES=None)}
    corpus, qa, stats = convert_pubmedqa(raw)
    assert [d["doc_id"] for d in corpus] == ["pmid-2", "pmid-3"]  # blank text: no doc, no question
    assert [d["metadata"]["meshes"] for d in corpus] == [["Humans"], []]
    assert [q["qid"] for q in qa] == ["pmid-3"]  # blank question: the document stays
    assert stats == {"input_entries": 3, "blank_texts_dropped": 1, "blank_qa_dropped": 1,
                     "docs": 2, "qa": 1}


def test_convert_covidfaq_exact():
    corpus, qa, stats = convert_covidfaq(COVID_RAW)
    assert corpus == [
        {"doc_id": "faq-001", "text": COVID_A, "metadata": {"faq_question": "What is COVID-19?"}},
        {"doc_id": "faq-002", "text": COVID_B, "metadata": {"faq_question": "Do masks work?"}},
        {"doc_id": "faq-003", "text": COVID_C, "metadata": {}},
    ]
    assert qa == [  # faq questions are not in qa; first spelling kept, documents unioned
        {"qid": "cq-0001", "question": "what is covid 19", "answer": COVID_A,
         "doc_ids": ["faq-001", "faq-002"]},
        {"qid": "cq-0002", "question": "How do masks help?", "answer": COVID_B, "doc_ids": ["faq-002"]},
        {"qid": "cq-0003", "question": "Is there a vaccine?", "answer": COVID_C, "doc_ids": ["faq-003"]},
    ]
    assert stats == {"input_rows": 10, "faq_rows": 3, "user_query_rows": 7,
                     "blank_answers_dropped": 1, "duplicate_questions_merged": 2,
                     "blank_questions_dropped": 1, "multi_doc_questions": 1,
                     "faq_questions_not_kept": 1, "docs": 3, "qa": 3}


def test_converters_do_not_mutate_their_input():
    raw = json.loads(json.dumps(COVID_RAW))
    convert_covidfaq(raw)
    assert raw == COVID_RAW


@pytest.mark.parametrize(("convert", "raw", "message"), [
    (convert_pubmedqa, [], "expected a JSON object keyed by PubMed id, got list"),
    (convert_pubmedqa, {"7": "text"}, "entry '7': expected an object, got str"),
    (convert_pubmedqa, {"7": pubmed_entry("Q?", "one paragraph", CONTEXTS=[1])},
     "entry '7': field 'CONTEXTS': expected a list of strings"),
    (convert_pubmedqa, {"7": pubmed_entry("Q?", ["T."], YEAR=2001)},
     "entry '7': field 'YEAR': expected str, got int"),
    (convert_pubmedqa, {"7": pubmed_entry("Q?", ["T."], final_decision="Yes")},
     "entry '7': field 'final_decision': expected 'yes', 'no' or 'maybe', got 'Yes'"),
    (convert_covidfaq, {}, "expected a JSON list of question/answer rows, got dict"),
    (convert_covidfaq, [covid_row(1, "faq", "Q?", "A."), covid_row(2, "chat", "Q?", "A.")],
     "row 2 (id '2'): field 'query_type': expected 'faq' or 'user_query', got 'chat'"),
    (convert_covidfaq, [{**covid_row(1, "faq", "Q?", "A."), "label": 0}],
     "row 1 (id '1'): field 'label': expected 1, got 0"),
    (convert_covidfaq, [{"query_type": "faq", "question": "Q?"}], "row 1: missing field 'answer'"),
])
def test_unexpected_structure_names_the_entry_and_field(convert, raw, message):
    with pytest.raises(ShapeError) as err:
        convert(raw)
    assert str(err.value) == message


# ---- convert_dataset: files and their errors ------------------------------------------------


def test_convert_dataset_writes_contract_files_and_stats(tmp_path):
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps(COVID_RAW), encoding="utf-8")
    stats = convert_dataset("covidfaq", source, tmp_path / "out")
    assert stats["dataset"] == "covidfaq" and stats["source_path"] == str(source)
    assert json.loads((tmp_path / "out" / "convert_stats.json").read_text()) == stats
    assert load_corpus(tmp_path / "out" / "corpus.jsonl")["doc_id"].tolist() == [
        "faq-001", "faq-002", "faq-003"]
    assert load_qa(tmp_path / "out" / "qa.jsonl")["qid"].tolist() == ["cq-0001", "cq-0002", "cq-0003"]


def test_invalid_json_names_file_and_line(tmp_path):
    source = tmp_path / "pqal_dev.json"
    source.write_text('{"111": {"QUESTION": "Q?",\n  "CONTEXTS": [}\n}')
    with pytest.raises(DataError) as err:
        convert_dataset("pubmedqa", source, tmp_path / "out")
    assert str(err.value) == (f"{source}, line 2: not valid JSON "
                              "(Expecting value at column 16)")
    assert not (tmp_path / "out").exists()


def test_missing_field_names_file_entry_and_field(tmp_path):
    entry = pubmed_entry("Q?", ["Text."])
    del entry["QUESTION"]
    source = tmp_path / "pqal_dev.json"
    source.write_text(json.dumps({"111": pubmed_entry("Q?", ["Text."]), "222": entry}))
    with pytest.raises(DataError) as err:
        convert_dataset("pubmedqa", source, tmp_path / "out")
    assert str(err.value) == (f"{source}: not the pubmedqa format: "
                              "entry '222': missing field 'QUESTION'")
    assert not (tmp_path / "out").exists()


def test_wrong_dataset_for_the_file(tmp_path):
    source = tmp_path / "pairs.json"
    source.write_text(json.dumps(COVID_RAW))
    with pytest.raises(DataError, match=r"pairs.json: not the pubmedqa format: expected a JSON object"):
        convert_dataset("pubmedqa", source, tmp_path / "out")


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found"),
    (b'[{"question": "caf\xe9"}]', "not valid UTF-8 (byte 0xe9 at offset 18)"),
    (b"[]", "no documents left after conversion"),
])
def test_unreadable_or_empty_source(tmp_path, content, message):
    source = tmp_path / "pairs.json"
    if content is not None:
        source.write_bytes(content)
    with pytest.raises(DataError) as err:
        convert_dataset("covidfaq", source, tmp_path / "out")
    assert str(err.value) == f"{source}: {message}"


# ---- the real datasets in ../shared/datasets ------------------------------------------------


def real_dataset(relative: str) -> Path:
    """Return a file of ../shared/datasets, or skip when the folder is not there."""
    path = DATASETS / relative
    if not path.is_file():
        pytest.skip(f"../shared/datasets not present: {path} is missing (CI and the dev box have it)")
    return path


def load_converted(out_dir: Path):
    """Load what convert_dataset wrote and check the contract rules the validate stage checks."""
    corpus, qa = load_corpus(out_dir / "corpus.jsonl"), load_qa(out_dir / "qa.jsonl")
    assert corpus["doc_id"].is_unique and qa["qid"].is_unique
    assert corpus["text"].str.strip().astype(bool).all()
    assert (qa["question"].str.strip().astype(bool) & qa["answer"].str.strip().astype(bool)).all()
    known = set(corpus["doc_id"])
    assert all(ids and set(ids) <= known for ids in qa["doc_ids"])
    # prepare fails when a normalised eval question also appears in train: none may repeat.
    assert qa["question"].map(normalize_question).is_unique
    return corpus, qa


def test_real_pubmedqa(tmp_path):
    source = real_dataset("pubmedqa/pqal_dev.json")
    stats = convert_dataset("pubmedqa", source, tmp_path)
    assert stats == {"dataset": "pubmedqa", "source_path": str(source), "input_entries": 500,
                     "blank_texts_dropped": 0, "blank_qa_dropped": 0, "docs": 500, "qa": 500}
    corpus, qa = load_converted(tmp_path)
    assert (len(corpus), len(qa)) == (500, 500)
    assert set(qa["metadata"].map(lambda m: m["final_decision"])) == {"yes", "no", "maybe"}
    # the loader checked each answer picks a choice; the pick is the expert label
    picks = [choice_of(a, c) for a, c in zip(qa["answer"], qa["choices"], strict=True)]
    assert picks == qa["metadata"].map(lambda m: m["final_decision"]).tolist()
    assert "title" not in (tmp_path / "corpus.jsonl").read_text()


def test_real_covidfaq(tmp_path):
    source = real_dataset("covidfaq/query_answer_pairs.json")
    stats = convert_dataset("covidfaq", source, tmp_path)
    assert stats == {"dataset": "covidfaq", "source_path": str(source), "input_rows": 1455,
                     "faq_rows": 68, "user_query_rows": 1387, "blank_answers_dropped": 0,
                     "duplicate_questions_merged": 432, "blank_questions_dropped": 0,
                     "multi_doc_questions": 224, "faq_questions_not_kept": 1, "docs": 67, "qa": 955}
    corpus, qa = load_converted(tmp_path)
    assert (len(corpus), len(qa)) == (67, 955)
    assert not corpus["text"].str.contains(r"\[\[", regex=True).any()
    assert corpus["metadata"].map(lambda m: "faq_question" in m).all()  # each answer has its faq
