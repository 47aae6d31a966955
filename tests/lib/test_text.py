"""Text normalisation (tasks/lib/text.py): the one question normaliser (leakage check, convert's
dedup key), word sets, content hashes and the embedded passage text."""

import pytest

from tasks.lib.text import content_hash, normalize_question, passage_text, word_set


def test_normalize_question():
    assert normalize_question("  What's the  PRICE of Pro?! ") == "what s the price of pro"
    assert normalize_question("Ｃafé\u00a0plan") == "café plan"


@pytest.mark.parametrize(("text", "key"), [
    ("What is COVID-19 ?", "what is covid 19"),
    ("what is covid 19", "what is covid 19"),
    ("  Ｃａｆé\tOK?! ", "café ok"),  # NFKC folds full-width letters
    ("", ""),
    ("why_not", "why_not"),  # "_" is a word character: kept
    ("STRASSE straße", "strasse strasse"),  # casefold, not lower
])
def test_normalize_question_is_the_dedup_and_leakage_key(text, key):
    assert normalize_question(text) == key


def test_word_set_lowercases_word_tokens():
    assert word_set("The Pro plan, the PRO plan!") == {"the", "pro", "plan"}
    assert word_set("...") == set()


def test_content_hash_is_short_stable_and_separates_parts():
    assert content_hash("T", "x") == content_hash("T", "x")
    assert len(content_hash("T", "x")) == 16
    assert content_hash("T", "x") != content_hash(None, "x")
    assert content_hash(None, "x") == content_hash("", "x")  # a missing title hashes as empty
    assert content_hash("ab", "c") != content_hash("a", "bc")  # parts are delimited


def test_passage_text_puts_the_title_on_its_own_line():
    assert passage_text({"title": "Plans", "text": "Basic is 4 euros."}) == "Plans\nBasic is 4 euros."
    assert passage_text({"title": None, "text": "Basic is 4 euros."}) == "Basic is 4 euros."
    assert passage_text({"text": "no title key"}) == "no title key"


def test_blank_means_nothing_visible():
    from tasks.lib.text import is_blank

    assert is_blank("") and is_blank(" \t\n") and is_blank("\u200b\u200c\u200d\ufeff\u2060\u00ad")
    assert not is_blank("a\u200b") and not is_blank("日本") and not is_blank("\u200b?")


@pytest.mark.parametrize("uri,masked", [
    ("https://bob:s3cret@mlflow.internal/api", "https://bob:***@mlflow.internal/api"),
    ("postgresql://u:pw@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
    ("https://ghp_token123@mlflow.internal", "https://***@mlflow.internal"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("s3://bucket/path", "s3://bucket/path"),
])
def test_credentials_in_uris_are_masked(uri, masked):
    from tasks.lib.text import mask_uri

    assert mask_uri(uri) == masked
    assert mask_uri(f"store at {uri}: down") == f"store at {masked}: down"
