"""monitor's pure parts: which requests count, rules, the cooldown, the cursor, the report."""

import pytest

from tasks.lib.config import MonitorConfig, MonitorRule
from tasks.lib.errors import ConfigError
from tasks.lib.monitor_report import build_report, render_html, summary_markdown
from tasks.monitor import (
    check_rules,
    decide,
    flat_metrics,
    in_window,
    next_state,
    release_requests,
    start_retrain,
)

R1, R2 = {"retriever_version": 1}, {"retriever_version": 2}


def metrics(questions=30, enough=True, p=0.5, low=None, down=None, until=100.0):
    return {"volume": {"requests": questions, "questions": questions, "distinct": questions,
                       "feedback": 0, "enough": enough, "min_questions": 20, "since": 1.0,
                       "until": until},
            "drift": {"p_value": p, "mmd2": 0.01, "status": "ok"} if enough else
            {"status": "not enough data"},
            "confidence": {"status": "ok", "p_value": 0.4, "low_share": low} if enough else
            {"status": "not enough data"},
            "feedback": {"down": down, "status": "ok" if down else "not enough data"},
            "examples": []}


def test_only_this_releases_questions_count():
    records = [{"kind": "ask", "release": R1, "question": "a", "ts": 1, "request_id": "1"},
               {"kind": "search", "release": R1, "question": "b", "ts": 5, "request_id": "2"},
               {"kind": "search", "release": R2, "question": "c", "ts": 6, "request_id": "3"},
               {"kind": "feedback", "rates": "1", "rating": 1, "ts": 7},
               {"kind": "ask", "release": R1, "question": "  ", "ts": 8, "request_id": "4"}]
    mine = release_requests(records, 1)
    assert [r["request_id"] for r in mine] == ["1", "2"]
    assert [r["request_id"] for r in in_window(mine, 1.0)] == ["2"]


def test_rules_fire_only_on_data():
    rules = MonitorConfig().rules
    checks = check_rules(flat_metrics(metrics(p=0.001)), rules)
    assert [(c["metric"], c["status"]) for c in checks] == [
        ("drift.p_value", "fired"), ("confidence.low_share_low", "not enough data"),
        ("feedback.down_rate_low", "not enough data")]
    quiet = check_rules(flat_metrics(metrics(enough=False)), rules)
    assert not any(c["fired"] for c in quiet)
    assert decide(quiet, {}, 0.0, 24)["reason"] == "not enough data for any rule"
    down = {"rate": 0.8, "low": 0.6, "high": 0.9, "count": 16, "n": 20}
    fired = check_rules(flat_metrics(metrics(down=down)), rules)
    assert [c["metric"] for c in fired if c["fired"]] == ["feedback.down_rate_low"]
    with pytest.raises(ConfigError, match="unknown metric drift.score"):
        check_rules(flat_metrics(metrics()), (MonitorRule(metric="drift.score", above=1),))


def test_a_rule_needs_one_bound():
    with pytest.raises(ValueError, match="exactly one of below, above"):
        MonitorRule(metric="drift.p_value")
    with pytest.raises(ValueError, match="exactly one of below, above"):
        MonitorRule(metric="drift.p_value", below=0.1, above=0.5)


def test_cooldown_holds_then_lets_go():
    checks = check_rules(flat_metrics(metrics(p=0.001)), MonitorConfig().rules)
    assert decide(checks, {}, 1000.0, 24)["action"] == "trigger"
    state = {"last_trigger": {"ts": 1000.0}}
    held = decide(checks, state, 1000.0 + 3600, 24)
    assert held["action"] == "cooldown" and "1.0 h ago, cooldown 24 h (23.0 h left)" in held["reason"]
    assert decide(checks, state, 1000.0 + 25 * 3600, 24)["action"] == "trigger"
    calm = check_rules(flat_metrics(metrics(p=0.5)), MonitorConfig().rules)
    assert decide(calm, state, 1000.0, 24) == {"action": "none", "reason": "no rule fired", "fired": []}


def test_cursor_moves_only_past_judged_windows():
    state = {"releases": {"1": {"cursor": 10.0}}, "last_trigger": None, "runs": 4}
    none = {"action": "none", "reason": "no rule fired"}
    small = next_state(state, 1, metrics(questions=3, enough=False, until=50.0), none, 60.0)
    assert small["releases"]["1"]["cursor"] == 10.0 and small["runs"] == 5  # they keep accumulating
    judged = next_state(state, 1, metrics(until=50.0), none, 60.0)
    assert judged["releases"]["1"]["cursor"] == 50.0 and judged["last_trigger"] is None
    fired = next_state(state, 1, metrics(until=50.0), {"action": "triggered", "reason": "x"}, 60.0)
    assert fired["last_trigger"]["ts"] == 60.0 and fired["last_trigger"]["release"] == 1
    would = next_state(state, 1, metrics(until=50.0), {"action": "would_trigger", "reason": "x"}, 60.0)
    assert would["last_trigger"] is None  # nothing was started: no cooldown
    assert state["runs"] == 4  # not mutated


@pytest.mark.slow  # a Prefect API: the session's test server, then the temporary local one
def test_a_trigger_without_the_deployment_says_what_it_would_start(prefect_harness):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    section = MonitorConfig(deployment="tunedex-pipeline/not-registered-here")
    fire = {"action": "trigger", "reason": "drift.p_value = 0.001 < 0.01"}
    failed = start_retrain(section, fire)  # a server without that deployment
    assert failed["action"] == "trigger_failed"
    assert "could not start deployment tunedex-pipeline/not-registered-here" in failed["detail"]
    assert "tunedex schedule" in failed["detail"]
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server at all
        out = start_retrain(section, fire)
    assert out["action"] == "would_trigger"
    assert "has deployment tunedex-pipeline/not-registered-here" in out["detail"]
    assert "would have been started" in out["detail"]
    assert start_retrain(section, {"action": "none", "reason": "no rule fired"})["action"] == "none"


def test_report_page_escapes_questions_and_states_the_decision():
    m = metrics(p=0.001)
    m["examples"] = [{"question": "<script>alert(1)</script>", "witness": 0.2, "top1": 0.3,
                      "top_doc": "pay-01"}]
    decision = {"action": "would_trigger", "reason": "drift.p_value = 0.001 < 0.01",
                "detail": "no Prefect server", "checks": check_rules(flat_metrics(m), MonitorConfig().rules)}
    report = build_report(1, {"source": "promote run abc"}, m, decision,
                          {"added": 2, "pending": 2, "review_path": "reports/monitor/review.jsonl"}, 1e9)
    page = render_html(report, [])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "a retrain would have been started" in page and "drift.p_value = 0.001 &lt; 0.01" in page
    assert "2 new candidate train questions" in page
    md = summary_markdown(report)
    assert "would have been started" in md and "- drift: p = 0.001" in md


def test_history_chart_marks_runs_below_the_line():
    from tasks.lib.monitor_report import drift_chart

    assert drift_chart([{"drift.p_value": 0.5}]) == ""  # one point is not a series
    svg = drift_chart([{"drift.p_value": 0.5}, {"drift.p_value": None}, {"drift.p_value": 0.002}])
    assert svg.startswith("<svg") and svg.count("<circle") == 2
    assert svg.count('fill="#e65100"><title>p = 0.002') == 1 and "p = 0.01" in svg
