"""The data contract: streaming JSON Lines loaders that name file, line and field on error.

corpus.jsonl: doc_id (str, unique), text (str, non-empty), optional title (str), metadata (object).
qa.jsonl:     qid (str, unique), question, answer (str), doc_ids (list of str), optional split,
              optional metadata (object), optional choices (2..20 distinct strings, e.g.
              ["yes", "no", "maybe"]; then the answer must start with one: tasks/lib/choices.py).

Loaders check structure (UTF-8, one JSON object per line, field types, a question's choices and
its answer's pick among them: one row decides it) and never drop a row; content rules
(uniqueness, emptiness, references) are Great Expectations suites in validate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.lib.choices import answer_problem, choices_problem
from tasks.lib.errors import DataError

LINE_COLUMN = "line"  # 1-based source line, kept so validation can point at rows

CORPUS_FIELDS: dict[str, tuple[type, ...]] = {
    "doc_id": (str,),
    "text": (str,),
    "title": (str,),
    "metadata": (dict,),
}
QA_FIELDS: dict[str, tuple[type, ...]] = {
    "qid": (str,),
    "question": (str,),
    "answer": (str,),
    "doc_ids": (list,),
    "split": (str,),
    "metadata": (dict,),
    "choices": (list,),
}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list of strings"}


class DuplicateKey(ValueError):
    """A JSON object names the same key twice (json.loads would keep the last silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; raise DataError on bad bytes/JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    str(path), line_no, None,
                    f"not valid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})",
                ) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text, object_pairs_hook=_unique_keys)
            except DuplicateKey as err:
                raise DataError(str(path), line_no, str(err), "a key may appear once per object; "
                                "this one appears twice (which value was meant?)") from None
            except json.JSONDecodeError as err:
                raise DataError(
                    str(path), line_no, None,
                    f"not valid JSON ({err.msg} at column {err.colno}); "
                    "expected one JSON object per line",
                ) from None
            if not isinstance(obj, dict):
                raise DataError(str(path), line_no, None,
                                f"expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj


def check_record(path: str, line_no: int, obj: dict[str, Any],
                 fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Return the record restricted to contract fields, type-checked; absent fields are None."""
    row: dict[str, Any] = {LINE_COLUMN: line_no}
    for name, types in fields.items():
        value = obj.get(name)
        if value is not None and not isinstance(value, types):
            raise DataError(path, line_no, name,
                            f"expected {_TYPE_NAMES[types[0]]}, got {type(value).__name__}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise DataError(path, line_no, name, "expected a list of strings")
        row[name] = value
    if row.get("choices") is not None:
        check_choices(path, line_no, row)
    return row


def check_choices(path: str, line_no: int, row: dict[str, Any]) -> None:
    """Raise DataError when `choices` breaks the contract or the answer picks none of them."""
    problem = choices_problem(row["choices"])
    if problem:
        raise DataError(path, line_no, "choices", problem)
    answer = row.get("answer")
    if isinstance(answer, str) and (problem := answer_problem(answer, row["choices"])):
        raise DataError(path, line_no, "answer", problem)


def load_records(path: str | Path, fields: dict[str, tuple[type, ...]]) -> pd.DataFrame:
    """Stream a JSON Lines file into a DataFrame of contract fields plus the source line."""
    rows = [check_record(str(path), n, obj, fields) for n, obj in iter_jsonl(path)]
    if not rows:
        raise DataError(str(path), None, None, "file is empty; expected one JSON object per line")
    return pd.DataFrame(rows, columns=[LINE_COLUMN, *fields])


def load_corpus(path: str | Path) -> pd.DataFrame:
    """Load corpus.jsonl (see module docstring)."""
    return load_records(path, CORPUS_FIELDS)


def load_qa(path: str | Path) -> pd.DataFrame:
    """Load qa.jsonl (see module docstring)."""
    return load_records(path, QA_FIELDS)


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records as JSON Lines atomically (temp file + rename)."""
    from tasks.lib.files import write_text_atomic

    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file written by this project."""
    return [obj for _, obj in iter_jsonl(path)]
