"""Choosing the retrieval method (tasks/lib/choice.py): exact picks on hand-made scores, the
train slice, the gate alias and the old name of the fusion."""

import logging

import pytest

from tasks.lib.choice import (
    choice_slice,
    choose_method,
    chosen_metrics,
    release_mode,
    resolve_chosen,
    with_current_names,
)
from tasks.lib.config import DEFAULT_GATE, GateRule, PromoteConfig

LOW = [0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1]
HIGH = [0.9, 1.0, 0.9, 1.0, 0.9, 1.0, 0.9, 1.0, 0.9, 1.0]


def test_the_best_separated_method_is_chosen():
    chosen = choose_method({"bm25": LOW, "lora": HIGH, "fusion": [x - 0.5 for x in HIGH]},
                           200, 0)
    assert chosen["method"] == "lora"
    assert chosen["questions"] == 10
    assert chosen["validation"]["lora"]["mean"] == pytest.approx(0.95)
    assert set(chosen["validation"]["lora"]) == {"mean", "lo", "hi"}
    assert chosen["why"] == "lora: best nDCG@10 on the validation slice (0.950), separated from the rest"


def test_a_tie_goes_to_the_cheaper_method():
    # fusion is ahead by 0.01 on average, but per question it is sometimes behind: a tie
    lora = [0.5, 0.6, 0.4, 0.7, 0.5, 0.6, 0.4, 0.7, 0.5, 0.6]
    fusion = [0.6, 0.5, 0.5, 0.6, 0.6, 0.5, 0.5, 0.7, 0.6, 0.6]
    chosen = choose_method({"fusion": fusion, "lora": lora, "bm25": LOW}, 500, 0)
    assert chosen["method"] == "lora"
    assert chosen["why"].startswith("lora: tied with the best (fusion, nDCG@10 0.570 vs 0.550")


def test_ties_follow_the_cost_order_and_latency_only_orders_unknown_methods():
    same = [0.5, 0.6, 0.4, 0.7, 0.5]
    # a noisy p95 does not make fusion (BM25 + vectors) cheaper than lora
    assert choose_method({"fusion": same, "lora": same}, 200, 0,
                         {"fusion": 3.0, "lora": 9.0})["method"] == "lora"
    assert choose_method({"colbert": same, "splade": same}, 200, 0,
                         {"colbert": 9.0, "splade": 3.0})["method"] == "splade"


def test_nothing_measured_is_an_error():
    with pytest.raises(ValueError, match="no retrieval method was measured"):
        choose_method({}, 200, 0)


def test_the_slice_is_seeded_and_never_larger_than_train():
    train = [{"qid": f"q{i:02d}"} for i in range(30)]
    first, again = choice_slice(train, 5, 7), choice_slice(list(reversed(train)), 5, 7)
    assert first == again and len(first) == 5
    assert [q["qid"] for q in first] == sorted(q["qid"] for q in first)
    assert choice_slice(train, 0, 7) == train == choice_slice(train, 99, 7)


def test_metrics_carry_a_copy_of_the_chosen_method():
    methods = {"lora": {"ndcg@10": 0.5, "p95_ms": 3.0}, "fusion": {"ndcg@10": 0.4, "p95_ms": 5.0}}
    assert chosen_metrics(methods, "lora")["chosen"] == {"ndcg@10": 0.5, "p95_ms": 3.0}
    assert "chosen" not in chosen_metrics(methods, None)


def test_gate_alias_names_the_candidates_method():
    rules = resolve_chosen(DEFAULT_GATE, "lora")
    assert [r.metric for r in rules] == ["answers.hybrid.token_f1", "retrieval.lora.ndcg@10",
                                         "retrieval.lora.p95_ms"]
    assert rules[1].max_regression == DEFAULT_GATE[1].max_regression
    assert resolve_chosen(DEFAULT_GATE, None) == DEFAULT_GATE


def test_old_retrieval_hybrid_rule_loads_as_fusion_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="tasks.lib.config"):
        section = PromoteConfig(gate=[{"metric": "retrieval.hybrid.ndcg@10", "floor": 0.1}])
    assert section.gate[0].metric == "retrieval.fusion.ndcg@10"
    assert "retrieval.hybrid.ndcg@10 is deprecated" in caplog.text
    assert GateRule(metric="answers.hybrid.token_f1", floor=0.0).metric == "answers.hybrid.token_f1"


def test_old_logged_metrics_are_read_under_the_new_name():
    assert with_current_names({"retrieval.hybrid.ndcg@10": 0.3, "answers.hybrid.token_f1": 0.2}) == {
        "retrieval.fusion.ndcg@10": 0.3, "retrieval.hybrid.ndcg@10": 0.3,
        "answers.hybrid.token_f1": 0.2}


def test_serving_searches_with_the_release_method():
    assert release_mode({"retrieval.method": "lora"}, "fusion") == "vector"
    assert release_mode({"retrieval.method": "fusion_native"}, "fusion") == "fusion_native"
    assert release_mode({}, "fusion") == "fusion"
