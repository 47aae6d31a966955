"""From served questions to training data, through a person: harvest, review, accept.

The monitor proposes served questions that a user rated helpful (feedback +1) and whose
retrieval was confident as candidate train rows (QA contract: `doc_ids` = the document the
answer cited first, `metadata.source: "served"`, the served answer because it was rated
helpful, `split: "train"`). They go to a review file, never straight into training: a person
sets `"review": "accept"` (or `"reject"`) on each line, and `tunedex accept-queries` appends
the accepted ones to the QA file (`paths.qa_path`, DVC-tracked), so the next retrain uses them.
Questions are PII-redacted before they are written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.lib.errors import DataError
from tasks.lib.files import write_bytes_atomic
from tasks.lib.pii import redact
from tasks.lib.text import is_blank, normalize_question

PENDING, ACCEPT, REJECT, ACCEPTED = "pending", "accept", "reject", "accepted"
REVIEW_STATES = (PENDING, ACCEPT, REJECT, ACCEPTED)

# ---- pure ---------------------------------------------------------------------------------------


def latest_ratings(records: list[dict[str, Any]]) -> dict[str, int]:
    """request id -> its last rating (+1/-1) from the feedback lines of a query log."""
    return {r["rates"]: int(r["rating"]) for r in records
            if r.get("kind") == "feedback" and "rates" in r and "rating" in r}


def candidate_row(request: dict[str, Any], top1: float) -> dict[str, Any] | None:
    """A review row for one helpful served request (None when it cited no document)."""
    cited = list(request.get("sources") or []) or list(request.get("doc_ids") or [])
    if not cited:
        return None
    question, found = redact(request["question"])
    answer = ""
    if request.get("kind") == "ask":  # only rated requests get here, and only helpful ones
        answer, more = redact(request.get("answer") or "")
        found = {k: found.get(k, 0) + more.get(k, 0) for k in {*found, *more}}
    return {"qid": f"served-{request['request_id']}", "question": question, "answer": answer,
            "doc_ids": cited[:1], "split": "train", "review": PENDING,
            "metadata": {"source": "served", "request_id": request["request_id"],
                         "kind": request.get("kind"), "release": request.get("release"),
                         "top1_score": round(float(top1), 4), "redacted": found}}


def harvest(requests: list[dict[str, Any]], top1: dict[str, float], ratings: dict[str, int],
            min_score: float, known_questions: set[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Candidate rows from helpful, confidently retrieved requests whose question is not yet in
    the QA data or the review file (normalised); and how many each filter dropped."""
    rows, seen = [], set(known_questions)
    dropped = {"not_rated_helpful": 0, "low_confidence": 0, "already_known": 0, "no_document": 0}
    for req in requests:
        rid = req["request_id"]
        if ratings.get(rid, 0) <= 0:
            dropped["not_rated_helpful"] += 1
        elif top1.get(rid, float("-inf")) < min_score:
            dropped["low_confidence"] += 1
        elif normalize_question(redact(req["question"])[0]) in seen:
            dropped["already_known"] += 1
        elif (row := candidate_row(req, top1[rid])) is None:
            dropped["no_document"] += 1
        else:
            seen.add(normalize_question(row["question"]))
            rows.append(row)
    return rows, dropped


def row_problem(row: dict[str, Any], corpus_ids: set[str], taken_qids: set[str]) -> tuple[str, str] | None:
    """(field, what was expected) of the first contract problem of a review row, or None."""
    for field in ("question", "answer"):
        if not isinstance(row.get(field), str) or is_blank(row[field]):
            return field, "a non-blank string (write the answer for a /search question before accepting it)"
    missing = [d for d in row.get("doc_ids") or [] if d not in corpus_ids]
    if not row.get("doc_ids") or missing:
        return "doc_ids", f"ids of the corpus, missing: {missing}"
    if row.get("qid") in taken_qids:
        return "qid", f"{row.get('qid')} is already in the QA data"
    return None


def accepted_rows(review: list[tuple[int, dict[str, Any]]], review_path: str, corpus_ids: set[str],
                  taken_qids: set[str], accept_all: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """The QA rows to append: review lines marked accept (a DataError names the line and field of
    the first invalid one), plus with `accept_all` every valid pending line; and the lines of
    pending rows `accept_all` left because they are incomplete."""
    out, incomplete = [], []
    for line, row in review:
        state = row.get("review", PENDING)
        if state not in REVIEW_STATES:
            raise DataError(review_path, line, "review", f"expected one of {', '.join(REVIEW_STATES)}, "
                            f"got {state!r}")
        if not (state == ACCEPT or (accept_all and state == PENDING)):
            continue
        problem = row_problem(row, corpus_ids, taken_qids)
        if problem is not None and state == ACCEPT:
            raise DataError(review_path, line, *problem)
        if problem is not None:
            incomplete.append(line)
            continue
        out.append({k: row[k] for k in ("qid", "question", "answer", "doc_ids", "split", "metadata")})
    return out, incomplete


# ---- effects ------------------------------------------------------------------------------------


def read_review(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a review file; a DataError names a line that is not a JSON object."""
    rows = []
    if not path.is_file():
        return rows
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(str(path), i, None, f"not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(str(path), i, None, "expected a JSON object")
        rows.append((i, row))
    return rows


def write_lines(path: Path, rows: list[dict[str, Any]], append_to: bytes = b"") -> None:
    """Write JSON lines (after `append_to`) to a temp file, then rename it over `path`."""
    if append_to and not append_to.endswith(b"\n"):
        append_to += b"\n"
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    write_bytes_atomic(path, append_to + body)


def add_to_review(path: Path, rows: list[dict[str, Any]]) -> int:
    """Append candidate rows to the review file; return how many it now holds pending."""
    existing = [row for _, row in read_review(path)]
    write_lines(path, existing + rows)
    return sum(1 for row in existing + rows if row.get("review", PENDING) == PENDING)


def accept_queries(review_path: Path, qa_path: Path | None, corpus_path: Path,
                   accept_all: bool = False) -> dict[str, Any]:
    """Append accepted review rows to the QA file (a corpus-only project's first accept starts
    it) and mark them accepted; nothing is written unless every accepted row is valid."""
    from tasks.lib.data import load_corpus, load_qa
    from tasks.lib.errors import ConfigError

    if qa_path is None:
        raise ConfigError("paths.qa_path is unset: set it to the QA file accepted questions go "
                          "into (it is created if missing)")
    review = read_review(review_path)
    qids = set(load_qa(qa_path)["qid"]) if qa_path.is_file() else set()
    rows, incomplete = accepted_rows(review, str(review_path), set(load_corpus(corpus_path)["doc_id"]),
                                     qids, accept_all)
    if rows:
        write_lines(qa_path, rows, append_to=qa_path.read_bytes() if qa_path.is_file() else b"")
        done = {r["qid"] for r in rows}
        write_lines(review_path, [{**row, "review": ACCEPTED} if row.get("qid") in done else row
                                  for _, row in review])
    pending = sum(1 for _, row in review if row.get("review", PENDING) == PENDING
                  and row.get("qid") not in {r["qid"] for r in rows})
    return {"accepted": [r["qid"] for r in rows], "pending": pending, "incomplete": incomplete,
            "qa_path": str(qa_path)}
