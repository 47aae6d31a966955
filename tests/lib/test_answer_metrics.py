import pytest

from tasks.lib.answer_metrics import (
    content_tokens,
    exact_match,
    groundedness,
    normalize_answer,
    rouge_l,
    token_f1,
)


def test_normalize_answer_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Pro plan, costs 9 euros!  ") == "pro plan costs 9 euros"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words
    assert normalize_answer("...") == ""


def test_exact_match():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower in Paris", "Eiffel Tower") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_squad_style():
    # pred [200, gb, of, storage], ref [200, gb] -> P 2/4, R 1 -> F1 2/3 ("of" is no article)
    assert token_f1("200 GB of storage", "200 GB") == pytest.approx(2 / 3)
    assert token_f1("200 GB storage", "the 200 GB") == pytest.approx(0.8)  # P 2/3, R 1
    assert token_f1("Visa and Mastercard", "Mastercard and Visa") == 1.0
    assert token_f1("no overlap", "something else") == 0.0
    assert token_f1("the", "") == 1.0  # both empty after normalisation
    assert token_f1("", "an answer") == 0.0
    # multiset overlap: one x and one y shared -> P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_rouge_l_is_rouge_scores_on_its_own_tokens():
    # rouge-score keeps articles (no SQuAD normalisation): pred [paris, is, the, capital],
    # ref [the, capital, is, paris] -> LCS 2 ("the capital"), P = R = 1/2
    assert rouge_l("Paris is the capital", "the capital is Paris") == 0.5
    # pred [on, the, first, working, day], ref [first, working, day, of, each, month]: LCS 3,
    # P 3/5, R 3/6 -> F = 2 * 0.6 * 0.5 / 1.1
    assert rouge_l("On the first working day", "First working day of each month.") == pytest.approx(
        6 / 11)
    assert rouge_l("same words", "Same words!") == 1.0
    assert rouge_l("x", "y") == 0.0 and rouge_l("x", "") == 0.0
    assert rouge_l("", "") == 0.0  # unlike token F1: rouge-score scores no tokens as 0
    # its tokenizer keeps [a-z0-9] only: "Café" -> "caf", CJK text -> no tokens
    assert rouge_l("Café au lait", "cafe au lait") == pytest.approx(2 / 3)
    assert rouge_l("東京です", "東京です") == 0.0


def test_rouge_l_needs_no_network(monkeypatch):
    import socket

    from tasks.lib import answer_metrics

    def refuse(*args, **kwargs):
        raise AssertionError("rouge-score tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    answer_metrics._rouge_scorer.cache_clear()
    assert rouge_l("night tariff", "the night tariff") == pytest.approx(0.8)


def test_groundedness_share_of_content_tokens_in_context():
    assert content_tokens("The Pro plan is 9 euros") == ["pro", "plan", "9", "euros"]
    context = ["The Pro plan costs 9 euros a month.", "Basic is 4 euros."]
    # content: pro, plan, 9, euros, monthly -> 4 of 5 in the context
    assert groundedness("The Pro plan is 9 euros monthly", context) == pytest.approx(0.8)
    assert groundedness("Pro plan", "pro plan costs") == 1.0
    assert groundedness("Nothing matches here", "The Pro plan") == 0.0
    assert groundedness("anything", None) is None
    assert groundedness("anything", []) is None
    assert groundedness("it is the", "some context") is None  # no content tokens to judge
