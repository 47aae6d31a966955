import pytest

from tasks.lib.choices import (
    answer_problem,
    choice_accuracy,
    choice_of,
    choices_instruction,
    choices_problem,
    normalize_choice,
)

YNM = ["yes", "no", "maybe"]


def test_normalize_choice():
    assert normalize_choice("  **Yes**, it did.") == "yes it did"
    assert normalize_choice("Long_term  care") == "long term care"
    assert normalize_choice("?!") == ""


@pytest.mark.parametrize("text, picked", [
    ("Yes, the trial showed a benefit.", "yes"),
    ("no.", "no"),
    ("  Maybe; the evidence is mixed", "maybe"),
    ("**Yes**", "yes"),
    ("YES", "yes"),
    ("Not clear from the study", None),  # "not" is not "no"
    ("Nobody knows", None),
    ("The answer is yes", None),  # the choice must come first
    ("", None),
])
def test_choice_of_reads_the_start_of_the_answer(text, picked):
    assert choice_of(text, YNM) == picked


def test_choice_of_multi_word_and_overlapping_choices():
    choices = ["no", "No change", "increase"]
    assert choice_of("No change was seen.", choices) == "No change"  # the longer match wins
    assert choice_of("No, it fell.", choices) == "no"
    assert choice_of("no-change", choices) == "No change"  # punctuation is a space
    assert choice_of("increased", choices) is None  # whole words only


def test_choice_accuracy():
    assert choice_accuracy("Yes, it helps.", "yes. The trial showed a benefit.", YNM) == 1.0
    assert choice_accuracy("No.", "Yes. It helps.", YNM) == 0.0
    assert choice_accuracy("I cannot tell.", "Maybe. Mixed.", YNM) == 0.0  # picked nothing
    assert choice_accuracy("anything", "anything", None) is None
    assert choice_accuracy("anything", "anything", []) is None


@pytest.mark.parametrize("choices, problem", [
    (["yes", "no", "maybe"], None),
    (["yes"], "expected 2 to 20 choices, got 1"),
    ([str(i) for i in range(21)], "expected 2 to 20 choices, got 21"),
    (["yes", 1], "expected a list of strings"),
    (["yes", " ... "], "choice 2 (' ... ') has no letter or digit"),
    (["Yes", "no", "yes."], "choices 1 and 3 ('Yes', 'yes.') are the same once case and "
                            "punctuation are ignored"),
])
def test_choices_problem(choices, problem):
    assert choices_problem(choices) == problem


def test_answer_problem():
    assert answer_problem("Maybe. Mixed evidence.", YNM) is None
    assert answer_problem("Perhaps; the evidence is mixed and small.", YNM) == (
        "must start with one of the choices ['yes', 'no', 'maybe'] (case and punctuation "
        "ignored), got 'Perhaps; the evidence is mixed and small'")


def test_choices_instruction():
    assert choices_instruction(YNM) == "Answer with exactly one of: yes, no, maybe; then one sentence why."
