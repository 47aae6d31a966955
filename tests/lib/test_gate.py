"""The release gate (tasks/lib/gate.py): every compared number, improvement, tolerated
regression, floors; the decision as a table and as one sentence."""

import math

import pytest

from tasks.lib.config import GateRule
from tasks.lib.errors import ConfigError
from tasks.lib.gate import check_rule, decision_markdown, evaluate_gate, summarize

F1 = GateRule(metric="answers.hybrid.token_f1", min_improvement=0.01, floor=0.02)
NDCG = GateRule(metric="retrieval.hybrid.ndcg@10", max_regression=0.01, floor=0.1)
P95 = GateRule(metric="retrieval.hybrid.p95_ms", higher_is_better=False, max_regression=0.5,
               relative=True)
RULES = (F1, NDCG, P95)
CHAMPION = {"answers.hybrid.token_f1": 0.20, "retrieval.hybrid.ndcg@10": 0.80,
            "retrieval.hybrid.p95_ms": 20.0}


def test_first_release_passes_on_floors_only():
    decision = evaluate_gate(RULES, {**CHAMPION, "answers.hybrid.token_f1": 0.021}, None)
    assert decision["promoted"] and decision["first_release"]
    assert [r["change"] for r in decision["rules"]] == [None, None, None]


def test_first_release_below_a_floor_is_not_promoted():
    decision = evaluate_gate(RULES, {**CHAMPION, "retrieval.hybrid.ndcg@10": 0.05}, None)
    assert not decision["promoted"]
    assert [r["passed"] for r in decision["rules"]] == [True, False, True]


def test_equal_metrics_miss_the_required_improvement():
    decision = evaluate_gate(RULES, dict(CHAMPION), CHAMPION)
    rows = {r["metric"]: r for r in decision["rules"]}
    assert not decision["promoted"]
    assert not rows["answers.hybrid.token_f1"]["passed"]
    assert rows["retrieval.hybrid.ndcg@10"]["passed"] and rows["retrieval.hybrid.p95_ms"]["passed"]


def test_improvement_with_tolerated_regressions_is_promoted():
    cand = {"answers.hybrid.token_f1": 0.215, "retrieval.hybrid.ndcg@10": 0.791,
            "retrieval.hybrid.p95_ms": 29.0}  # -0.009 nDCG, +45% latency: inside tolerances
    decision = evaluate_gate(RULES, cand, CHAMPION)
    assert decision["promoted"]
    rows = {r["metric"]: r for r in decision["rules"]}
    assert rows["answers.hybrid.token_f1"]["change"] == pytest.approx(0.015)
    assert rows["retrieval.hybrid.p95_ms"]["change"] == pytest.approx(-0.45)  # worse, relative


def test_regression_beyond_tolerance_blocks_promotion():
    slow = {**CHAMPION, "answers.hybrid.token_f1": 0.3, "retrieval.hybrid.p95_ms": 31.0}
    assert not evaluate_gate(RULES, slow, CHAMPION)["promoted"]  # +55% latency
    worse = {**CHAMPION, "answers.hybrid.token_f1": 0.3, "retrieval.hybrid.ndcg@10": 0.785}
    decision = evaluate_gate(RULES, worse, CHAMPION)
    assert not decision["promoted"]
    decision.update(candidate_version={"retriever": 4, "generator": 4},
                    champion_version={"retriever": 2, "generator": 3})
    decision["summary"] = summarize(decision)
    assert "retrieval.hybrid.ndcg@10: regression 0.015 (allowed <= 0.01)" in decision["summary"]
    md = decision_markdown(decision)
    assert "| retrieval.hybrid.ndcg@10 | 0.785 | 0.8 | -0.015 |" in md and "FAIL" in md
    assert "retriever v2, generator v3" in md


def test_unknown_gate_metric_is_a_config_error_listing_known_ones():
    with pytest.raises(ConfigError) as err:
        evaluate_gate((GateRule(metric="answers.hybrid.f1", floor=0.0),), CHAMPION, None)
    assert str(err.value) == ("promote.gate: metric 'answers.hybrid.f1' is not in the evaluation "
                              "metrics; known: answers.hybrid.token_f1, retrieval.hybrid.ndcg@10, "
                              "retrieval.hybrid.p95_ms")


def test_metric_the_champion_lacks_is_checked_on_its_floor():
    decision = evaluate_gate((F1,), CHAMPION, {"retrieval.hybrid.ndcg@10": 0.8})
    [row] = decision["rules"]
    assert decision["promoted"] and not decision["first_release"]
    assert row["note"] == "champion has no value for this metric: floor only"
    assert (row["champion"], row["change"]) == (None, None)
    assert [c["check"] for c in row["checks"]] == ["floor"]  # min_improvement not applied
    low = evaluate_gate((F1,), {**CHAMPION, "answers.hybrid.token_f1": 0.01},
                        {"retrieval.hybrid.ndcg@10": 0.8})
    assert not low["promoted"]  # the floor still applies


def test_a_rule_with_nothing_to_check_says_so():
    rule = GateRule(metric="m", min_improvement=0.0)  # no floor, no champion: nothing compared
    decision = evaluate_gate((rule,), {"m": 0.5}, None)
    assert decision["promoted"] and decision["first_release"]
    assert decision["rules"][0]["checks"] == []
    assert decision["rules"][0]["note"] == "no champion yet: nothing to compare"


# ---- check_rule: one rule, exact numbers --------------------------------------------------------


