"""The recommendation (tasks/lib/recommend.py): ties go to the cheapest, separation to the best,
measured costs order the options, and the eval-set size that would settle a tie."""

import pytest

from tasks.lib.recommend import (
    cost_order,
    eval_questions_needed,
    headline_metric,
    option_costs_table,
    paired_values,
    recommend,
    recommend_reports,
)

N = 40
BASE = [0.1, 0.2] * (N // 2)


def shifted(values, *steps):
    """values + a repeating pattern of steps (a paired difference with a known mean)."""
    return [v + steps[i % len(steps)] for i, v in enumerate(values)]


def summary_of(values):
    return {s: {"token_f1": {"mean": sum(v) / len(v), "lo": 0.0, "hi": 1.0}} for s, v in values.items()}


def run(values, costs=None, speed=None):
    table = option_costs_table(costs or {s: {} for s in values}, speed or {})
    return recommend(values, summary_of(values), table, "token_f1", 400, 0)


def test_nothing_separates_so_the_cheapest_tied_option_ships():
    rag = shifted(BASE, 0.15, -0.1)  # mean +0.025, interval covers 0
    values = {"base": BASE, "rag": rag, "hybrid": shifted(BASE, -0.1, 0.15)}
    rec = run(values)
    assert (rec["setup"], rec["option"], rec["confidence"]) == ("base", "base", "tied")
    assert rec["tied"] == ["base", "rag", "hybrid"] and rec["cheapest_tied"] == "base"
    assert rec["best_mean"] == "rag"  # ties on the mean go to the cheaper option
    assert rec["evidence"]["vs"] == "rag" and rec["evidence"]["mean"] == pytest.approx(-0.025)
    assert rec["evidence"]["lo"] < 0 < rec["evidence"]["hi"] and rec["evidence"]["n"] == N
    assert rec["why"][1].startswith("No option separates from base: base − rag -0.025 [")
    assert rec["summary"].startswith("Ship base [tied]: token_f1 0.150; base − rag -0.025 [")


def test_a_separated_best_option_ships_with_its_weakest_win_as_evidence():
    values = {"base": BASE, "rag": shifted(BASE, 0.3, 0.4), "hybrid": shifted(BASE, 0.5, 0.6)}
    rec = run(values)
    assert (rec["setup"], rec["option"], rec["confidence"]) == ("hybrid", "both", "separated")
    assert rec["evidence"]["vs"] == "rag" and rec["evidence"]["mean"] == pytest.approx(0.2)
    assert rec["evidence"]["lo"] > 0
    assert rec["beaten_by"] == {"base": ["rag", "hybrid"], "rag": ["hybrid"], "hybrid": []}
    assert rec["what_would_change"]["n_needed"] is None
    assert rec["why"][1].startswith("both (hybrid) beats every cheaper option")


def test_a_better_but_unseparated_costlier_option_leaves_the_cheaper_one_leaning():
    rag = shifted(BASE, 0.3, 0.4)
    values = {"base": BASE, "rag": rag, "hybrid": shifted(rag, 0.25, -0.15)}  # +0.05, covers 0
    rec = run(values, speed={"rag": {"latency_ms": 120.0}})
    assert (rec["setup"], rec["confidence"], rec["best_mean"]) == ("rag", "leaning", "hybrid")
    assert rec["evidence"]["vs"] == "hybrid" and rec["evidence"]["mean"] == pytest.approx(-0.05)
    change = rec["what_would_change"]
    assert (change["target"], change["vs"]) == ("hybrid", "rag")
    assert change["n_needed"] == eval_questions_needed(N, rec["pairwise"]["hybrid"]["rag"]) > N
    assert "the answer would move to both (hybrid)" in change["text"]
    assert rec["costs"]["rag"]["latency_ms"] == 120.0 and "120 ms per answer" in rec["why"][-1]


def test_measured_costs_reorder_the_options():
    ft = shifted(BASE, 0.3, 0.4)
    values = {"base": BASE, "rag": shifted(ft, 0.3, -0.2), "finetuned": ft}  # ties finetuned
    costs = {"base": {}, "rag": {"train_seconds": 50.0, "index_seconds": 5.0},
             "finetuned": {"train_seconds": 20.0, "adapter_bytes": 10}}
    rec = run(values, costs)
    assert rec["cost_order"] == ["base", "finetuned", "rag"]
    assert (rec["setup"], rec["option"], rec["confidence"]) == ("finetuned", "fine-tune", "leaning")
    assert rec["best_mean"] == "rag" and rec["costs"]["rag"]["build_seconds"] == 55.0


def test_eval_questions_needed_scales_with_the_squared_half_width_over_the_mean():
    assert eval_questions_needed(40, {"mean": 0.02, "lo": -0.01, "hi": 0.05}) == 90  # 40 * 1.5²
    assert eval_questions_needed(48, {"mean": -0.04, "lo": -0.1, "hi": 0.02}) == 108  # 48 * 1.5²
    assert eval_questions_needed(40, {"mean": 0.05, "lo": 0.01, "hi": 0.09}) == 40  # separated now
    assert eval_questions_needed(40, {"mean": 0.0, "lo": -0.1, "hi": 0.1}) is None


def test_cost_order_keeps_the_default_order_without_measurements():
    table = option_costs_table({s: {} for s in ("hybrid", "finetuned", "rag", "base")}, {})
    assert cost_order(list(table), table) == ["base", "rag", "finetuned", "hybrid"]


def test_paired_values_align_on_qids_and_skip_setups_without_the_metric():
    per_setup = {"base": [{"qid": "a", "token_f1": 0.1}, {"qid": "b", "token_f1": 0.2}],
                 "rag": [{"qid": "b", "token_f1": 0.5}, {"qid": "a", "token_f1": 0.4}],
                 "hybrid": [{"qid": "a", "token_f1": None}, {"qid": "b", "token_f1": 0.3}]}
    assert paired_values(per_setup, "token_f1") == {"base": [0.1, 0.2], "rag": [0.4, 0.5]}


def test_no_values_recommend_nothing():
    assert recommend({}, {}, {})["option"] is None


def test_a_single_scored_setup_is_shipped_as_tied_with_nothing_to_compare():
    rec = run({"base": BASE})
    assert (rec["setup"], rec["confidence"], rec["evidence"]) == ("base", "tied", None)
    assert rec["what_would_change"]["text"] == "Only base was scored: score another setup to compare."
    assert rec["summary"] == "Ship base [tied]: token_f1 0.150."


def test_headline_metric_is_accuracy_only_when_every_eval_question_has_choices():
    short = {"qid": "q1", "token_f1": 0.2, "accuracy": 1.0}
    free = {"qid": "q2", "token_f1": 0.5, "accuracy": None}
    assert headline_metric({"base": [short], "rag": [{**short, "accuracy": 0.0}]}) == "accuracy"
    assert headline_metric({"base": [short, free]}) == "token_f1"  # mixed set: accuracy shown only
    assert headline_metric({"base": [{"qid": "q2", "token_f1": 0.5}]}) == "token_f1"
    assert headline_metric({}) == "token_f1"


def test_recommend_reports_decides_on_accuracy_for_a_short_answer_eval_set():
    rows = {s: [{"qid": f"q{i}", "token_f1": 0.3, "accuracy": float(i % 2 or s == "rag")}
                for i in range(N)] for s in ("base", "rag")}
    summary = {s: {"accuracy": {"mean": 0.5, "lo": 0.3, "hi": 0.7}} for s in rows}
    answers = {"answers": rows, "summary": summary, "costs": {}, "speed": {}}
    rec = recommend_reports(answers, {}, 400, 0)
    assert (rec["metric"], rec["setup"]) == ("accuracy", "rag")
    assert rec["means"] == {"base": 0.5, "rag": 1.0}
    assert recommend_reports(answers, {}, 400, 0, "token_f1")["setup"] == "base"  # a tie: cheapest


def test_a_difference_tiny_next_to_its_interval_is_called_tied_not_n_questions_away():
    rag = shifted(BASE, 0.3, 0.4)
    values = {"base": BASE, "rag": rag, "hybrid": shifted(rag, 0.201, -0.199)}  # +0.001, wide
    rec = run(values)
    assert (rec["setup"], rec["best_mean"]) == ("rag", "hybrid")
    assert eval_questions_needed(N, rec["pairwise"]["hybrid"]["rag"]) > 25 * N
    change = rec["what_would_change"]
    assert change["n_needed"] is None and (change["target"], change["vs"]) == ("hybrid", "rag")
    assert "so treat them as tied" in change["text"] and "questions would show" not in rec["summary"]
