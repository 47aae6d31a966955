"""Synthetic questions, the pure part (tasks/lib/synthesis.py): modes, the prompt's format and
its parser, inverse cloze, reuse keys, rows, the synthetic eval split and provenance."""

import pytest

from tasks.lib.errors import DataError
from tasks.lib.provenance import provenance, provenance_line
from tasks.lib.synthesis import (
    EXAMPLE_OUTPUT,
    check_mode,
    eval_documents,
    ict_pairs,
    mode_line,
    parse_pairs,
    resolve_mode,
    reuse_key,
    sample_chunks,
    split_sentences,
    synth_messages,
    synthetic_qid,
    synthetic_row,
)


def test_auto_mode_follows_the_qa_file_and_explicit_modes_stay():
    assert resolve_mode("auto", qa_exists=True) == "off"
    assert resolve_mode("auto", qa_exists=False) == "only"
    for mode in ("off", "add", "only"):
        assert resolve_mode(mode, qa_exists=False) == mode
    assert mode_line("auto", "only", "raw/qa.jsonl", False) == (
        "synthesize.mode auto -> only: raw/qa.jsonl does not exist; questions are written from "
        "the corpus alone")
    assert mode_line("add", "add", "raw/qa.jsonl", True) == "synthesize.mode add (set in the config)"


def test_mode_off_without_a_qa_file_is_a_named_error():
    check_mode("off", True, "qa.jsonl")
    check_mode("only", False, "qa.jsonl")
    with pytest.raises(DataError, match=r"^qa.jsonl: file not found and synthesize.mode is off"):
        check_mode("off", False, "qa.jsonl")


def test_the_prompt_shows_the_format_on_a_generic_example_then_asks_about_the_passage():
    messages = synth_messages("Error E07 means the inverter lost contact.", 3, title="Battery")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "library" in messages[1]["content"]  # the example is not about the user's domain
    assert messages[-1]["content"] == ("Passage:\nBattery\nError E07 means the inverter lost "
                                       "contact.\n\nWrite 3 questions with answers.")
    assert "Write 1 question with answers." in synth_messages("x", 1)[-1]["content"]
    assert len(parse_pairs(EXAMPLE_OUTPUT, 5)) == 2  # the example parses as the model should write


def test_parse_pairs_keeps_strict_pairs_and_discards_the_rest():
    text = ("Sure! Here are questions:\n1. Question: What does E07 mean?\nAnswer: The inverter "
            "lost contact.\n**Question 2:** How do I reset it?\n**Answer 2:** Hold the button.\n"
            "Question: A question without its answer?\nSome prose.\nQuestion:   \nAnswer: x\n"
            "QUESTION: Third?\nANSWER: Yes.")
    assert parse_pairs(text, 5) == [("What does E07 mean?", "The inverter lost contact."),
                                    ("How do I reset it?", "Hold the button."),
                                    ("Third?", "Yes.")]
    assert parse_pairs(text, 1) == [("What does E07 mean?", "The inverter lost contact.")]
    assert parse_pairs("The passage is about batteries.", 2) == []


def test_ict_takes_a_sentence_as_question_and_the_rest_as_answer():
    text = "Codes expire after ten minutes. Lost your phone? Use a backup code."
    assert split_sentences(text) == ["Codes expire after ten minutes.", "Lost your phone?",
                                     "Use a backup code."]
    pairs = ict_pairs(text, 2, "13:sec#0", max_answer_words=50)
    assert len(pairs) == 2 and pairs == ict_pairs(text, 2, "13:sec#0", 50)  # stable
    for question, answer in pairs:
        assert question in split_sentences(text) and question not in answer
        assert answer.split() == [w for s in split_sentences(text) if s != question
                                  for w in s.split()]
    assert ict_pairs(text, 1, "13:sec#0", 2)[0][1].count(" ") == 1  # cut to 2 words
    assert ict_pairs("One sentence only.", 2, "k", 50) == []


def test_reuse_key_changes_with_each_input_it_depends_on():
    base = reuse_key("text", "lm", "gen", 2)
    assert base == reuse_key("text", "lm", "gen", 2)
    changed = [reuse_key("text!", "lm", "gen", 2), reuse_key("text", "ict", "gen", 2),
               reuse_key("text", "lm", "other", 2), reuse_key("text", "lm", "gen", 3)]
    assert len({base, *changed}) == 5


def test_rows_follow_the_qa_contract_with_stable_ids():
    chunk = {"chunk_id": "sec-01#1", "doc_id": "sec-01"}
    row = synthetic_row(chunk, "How long is a code valid?", "Ten minutes.", "lm", 4)
    assert row == {"qid": synthetic_qid("sec-01#1", "How long is a code valid?"),
                   "question": "How long is a code valid?", "answer": "Ten minutes.",
                   "doc_ids": ["sec-01"], "split": "train",
                   "metadata": {"synthetic": True, "chunk_id": "sec-01#1", "method": "lm"},
                   "line": 4}
    assert row["qid"].startswith("syn-") and row["qid"] != synthetic_qid("sec-01#0", row["question"])


def test_sample_chunks_is_seeded_stable_and_in_corpus_order():
    chunks = [{"chunk_id": f"d{i}#0"} for i in range(20)]
    picked = sample_chunks(chunks, 5, seed=13)
    assert len(picked) == 5 and picked == sample_chunks(chunks, 5, seed=13)
    assert picked == sorted(picked, key=lambda c: int(c["chunk_id"][1:-2]))
    assert picked != sample_chunks(chunks, 5, seed=14)
    # a new chunk does not reshuffle the others: the sample keeps all but at most one
    grown = sample_chunks([*chunks, {"chunk_id": "new#0"}], 5, seed=13)
    assert len({c["chunk_id"] for c in picked} & {c["chunk_id"] for c in grown}) >= 4
    assert sample_chunks(chunks, 0, 13) == chunks


def test_eval_documents_hold_out_a_share_never_none_never_all():
    docs = [f"doc-{i}" for i in range(50)]
    held = eval_documents(docs, 13, 0.2)
    assert len(held) == 10 and held == eval_documents(reversed(docs), 13, 0.2)
    assert eval_documents(["a", "b", "c"], 13, 0.01) and len(eval_documents(["a", "b"], 13, 0.99)) == 1
    assert eval_documents(["only"], 13, 0.5) == set()


def test_provenance_counts_real_and_synthetic_and_flags_a_synthetic_eval_set():
    real = {"metadata": None}
    syn = {"metadata": {"synthetic": True}}
    assert provenance([real, syn, syn], [real]) == {
        "train_source": "both", "train_real": 1, "train_synthetic": 2, "eval_synthetic": False,
        "eval_synthetic_questions": 0}
    prov = provenance([syn], [syn, syn])
    assert prov["train_source"] == "synthetic" and prov["eval_synthetic"] is True
    assert provenance([real], [])["train_source"] == "real"
    assert provenance_line(prov) == "Training questions: synthetic (0 real, 1 synthetic)."