def test_floor_higher_and_lower_is_better():
    high = GateRule(metric="m", floor=0.5)
    assert check_rule(high, 0.5, None) == {
        "metric": "m", "candidate": 0.5, "champion": None, "change": None, "passed": True,
        "checks": [{"check": "floor", "passed": True, "text": "value 0.5 (floor >= 0.5)"}]}
    assert not check_rule(high, 0.4999, None)["passed"]
    low = GateRule(metric="p95", higher_is_better=False, floor=30)
    assert check_rule(low, 30.0, None)["checks"] == [
        {"check": "floor", "passed": True, "text": "value 30 (floor <= 30)"}]
    assert not check_rule(low, 30.5, None)["passed"]


def test_min_improvement_is_absolute_by_default():
    rule = GateRule(metric="m", min_improvement=0.01)
    row = check_rule(rule, 0.21, 0.20)
    assert row["change"] == pytest.approx(0.01) and row["passed"]  # exactly the bar passes
    assert row["checks"][0]["text"] == "improvement +0.01 (need >= 0.01)"
    worse = check_rule(rule, 0.205, 0.20)
    assert not worse["passed"] and worse["checks"][0]["text"] == "improvement +0.005 (need >= 0.01)"


def test_max_regression_tolerates_up_to_the_bound():
    rule = GateRule(metric="m", max_regression=0.02)
    assert check_rule(rule, 0.78, 0.80)["passed"]
    assert check_rule(rule, 0.90, 0.80)["checks"][0]["text"] == "regression 0 (allowed <= 0.02)"
    row = check_rule(rule, 0.77, 0.80)
    assert not row["passed"] and row["change"] == pytest.approx(-0.03)
    assert row["checks"][0]["text"] == "regression 0.03 (allowed <= 0.02)"


def test_lower_is_better_flips_the_sign_of_change():
    rule = GateRule(metric="p95", higher_is_better=False, max_regression=5)
    faster = check_rule(rule, 15.0, 20.0)
    assert faster["change"] == 5.0 and faster["passed"]  # positive: the candidate is better
    slower = check_rule(rule, 26.0, 20.0)
    assert slower["change"] == -6.0 and not slower["passed"]
    assert slower["checks"][0]["text"] == "regression 6 (allowed <= 5)"


def test_relative_change_is_a_fraction_of_the_champion():
    rule = GateRule(metric="p95", higher_is_better=False, max_regression=0.5, relative=True)
    row = check_rule(rule, 25.0, 20.0)
    assert row["change"] == pytest.approx(-0.25) and row["passed"]
    assert row["checks"][0]["text"] == "regression 0.25 (allowed <= 0.5 (relative))"
    gain = GateRule(metric="m", min_improvement=0.1, relative=True)
    assert check_rule(gain, 0.55, 0.5)["change"] == pytest.approx(0.1)
    assert check_rule(gain, 0.55, 0.5)["passed"]


def test_relative_change_against_a_zero_champion():
    rule = GateRule(metric="m", min_improvement=0.1, relative=True)
    better = check_rule(rule, 0.2, 0.0)
    assert better["change"] == math.inf and better["passed"]
    same = check_rule(rule, 0.0, 0.0)
    assert same["change"] == 0.0 and not same["passed"]
    worse = check_rule(GateRule(metric="m", max_regression=0.5, relative=True), -0.1, 0.0)
    assert worse["change"] == -math.inf and not worse["passed"]


def test_every_check_must_pass():
    rule = GateRule(metric="m", floor=0.5, max_regression=0.1)
    row = check_rule(rule, 0.45, 0.50)  # inside the tolerance, below the floor
    assert [c["passed"] for c in row["checks"]] == [False, True] and not row["passed"]


# ---- the decision as a reviewer reads it ----------------------------------------------------------


def decided(rules, candidate, champion, versions=((1, 1), None)):
    decision = evaluate_gate(rules, candidate, champion)
    cand, champ = versions
    decision["candidate_version"] = {"retriever": cand[0], "generator": cand[1]}
    decision["champion_version"] = None if champ is None else {"retriever": champ[0],
                                                               "generator": champ[1]}
    decision["summary"] = summarize(decision)
    return decision


def test_summaries():
    first = decided((F1,), {"answers.hybrid.token_f1": 0.5}, None)
    assert first["summary"] == "release v1 is the new champion (first release)"
    better = decided((F1,), {"answers.hybrid.token_f1": 0.5}, {"answers.hybrid.token_f1": 0.2},
                     ((5, 6), (4, 4)))
    assert better["summary"] == "release v5 is the new champion"
    both = decided((F1, NDCG), {"answers.hybrid.token_f1": 0.01, "retrieval.hybrid.ndcg@10": 0.5},
                   CHAMPION, ((5, 6), (4, 4)))
    assert both["summary"] == (
        "release v5 is challenger; champion unchanged. Failed: answers.hybrid.token_f1: "
        "value 0.01 (floor >= 0.02); improvement -0.19 (need >= 0.01) | retrieval.hybrid.ndcg@10: "
        "regression 0.3 (allowed <= 0.01)")


def test_decision_markdown_of_a_first_release():
    md = decided((F1, P95), {"answers.hybrid.token_f1": 0.5, "retrieval.hybrid.p95_ms": 12.0},
                 None)
    text = decision_markdown(md)
    assert text.startswith("# Release gate: PROMOTED\n\nCandidate: retriever v1, generator v1  \n"
                           "Champion: none (first release: absolute floors only)\n")
    assert "| answers.hybrid.token_f1 | 0.5 | n/a | n/a | value 0.5 (floor >= 0.02) | pass |" in text
    assert ("| retrieval.hybrid.p95_ms | 12 | n/a | n/a | no champion yet: nothing to compare | "
            "pass |") in text
    assert text.endswith("release v1 is the new champion (first release)\n")
