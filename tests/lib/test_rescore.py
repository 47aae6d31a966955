"""Re-scoring a release (tasks/lib/rescore.py): what a gate needs re-run and on which questions;
the run itself is under tests/stages/test_promote.py (slow)."""

from types import SimpleNamespace

import pytest

from tasks.lib.choice import resolve_chosen
from tasks.lib.config import DEFAULT_GATE, GateRule, ModelsConfig
from tasks.lib.errors import ConfigError
from tasks.lib.rescore import check_bases, eval_questions, gate_targets


def test_gate_targets_are_the_release_specific_methods_and_the_answer_setups():
    # promote resolves retrieval.chosen to the candidate's method first (tasks/lib/choice.py)
    assert gate_targets(DEFAULT_GATE) == ((), ("hybrid",))
    assert gate_targets(resolve_chosen(DEFAULT_GATE, "fusion")) == (("fusion",), ("hybrid",))
    rules = (GateRule(metric="retrieval.bm25.ndcg@10", floor=0.1),  # no release weights
             GateRule(metric="retrieval.lora.recall@10", floor=0.1),
             GateRule(metric="answers.rag.rouge_l", floor=0.1),
             GateRule(metric="answers.hybrid.token_f1", floor=0.1),
             GateRule(metric="answers.rag.token_f1", floor=0.1))
    assert gate_targets(rules) == (("lora",), ("rag", "hybrid"))


def test_eval_questions_back_in_evaluates_form_and_the_answered_ones():
    per_question = {"questions": [
        {"qid": "q1", "question": "A?", "reference": "a", "doc_ids": ["d1"], "metadata": {"k": 1}},
        {"qid": "q2", "question": "B?", "reference": "yes", "doc_ids": ["d2"], "metadata": {},
         "choices": ["yes", "no"]}],
        "answers": {"hybrid": {"q2": {}}, "base": {"q1": {}}}}
    questions, answered = eval_questions(per_question, ("hybrid",))
    assert questions == [
        {"qid": "q1", "question": "A?", "answer": "a", "doc_ids": ["d1"], "metadata": {"k": 1},
         "choices": None},
        {"qid": "q2", "question": "B?", "answer": "yes", "doc_ids": ["d2"], "metadata": {},
         "choices": ["yes", "no"]}]
    assert answered == questions[1:]
    assert eval_questions(per_question, ())[1] == []


def test_a_release_on_other_base_models_is_refused():
    models = ModelsConfig()
    same = SimpleNamespace(retriever_version=3, retriever_base=models.retriever_id,
                           generator_base=models.generator_id)
    check_bases(same, models)
    other = SimpleNamespace(**{**vars(same), "generator_base": "Qwen/Qwen2.5-0.5B-Instruct"})
    with pytest.raises(ConfigError) as err:
        check_bases(other, models)
    assert str(err.value) == (f"release v3 was built on {models.retriever_id} + "
                              f"Qwen/Qwen2.5-0.5B-Instruct, this config on {models.retriever_id} + "
                              f"{models.generator_id}")
