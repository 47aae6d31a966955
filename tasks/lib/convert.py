"""convert: turn public datasets (PubMedQA, CovidFAQ) into the data contract (see tasks/data.py).

Usage: tunedex convert covidfaq ../shared/datasets/covidfaq/query_answer_pairs.json --out data/covidfaq

Pure converters map the parsed JSON to (corpus_records, qa_records, stats); stats count every
input row and every row merged or dropped, so nothing disappears silently. Only convert_dataset
reads or writes files.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.lib.data import write_jsonl
from tasks.lib.errors import DataError
from tasks.lib.text import normalize_question

Records = list[dict[str, Any]]
Converted = tuple[Records, Records, dict[str, int]]

_FOLLOW_UP = re.compile(r"\[\[.*?\]\]", re.DOTALL)  # chat prompts: "[[Would you like to know ...?]]"
_COVID_KINDS = ("faq", "user_query")
PUBMEDQA_CHOICES = ("yes", "no", "maybe")  # final_decision's labels: the short answer


class ShapeError(ValueError):
    """The parsed JSON lacks a field or has a type the converter does not expect."""


# ---- pure functions -------------------------------------------------------------------------


def clean_faq_answer(text: str) -> str:
    """Remove CovidFAQ's [[follow-up prompts]] and collapse whitespace."""
    return " ".join(_FOLLOW_UP.sub(" ", text).split())


def _field(entry: Any, where: str, name: str, kind: type | tuple[type, ...],
           optional: bool = False) -> Any:
    """Return entry[name] if it is a `kind` (or None when optional); else raise ShapeError."""
    if not isinstance(entry, dict):
        raise ShapeError(f"{where}: expected an object, got {type(entry).__name__}")
    if name not in entry and not optional:
        raise ShapeError(f"{where}: missing field '{name}'")
    value = entry.get(name)
    if (value is None and optional) or isinstance(value, kind):
        return value
    expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    raise ShapeError(f"{where}: field '{name}': expected {expected}, got {type(value).__name__}")


def _str_list(entry: dict, where: str, name: str, optional: bool = False) -> list[str]:
    """Return entry[name] as a list of strings (a lone string becomes a one-item list)."""
    value = _field(entry, where, name, (list, str), optional)
    items = [value] if isinstance(value, str) else value or []
    if not all(isinstance(item, str) for item in items):
        raise ShapeError(f"{where}: field '{name}': expected a list of strings")
    return items


