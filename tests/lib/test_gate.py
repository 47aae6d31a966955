"""The release gate (tasks/lib/gate.py): every compared number, improvement, tolerated
regression, floors; the decision as a table and as one sentence."""

import math

import pytest

from tasks.lib.config import GateRule
from tasks.lib.errors import ConfigError
from tasks.lib.gate import (
    check_paired,
    check_rule,
    decision_markdown,
    evaluate_gate,
    plan_pairing,
    summarize,
)

F1 = GateRule(metric="answers.hybrid.token_f1", min_improvement=0.01, floor=0.02)
NDCG = GateRule(metric="retrieval.fusion.ndcg@10", max_regression=0.01, floor=0.1)
P95 = GateRule(metric="retrieval.fusion.p95_ms", higher_is_better=False, max_regression=0.5,
               relative=True)
RULES = (F1, NDCG, P95)
CHAMPION = {"answers.hybrid.token_f1": 0.20, "retrieval.fusion.ndcg@10": 0.80,
            "retrieval.fusion.p95_ms": 20.0}


def test_first_release_passes_on_floors_only():
    decision = evaluate_gate(RULES, {**CHAMPION, "answers.hybrid.token_f1": 0.021}, None)
    assert decision["promoted"] and decision["first_release"]
    assert [r["change"] for r in decision["rules"]] == [None, None, None]


def test_first_release_below_a_floor_is_not_promoted():
    decision = evaluate_gate(RULES, {**CHAMPION, "retrieval.fusion.ndcg@10": 0.05}, None)
    assert not decision["promoted"]
    assert [r["passed"] for r in decision["rules"]] == [True, False, True]


def test_equal_metrics_miss_the_required_improvement():
    decision = evaluate_gate(RULES, dict(CHAMPION), CHAMPION)
    rows = {r["metric"]: r for r in decision["rules"]}
    assert not decision["promoted"]
    assert not rows["answers.hybrid.token_f1"]["passed"]
    assert rows["retrieval.fusion.ndcg@10"]["passed"] and rows["retrieval.fusion.p95_ms"]["passed"]


def test_improvement_with_tolerated_regressions_is_promoted():
    cand = {"answers.hybrid.token_f1": 0.215, "retrieval.fusion.ndcg@10": 0.791,
            "retrieval.fusion.p95_ms": 29.0}  # -0.009 nDCG, +45% latency: inside tolerances
    decision = evaluate_gate(RULES, cand, CHAMPION)
    assert decision["promoted"]
    rows = {r["metric"]: r for r in decision["rules"]}
    assert rows["answers.hybrid.token_f1"]["change"] == pytest.approx(0.015)
    assert rows["retrieval.fusion.p95_ms"]["change"] == pytest.approx(-0.45)  # worse, relative


def test_regression_beyond_tolerance_blocks_promotion():
    slow = {**CHAMPION, "answers.hybrid.token_f1": 0.3, "retrieval.fusion.p95_ms": 31.0}
    assert not evaluate_gate(RULES, slow, CHAMPION)["promoted"]  # +55% latency
    worse = {**CHAMPION, "answers.hybrid.token_f1": 0.3, "retrieval.fusion.ndcg@10": 0.785}
    decision = evaluate_gate(RULES, worse, CHAMPION)
    assert not decision["promoted"]
    decision.update(candidate_version={"retriever": 4, "generator": 4},
                    champion_version={"retriever": 2, "generator": 3})
    decision["summary"] = summarize(decision)
    assert "retrieval.fusion.ndcg@10: regression 0.015 (allowed <= 0.01)" in decision["summary"]
    md = decision_markdown(decision)
    assert "| retrieval.fusion.ndcg@10 | 0.785 | 0.8 | -0.015 |" in md and "FAIL" in md
    assert "retriever v2, generator v3" in md


def test_unknown_gate_metric_is_a_config_error_listing_known_ones():
    with pytest.raises(ConfigError) as err:
        evaluate_gate((GateRule(metric="answers.hybrid.f1", floor=0.0),), CHAMPION, None)
    assert str(err.value) == ("promote.gate: metric 'answers.hybrid.f1' is not in the evaluation "
                              "metrics; known: answers.hybrid.token_f1, retrieval.fusion.ndcg@10, "
                              "retrieval.fusion.p95_ms")


