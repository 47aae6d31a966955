"""Bad input as a property (Hypothesis): whatever bytes, JSON or structures reach the loaders,
the config loader and `--set` parsing, the only outcomes are valid data or a TunedexError (which
the CLI prints as a message with a non-zero exit) — never another exception."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.lib.errors import TunedexError

EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)

QA_KEYS = ["qid", "question", "answer", "doc_ids", "split", "metadata", "choices"]
CORPUS_KEYS = ["doc_id", "text", "title", "metadata"]


def objects(keys: list[str]):
    """JSON objects mostly made of the contract's keys, with values of any type."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=6))
    return st.dictionaries(key, json_values, max_size=7)


def lines_of(keys: list[str]):
    """A JSON Lines file: objects, other JSON, blank lines, broken JSON, raw invisible text."""
    line = st.one_of(objects(keys).map(json.dumps), json_values.map(json.dumps),
                     st.sampled_from(["", "   ", "{", '{"qid": "a", "qid": "b"}', "\u200b"]),
                     st.text(max_size=30))
    return st.lists(line, max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8"))


def outcome(fn, *args):
    """Call fn; a TunedexError is a fine outcome, anything else escapes (and fails the test)."""
    try:
        return fn(*args)
    except TunedexError as err:
        assert str(err).strip(), "an error with no message"
        return err


@pytest.mark.parametrize("kind", ["qa", "corpus"])
@EXAMPLES
@given(data=st.data())
def test_loaders_return_rows_or_a_named_error(kind, data, tmp_path):
    from tasks.lib.data import load_corpus, load_qa

    raw = data.draw(st.one_of(st.binary(max_size=200), lines_of(QA_KEYS if kind == "qa" else
                                                                 CORPUS_KEYS)))
    path = tmp_path / f"{kind}.jsonl"
    path.write_bytes(raw)
    result = outcome(load_qa if kind == "qa" else load_corpus, path)
    if not isinstance(result, TunedexError):
        assert len(result) >= 1  # rows come back only for a file that has some


@EXAMPLES
@given(raw=st.one_of(json_values, st.dictionaries(
    st.sampled_from(["project", "paths", "prepare", "monitor", "promote", "serve", "tracking",
                     "evaluate", "validate", "x"]), json_values, max_size=4)))
def test_config_data_gives_a_config_or_a_named_error(raw):
    from tasks.lib.config import Config, parse_config

    result = outcome(parse_config, raw, "prop.yaml")
    assert isinstance(result, Config | TunedexError)


@EXAMPLES
@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=60).map(
    lambda b: b.decode("utf-8", "replace"))))
def test_config_files_of_any_text(text, tmp_path):
    from tasks.lib.config import Config, load_config

    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    assert isinstance(outcome(load_config, path), Config | TunedexError)


@EXAMPLES
@given(key=st.text(alphabet=string.ascii_lowercase + "._", max_size=24),
       value=st.one_of(st.text(max_size=30), st.sampled_from(["[", "{a: 1", "!!python/object x",
                                                               "- a\n- b", ": :", "'"])))
def test_set_overrides_give_a_config_or_a_named_error(key, value):
    from tasks.lib.config import Config, apply_overrides, parse_config, parse_override

    parsed = outcome(parse_override, f"{key}={value}")
    if isinstance(parsed, TunedexError):
        return
    merged = outcome(apply_overrides, {"project": {"profile": "cpu"}}, dict([parsed]))
    if isinstance(merged, TunedexError):
        return
    assert isinstance(outcome(parse_config, merged, "--set"), Config | TunedexError)


def test_set_without_equals_or_with_bad_yaml_is_named():
    from tasks.lib.config import parse_override

    assert isinstance(outcome(parse_override, "prepare.chunk_tokens"), TunedexError)
    err = outcome(parse_override, "prepare.chunk_tokens=[")
    assert isinstance(err, TunedexError) and "prepare.chunk_tokens" in str(err)
