"""The release gate: every compared number, improvement, tolerated regression, floors."""

import pytest

from tasks.lib.config import GateRule, load_config
from tasks.lib.errors import ConfigError
from tasks.promote import decision_markdown, evaluate_gate, summarize
from tests.conftest import REPO

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
    with pytest.raises(ConfigError, match="'answers.hybrid.f1' is not in the evaluation metrics; "
                                          "known: answers.hybrid.token_f1"):
        evaluate_gate((GateRule(metric="answers.hybrid.f1", floor=0.0),), CHAMPION, None)


def test_metric_the_champion_lacks_is_checked_on_its_floor():
    decision = evaluate_gate((F1,), CHAMPION, {"retrieval.hybrid.ndcg@10": 0.8})
    assert decision["promoted"] and "floor only" in decision["rules"][0]["note"]


def test_rule_without_any_check_is_refused_in_the_config():
    with pytest.raises(ConfigError, match="sets none of min_improvement"):
        load_config(REPO / "configs" / "smoke.yaml",
                    {"promote.gate": [{"metric": "answers.hybrid.token_f1"}]})


def test_only_not_found_errors_mean_no_release():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    from tasks.lib.registry import is_not_found

    assert is_not_found(MlflowException("no model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert is_not_found(MlflowException("Registered model alias champion not found.",
                                        error_code=INVALID_PARAMETER_VALUE))
    assert not is_not_found(MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE))
    assert not is_not_found(MlflowException("503", error_code=TEMPORARILY_UNAVAILABLE))