def test_metric_the_champion_lacks_is_checked_on_its_floor():
    decision = evaluate_gate((F1,), CHAMPION, {"retrieval.fusion.ndcg@10": 0.8})
    [row] = decision["rules"]
    assert decision["promoted"] and not decision["first_release"]
    assert row["note"] == "champion has no value for this metric: floor only"
    assert (row["champion"], row["change"]) == (None, None)
    assert [c["check"] for c in row["checks"]] == ["floor"]  # min_improvement not applied
    low = evaluate_gate((F1,), {**CHAMPION, "answers.hybrid.token_f1": 0.01},
                        {"retrieval.fusion.ndcg@10": 0.8})
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
    both = decided((F1, NDCG), {"answers.hybrid.token_f1": 0.01, "retrieval.fusion.ndcg@10": 0.5},
                   CHAMPION, ((5, 6), (4, 4)))
    assert both["summary"] == (
        "release v5 is challenger; champion unchanged. Failed: answers.hybrid.token_f1: "
        "value 0.01 (floor >= 0.02); improvement -0.19 (need >= 0.01) | retrieval.fusion.ndcg@10: "
        "regression 0.3 (allowed <= 0.01)")


def test_decision_markdown_of_a_first_release():
    md = decided((F1, P95), {"answers.hybrid.token_f1": 0.5, "retrieval.fusion.p95_ms": 12.0},
                 None)
    text = decision_markdown(md)
    assert text.startswith("# Release gate: PROMOTED\n\nCandidate: retriever v1, generator v1  \n"
                           "Champion: none (first release: absolute floors only)\n")
    assert "| answers.hybrid.token_f1 | 0.5 | n/a | n/a | value 0.5 (floor >= 0.02) | pass |" in text
    assert ("| retrieval.fusion.p95_ms | 12 | n/a | n/a | no champion yet: nothing to compare | "
            "pass |") in text
    assert text.endswith("release v1 is the new champion (first release)\n")


# ---- the paired gate: candidate and champion on the same questions -------------------------------


def per_question(f1: list[float], ndcg: list[float], asked: str = "Q") -> dict:
    """Per-question results of one release: fusion nDCG@10 and token F1 on questions q0, q1, …"""
    qids = [f"q{i}" for i in range(len(f1))]
    return {"questions": [{"qid": q, "question": f"{asked} {q}?", "reference": "A.", "doc_ids": [],
                           "metadata": {}} for q in qids],
            "retrieval": {"fusion": {q: {"ndcg@10": v} for q, v in zip(qids, ndcg, strict=True)}},
            "answers": {"hybrid": {q: {"token_f1": v} for q, v in zip(qids, f1, strict=True)}}}


def means(pq: dict, p95: float = 20.0) -> dict:
    def mean(rows, m):
        return sum(r[m] for r in rows.values()) / len(rows)
    return {"answers.hybrid.token_f1": mean(pq["answers"]["hybrid"], "token_f1"),
            "retrieval.fusion.ndcg@10": mean(pq["retrieval"]["fusion"], "ndcg@10"),
            "retrieval.fusion.p95_ms": p95}


F1S = [0.1, 0.3, 0.0, 0.5, 0.2, 0.4, 0.25, 0.15] * 5  # 40 questions, mean 0.2375
NDCGS = [1.0, 0.5, 0.0, 0.63, 1.0, 0.0, 0.39, 1.0] * 5


def paired_decision(cand_pq, champ_pq, p95=(20.0, 20.0), min_shared=0.8):
    pairing, info = plan_pairing(cand_pq, champ_pq, min_shared, resamples=500, seed=0)
    decision = evaluate_gate(RULES, means(cand_pq, p95[0]), means(champ_pq, p95[1]), pairing)
    return {**decision, "pairing": info}


def test_a_retrain_with_identical_answers_is_not_promoted():
    same = per_question(F1S, NDCGS)
    decision = paired_decision(same, per_question(F1S, NDCGS))
    rows = {r["metric"]: r for r in decision["rules"]}
    assert decision["pairing"]["mode"] == "paired" and decision["pairing"]["questions"] == 40
    f1 = rows["answers.hybrid.token_f1"]
    assert f1["comparison"] == "paired" and f1["paired"] == 40
    assert f1["interval"] == {"lo": 0.0, "hi": 0.0, "method": "degenerate"}
    assert not f1["passed"] and not decision["promoted"]
    assert f1["checks"][1]["text"] == "improvement +0 at the lower bound (need >= 0.01)"
    assert rows["retrieval.fusion.ndcg@10"]["passed"]  # no regression either
    assert rows["retrieval.fusion.p95_ms"]["comparison"] == "point"  # latency: no per-question


def test_a_clearly_better_candidate_is_promoted_on_its_interval():
    better = per_question([v + 0.05 + 0.01 * (i % 3) for i, v in enumerate(F1S)], NDCGS)
    decision = paired_decision(better, per_question(F1S, NDCGS))
    f1 = decision["rules"][0]
    assert decision["promoted"]
    assert f1["change"] == pytest.approx(0.05 + 0.39 / 40)  # 13 questions +0.01, 13 +0.02
    assert 0.05 <= f1["interval"]["lo"] < f1["change"] < f1["interval"]["hi"] <= 0.07
    assert f1["interval"]["method"] == "BCa"


