"""Filters of synthetic questions (tasks/lib/synth_filters.py): each one removes what it should,
counted under its name, and too few survivors is a named error."""

import numpy as np
import pytest

from tasks.lib.config import SynthesizeConfig
from tasks.lib.errors import DataError
from tasks.lib.synth_filters import (
    Candidate,
    answer_support,
    check_enough,
    copy_share,
    filter_candidates,
    roundtrip_survivors,
    source_ranks,
)

CHUNK = ("Cards are charged on the first working day of each month. A failed payment is retried "
         "twice, three days apart, before the account is paused.")
SECTION = SynthesizeConfig(min_question_words=3, max_question_words=12, max_question_chars=80,
                           max_copy_share=0.6, min_answer_support=0.5)


def cand(question: str, answer: str = "On the first working day.", chunk: str = "pay#0") -> Candidate:
    return Candidate(chunk, chunk.split("#")[0], question, answer)


def test_copy_share_counts_question_4grams_found_in_the_chunk():
    assert copy_share("Cards are charged on the first working day?", CHUNK) == 1.0
    assert copy_share("When will my card be charged each month?", CHUNK) == 0.0
    # 5 words -> 2 four-grams: "payment is retried twice" is copied, "is retried twice daily" not
    assert copy_share("payment is retried twice daily", CHUNK) == 0.5
    assert copy_share("Why?", CHUNK) == 0.0  # under 4 words: no 4-gram to copy


def test_answer_support_is_the_share_of_new_answer_words_in_the_chunk():
    assert answer_support("Three days apart.", CHUNK) == 1.0
    assert answer_support("Every Tuesday at noon.", CHUNK) == 0.0
    assert answer_support("Twice, on Tuesday.", CHUNK) == 0.5  # "on" is a stopword
    assert answer_support("", CHUNK) == 0.0
    # restating the question earns nothing: only "tuesday" is new, and the chunk lacks it
    assert answer_support("Cards are charged on Tuesday.", CHUNK, "When are cards charged?") == 0.0
    assert answer_support("Cards are charged.", CHUNK, "When are cards charged?") == 0.0


def test_each_filter_counts_what_it_removed_in_order():
    candidates = [
        cand("When is my card charged?"),  # kept
        cand("Charged?"),  # length: 1 word
        cand("x " * 20),  # length: 20 words
        cand("Cards are charged on the first working day of each month?"),  # copy
        cand("What happens after a failed payment?", "You get a free month."),  # unsupported
        cand("when is my card CHARGED"),  # duplicate after normalisation
        cand("How do I pay by card?", "charged on the first working day"),  # leak
        cand("How often is a failed payment retried?", "Twice, three days apart."),  # kept
    ]
    kept, removed = filter_candidates(candidates, {"pay#0": CHUNK}, SECTION, "lm",
                                      real_questions=["How do I pay by card ?"])
    assert [c.question for c in kept] == ["When is my card charged?",
                                          "How often is a failed payment retried?"]
    assert removed == {"length": 2, "copy": 1, "unsupported": 1, "duplicate": 1, "leak": 1}


def test_a_copy_of_the_prompts_example_counts_as_a_duplicate():
    from tasks.lib.synthesis import example_questions

    copied = cand("How long can I keep a borrowed book?", "Three weeks, charged monthly.")
    assert example_questions() == ["When does the library open on Saturday?",
                                   "How long can I keep a borrowed book?"]
    kept, removed = filter_candidates([copied], {"pay#0": CHUNK}, SECTION.model_copy(
        update={"min_answer_support": 0.0}), "lm", [], example_questions())
    assert kept == [] and removed["duplicate"] == 1


def test_ict_questions_skip_the_copy_and_support_checks():
    copied = cand("Cards are charged on the first working day of each month.", "Elsewhere.")
    kept, removed = filter_candidates([copied], {"pay#0": CHUNK}, SECTION.model_copy(
        update={"max_question_words": 20}), "ict", [])
    assert kept == [copied] and sum(removed.values()) == 0


def test_source_ranks_and_the_round_trip():
    sims = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.6], [0.3, 0.3, 0.1]])
    assert source_ranks(sims, [0, 1, 1]) == [1, 3, 2]  # a tie counts against the source
    candidates = [cand("a b c"), cand("d e f"), cand("g h i")]
    kept, failed = roundtrip_survivors(candidates, [1, 3, 2], k=2)
    assert kept == [candidates[0], candidates[2]] and failed == 1
    assert roundtrip_survivors(candidates, [9, 9, 9], k=0) == (candidates, 0)


def test_too_few_survivors_names_every_filter_that_removed_something():
    check_enough(10, 10, {}, 12, "corpus.jsonl")
    with pytest.raises(DataError) as err:
        check_enough(3, 10, {"too_short_chunk": 2, "unparsable": 5, "copy": 0, "roundtrip": 4},
                     12, "corpus.jsonl")
    assert str(err.value).startswith(
        "corpus.jsonl: only 3 synthetic question(s) survived the filters, validate.min_questions "
        "is 10; from 12 generated, removed: too_short_chunk 2, unparsable 5, roundtrip 4.")
