import json

import pandas as pd
import pytest

from tasks.lib.data import load_corpus, load_qa, read_jsonl, write_jsonl
from tasks.lib.errors import DataError
from tests.conftest import TINY_DOCS, TINY_QA, write_jsonl_lines


def test_loads_every_row_with_its_line(tmp_path):
    path = write_jsonl_lines(tmp_path / "c.jsonl", [TINY_DOCS[0], "", "   ", TINY_DOCS[1]])
    df = load_corpus(path)
    assert df["doc_id"].tolist() == ["plan-01", "pay-01"]
    assert df["line"].tolist() == [1, 4]  # blank lines skipped, numbering kept
    assert df["title"].tolist() == ["Choosing a plan", "Paying by card"]


def test_absent_optional_fields_are_none_not_dropped(tmp_path):
    path = write_jsonl_lines(tmp_path / "c.jsonl", [{"doc_id": "a"}, {"doc_id": "b", "text": "x"}])
    df = load_corpus(path)
    assert len(df) == 2
    assert pd.isna(df.loc[0, "text"]) and df.loc[1, "text"] == "x"


def test_qa_columns(tmp_path):
    df = load_qa(write_jsonl_lines(tmp_path / "qa.jsonl", TINY_QA))
    assert list(df.columns) == ["line", "qid", "question", "answer", "doc_ids", "split",
                                "metadata", "choices"]
    assert pd.isna(df.loc[7, "split"])
    assert df.loc[0, "doc_ids"] == ["plan-01"]


def test_empty_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"corpus.jsonl: file is empty"):
        load_corpus(path)


def test_truncated_json_line(tmp_path):
    path = write_jsonl_lines(tmp_path / "corpus.jsonl",
                             [TINY_DOCS[0], '{"doc_id": "x", "text": "cut off'])
    with pytest.raises(DataError) as err:
        load_corpus(path)
    assert err.value.line == 2
    assert "corpus.jsonl, line 2: not valid JSON" in str(err.value)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "qa.jsonl"
    good = json.dumps(TINY_QA[0]).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + b'{"qid": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert "qa.jsonl, line 3: not valid UTF-8 (byte 0xe9 at column 13)" in str(err.value)


def test_line_that_is_not_an_object(tmp_path):
    path = write_jsonl_lines(tmp_path / "qa.jsonl", [TINY_QA[0], "[1, 2]"])
    with pytest.raises(DataError, match="line 2: expected a JSON object, got list"):
        load_qa(path)


def test_wrong_field_type_names_field(tmp_path):
    path = write_jsonl_lines(tmp_path / "corpus.jsonl", [{"doc_id": "a", "text": 42}])
    with pytest.raises(DataError) as err:
        load_corpus(path)
    assert (err.value.line, err.value.field) == (1, "text")
    assert "field 'text': expected a string, got int" in str(err.value)


def test_doc_ids_must_be_strings(tmp_path):
    row = {**TINY_QA[0], "doc_ids": ["plan-01", 7]}
    with pytest.raises(DataError, match="field 'doc_ids': expected a list of strings"):
        load_qa(write_jsonl_lines(tmp_path / "qa.jsonl", [row]))


YNM = ["yes", "no", "maybe"]


def test_choices_are_kept_where_given(tmp_path):
    rows = [{**TINY_QA[0], "answer": "Yes. 4 euros.", "choices": YNM}, TINY_QA[1]]
    df = load_qa(write_jsonl_lines(tmp_path / "qa.jsonl", rows))
    assert df.loc[0, "choices"] == YNM and df.loc[1, "choices"] is None


@pytest.mark.parametrize("choices, answer, field, expected", [
    ("yes", "Yes.", "choices", "expected a list of strings, got str"),
    (["yes", 2], "Yes.", "choices", "expected a list of strings"),
    (["yes"], "Yes.", "choices", "expected 2 to 20 choices, got 1"),
    (["yes", "no", "  "], "Yes.", "choices", "choice 3 ('  ') has no letter or digit"),
    (["yes", "Yes!"], "Yes.", "choices",
     "choices 1 and 2 ('yes', 'Yes!') are the same once case and punctuation are ignored"),
    (YNM, "Probably.", "answer",
     "must start with one of the choices ['yes', 'no', 'maybe'] (case and punctuation ignored), "
     "got 'Probably.'"),
])
def test_bad_choices_name_file_line_and_field(tmp_path, choices, answer, field, expected):
    rows = [TINY_QA[1], {**TINY_QA[0], "answer": answer, "choices": choices}]
    path = write_jsonl_lines(tmp_path / "qa.jsonl", rows)
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert str(err.value) == f"{path}, line 2: field '{field}': {expected}"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_qa(tmp_path / "nope.jsonl")


def test_write_then_read_roundtrip(tmp_path):
    rows = [{"a": "é", "b": [1]}, {"a": "x", "b": []}]
    path = write_jsonl(rows, tmp_path / "sub" / "x.jsonl")
    assert read_jsonl(path) == rows
    assert not (tmp_path / "sub" / "x.jsonl.tmp").exists()


def test_a_key_given_twice_is_named(tmp_path):
    from tasks.lib.data import load_qa
    from tasks.lib.errors import DataError

    path = tmp_path / "qa.jsonl"
    path.write_text('{"qid": "a", "question": "q?", "answer": "x", "doc_ids": ["d"]}\n'
                    '{"qid": "b", "question": "q?", "question": "other?", "answer": "x", '
                    '"doc_ids": ["d"]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"qa.jsonl, line 2: field 'question': a key may appear once"):
        load_qa(path)