def test_a_mean_gain_inside_the_noise_is_not_promoted():
    # +0.02 on average, but one question in two gains 0.24 and the other loses 0.20
    noisy = per_question([v + (0.24 if i % 2 else -0.2) for i, v in enumerate(F1S)], NDCGS)
    decision = paired_decision(noisy, per_question(F1S, NDCGS))
    f1 = decision["rules"][0]
    assert f1["change"] == pytest.approx(0.02)  # the point gate would have promoted (>= 0.01)
    assert f1["interval"]["lo"] < 0.01 and not decision["promoted"]


def test_a_regression_beyond_the_tolerance_fails():
    worse = per_question([v + 0.1 for v in F1S], [max(0.0, v - 0.05) for v in NDCGS])
    decision = paired_decision(worse, per_question(F1S, NDCGS))
    ndcg = decision["rules"][1]
    assert decision["rules"][0]["passed"] and not ndcg["passed"] and not decision["promoted"]
    assert ndcg["change"] < -0.03 and ndcg["interval"]["lo"] < -0.01
    assert ndcg["checks"][1]["text"].startswith("regression 0.0")
    assert ndcg["checks"][1]["text"].endswith(" at the lower bound (allowed <= 0.01)")


def test_relative_paired_rule_scales_by_the_champion_mean():
    rule = GateRule(metric="answers.hybrid.token_f1", min_improvement=0.1, relative=True)
    row = check_paired(rule, 0.55, ([0.55, 0.65, 0.45], [0.5, 0.6, 0.4]), 200, 0)
    assert row["change"] == pytest.approx(0.1)  # +0.05 on a champion mean of 0.5
    assert row["interval"]["lo"] == pytest.approx(0.1) and row["passed"]
    assert check_paired(rule, 0.1, ([0.1, 0.2], [0.0, 0.0]), 200, 0) is None  # zero scale


def test_missing_champion_results_fall_back_to_point_estimates_and_say_so():
    cand = per_question([v + 0.02 for v in F1S], NDCGS)
    pairing, info = plan_pairing(cand, None, 0.8)
    assert pairing is None and info["mode"] == "point"
    assert info["note"] == ("champion has no per-question results (released before they were "
                            "logged); compared point estimates")
    decision = evaluate_gate(RULES, means(cand), means(per_question(F1S, NDCGS)), pairing)
    assert decision["promoted"]  # +0.02 on the means: the point comparison's verdict
    assert [r["comparison"] for r in decision["rules"]] == ["point"] * 3
    decision.update(candidate_version={"retriever": 2, "generator": 2}, pairing=info,
                    champion_version={"retriever": 1, "generator": 1})
    decision["summary"] = summarize(decision)
    md = decision_markdown(decision)
    assert ("Compared: champion has no per-question results (released before they were logged); "
            "compared point estimates\n") in md


def test_another_eval_set_pairs_on_shared_questions_or_falls_back():
    champ = per_question(F1S, NDCGS)
    mostly = per_question(F1S, NDCGS)
    mostly["questions"][0]["reference"] = "Another answer."  # 39 of 40 asked alike
    pairing, info = plan_pairing(mostly, champ, 0.8)
    assert info["mode"] == "paired" and info["questions"] == 39 and len(pairing.qids) == 39
    assert info["candidate_digest"] != info["champion_digest"]
    assert info["note"] == ("champion released on another eval set: paired on the 39 of 40 "
                            "current questions it was asked alike")
    assert len(pairing.values("answers.hybrid.token_f1")[0]) == 39
    other = per_question(F1S, NDCGS, asked="Other")  # same qids, other questions
    pairing, info = plan_pairing(other, champ, 0.8)
    assert pairing is None and info["mode"] == "point" and info["questions"] == 0
    assert info["note"] == ("champion released on another eval set (0 of 40 current questions "
                            "shared, below 80%); compared point estimates")
    assert plan_pairing(None, champ, 0.8)[1]["note"] == (
        "the candidate has no per-question results (evaluate ran before they existed); compared "
        "point estimates — rerun evaluate")


def test_decision_markdown_shows_the_paired_interval_and_count():
    better = per_question([v + 0.05 for v in F1S], NDCGS)
    decision = paired_decision(better, per_question(F1S, NDCGS))
    decision.update(candidate_version={"retriever": 2, "generator": 2},
                    champion_version={"retriever": 1, "generator": 1})
    decision["summary"] = summarize(decision)
    md = decision_markdown(decision)
    digest = decision["pairing"]["candidate_digest"]
    assert (f"Compared: paired on 40 of 40 eval questions (eval set {digest}); 95% BCa intervals "
            "of candidate − champion\n") in md
    assert "| answers.hybrid.token_f1 | 0.2875 | 0.2375 | +0.05 [+0.05, +0.05] (n=40) |" in md
    assert "| retrieval.fusion.p95_ms | 20 | 20 | +0 |" in md  # point: no interval