def _pubmedqa_pair(pmid: str, entry: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the (document, question) records of one PubMedQA entry."""
    where = f"entry '{pmid}'"
    paragraphs = [p.strip() for p in _str_list(entry, where, "CONTEXTS") if p.strip()]
    doc = {"doc_id": f"pmid-{pmid}", "text": "\n\n".join(paragraphs),
           # No title: PubMedQA questions are derived from the paper titles, a title would leak them.
           "metadata": {"year": _field(entry, where, "YEAR", str, optional=True),
                        "meshes": _str_list(entry, where, "MESHES", optional=True)}}
    decision = _field(entry, where, "final_decision", str)
    if decision not in PUBMEDQA_CHOICES:
        raise ShapeError(f"{where}: field 'final_decision': expected 'yes', 'no' or 'maybe', "
                         f"got {decision!r}")
    qa = {"qid": f"pmid-{pmid}", "question": _field(entry, where, "QUESTION", str).strip(),
          "answer": pubmedqa_answer(decision, _field(entry, where, "LONG_ANSWER", str)),
          "doc_ids": [doc["doc_id"]], "choices": list(PUBMEDQA_CHOICES),
          "metadata": {"final_decision": decision}}
    return doc, qa


def pubmedqa_answer(decision: str, long_answer: str) -> str:
    """The reference: the decision first, then the abstract's conclusion ("Yes. The trial ..."),
    always, so every reference picks its choice and the LoRA learns one format. "" when the
    conclusion is blank (the question is dropped)."""
    conclusion = long_answer.strip()
    return f"{decision.capitalize()}. {conclusion}" if conclusion else ""


def convert_pubmedqa(raw: dict) -> Converted:
    """Map PubMedQA (PQA-L JSON keyed by PubMed id) to one document and one question per entry."""
    if not isinstance(raw, dict):
        raise ShapeError(f"expected a JSON object keyed by PubMed id, got {type(raw).__name__}")
    corpus: Records = []
    qa: Records = []
    counts = Counter({"input_entries": len(raw), "blank_texts_dropped": 0, "blank_qa_dropped": 0})
    for pmid, entry in raw.items():
        doc, pair = _pubmedqa_pair(pmid, entry)
        if not doc["text"]:
            counts["blank_texts_dropped"] += 1  # its question would point at no document
            continue
        corpus.append(doc)
        if pair["question"] and pair["answer"]:
            qa.append(pair)
        else:
            counts["blank_qa_dropped"] += 1
    return corpus, qa, {**counts, "docs": len(corpus), "qa": len(qa)}


def _covid_rows(raw: list) -> list[tuple[str, str, str]]:
    """Return (query_type, question, cleaned answer) per CovidFAQ row, checking the structure."""
    if not isinstance(raw, list):
        raise ShapeError(f"expected a JSON list of question/answer rows, got {type(raw).__name__}")
    rows = []
    for number, row in enumerate(raw, start=1):
        where = f"row {number}" + (f" (id {row['id']!r})" if isinstance(row, dict) and "id" in row else "")
        kind = _field(row, where, "query_type", str)
        if kind not in _COVID_KINDS:
            raise ShapeError(f"{where}: field 'query_type': expected 'faq' or 'user_query', got {kind!r}")
        if row.get("label", 1) != 1:  # every pair is a positive one; a 0 would mean "not the answer"
            raise ShapeError(f"{where}: field 'label': expected 1, got {row['label']!r}")
        answer = clean_faq_answer(_field(row, where, "answer", str))
        rows.append((kind, _field(row, where, "question", str), answer))
    return rows


def _covid_corpus(rows: list[tuple[str, str, str]]) -> tuple[dict[str, str], Records, int]:
    """Number the distinct answers faq-001.. by first appearance; note each one's first faq question."""
    doc_ids: dict[str, str] = {}
    faq_questions: dict[str, list[str]] = {}
    for kind, question, answer in rows:
        if answer:
            doc_ids.setdefault(answer, f"faq-{len(doc_ids) + 1:03d}")
        if answer and kind == "faq" and question.strip():
            faq_questions.setdefault(answer, []).append(" ".join(question.split()))
    corpus = [{"doc_id": doc_id, "text": answer,
               "metadata": {"faq_question": faq_questions[answer][0]} if answer in faq_questions else {}}
              for answer, doc_id in doc_ids.items()]
    extra = sum(len(questions) - 1 for questions in faq_questions.values())
    return doc_ids, corpus, extra


def _covid_qa(rows: list[tuple[str, str, str]], doc_ids: dict[str, str]) -> tuple[Records, Counter]:
    """Merge repeated user questions (same normalize_question) into one record with all their documents."""
    groups: dict[str, dict[str, Any]] = {}
    counts = Counter({"duplicate_questions_merged": 0, "blank_questions_dropped": 0})
    # faq questions are the documents' own questions, not user questions; rows whose answer is
    # blank after cleaning have no document and are counted by the caller.
    for question, answer in ((q, a) for kind, q, a in rows if kind == "user_query" and a):
        key = normalize_question(question)
        if not key:
            counts["blank_questions_dropped"] += 1
        elif key in groups:
            counts["duplicate_questions_merged"] += 1
            groups[key]["doc_ids"].add(doc_ids[answer])
        else:
            groups[key] = {"question": question.strip(), "answer": answer, "doc_ids": {doc_ids[answer]}}
    qa = [{"qid": f"cq-{n:04d}", "question": g["question"], "answer": g["answer"],
           "doc_ids": sorted(g["doc_ids"])} for n, g in enumerate(groups.values(), start=1)]
    counts["multi_doc_questions"] = sum(len(record["doc_ids"]) > 1 for record in qa)
    return qa, counts


def convert_covidfaq(raw: list) -> Converted:
    """Map CovidFAQ pairs to documents (distinct answers) and distinct user questions."""
    rows = _covid_rows(raw)
    doc_ids, corpus, extra_faq = _covid_corpus(rows)
    qa, counts = _covid_qa(rows, doc_ids)
    kinds = Counter(kind for kind, _, _ in rows)
    stats = {"input_rows": len(rows), "faq_rows": kinds["faq"], "user_query_rows": kinds["user_query"],
             "blank_answers_dropped": sum(not answer for _, _, answer in rows), **counts,
             "faq_questions_not_kept": extra_faq, "docs": len(corpus), "qa": len(qa)}
    return corpus, qa, stats


CONVERTERS: dict[str, Callable[[Any], Converted]] = {
    "pubmedqa": convert_pubmedqa,
    "covidfaq": convert_covidfaq,
}


# ---- effects --------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Parse a JSON file; raise DataError naming the file (and line) when it cannot be read."""
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise DataError(str(path), None, None,
                        f"not valid UTF-8 (byte {byte:#04x} at offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(str(path), err.lineno, None,
                        f"not valid JSON ({err.msg} at column {err.colno})") from None


def convert_dataset(name: str, source_path: Path, out_dir: Path) -> dict[str, Any]:
    """Convert source_path with CONVERTERS[name]; write corpus.jsonl, qa.jsonl, convert_stats.json."""
    if name not in CONVERTERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(CONVERTERS)}")
    source_path, out_dir = Path(source_path), Path(out_dir)
    raw = read_json(source_path)
    try:
        corpus, qa, counts = CONVERTERS[name](raw)
    except ShapeError as err:
        raise DataError(str(source_path), None, None, f"not the {name} format: {err}") from None
    if not corpus or not qa:
        raise DataError(str(source_path), None, None,
                        f"no {'documents' if not corpus else 'questions'} left after conversion")
    stats = {"dataset": name, "source_path": str(source_path), **counts}
    write_jsonl(corpus, out_dir / "corpus.jsonl")
    write_jsonl(qa, out_dir / "qa.jsonl")
    (out_dir / "convert_stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats
