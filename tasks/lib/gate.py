"""The release gate: candidate metrics against the champion's, rule by rule, every number kept.

Used by promote (all rules) and reindex (the retrieval rules, without improvement required).
"""

from __future__ import annotations

import math
from typing import Any

from tasks.lib.config import GateRule


def judged(gate: tuple[GateRule, ...], prefix: str, default: str) -> str:
    """What the gate judges: the setup (prefix "answers") or retrieval method ("retrieval") of
    the first rule on such a metric, e.g. answers.hybrid.token_f1 -> hybrid."""
    for rule in gate:
        parts = rule.metric.split(".")
        if len(parts) >= 3 and parts[0] == prefix:
            return parts[1]
    return default


def check_rule(rule: GateRule, candidate: float, champion: float | None) -> dict[str, Any]:
    """One rule's verdict with every number it used; `change` is positive when the candidate is better."""
    sign = 1.0 if rule.higher_is_better else -1.0
    row: dict[str, Any] = {"metric": rule.metric, "candidate": candidate, "champion": champion,
                           "change": None, "checks": [], "passed": True}

    def check(name: str, ok: bool, text: str) -> None:
        row["checks"].append({"check": name, "passed": ok, "text": text})
        row["passed"] = row["passed"] and ok

    if rule.floor is not None:
        ok = candidate >= rule.floor if rule.higher_is_better else candidate <= rule.floor
        check("floor", ok, f"value {candidate:.4g} (floor {'>=' if rule.higher_is_better else '<='} "
                           f"{rule.floor:g})")
    if champion is not None:
        change = sign * (candidate - champion)
        if rule.relative:
            change = change / abs(champion) if champion else (0.0 if change == 0 else math.copysign(
                math.inf, change))
        row["change"] = change
        unit = " (relative)" if rule.relative else ""
        if rule.min_improvement is not None:
            check("min_improvement", change >= rule.min_improvement - 1e-12,
                  f"improvement {change:+.4g} (need >= {rule.min_improvement:g}{unit})")
        if rule.max_regression is not None:
            regression = -change if change < 0 else 0.0
            check("max_regression", change >= -rule.max_regression - 1e-12,
                  f"regression {regression:.4g} (allowed <= {rule.max_regression:g}{unit})")
    return row


def evaluate_gate(rules: tuple[GateRule, ...], candidate: dict[str, float],
                  champion: dict[str, float] | None) -> dict[str, Any]:
    """Every rule against the candidate's and champion's metrics; promoted only if all pass.

    Without a champion only the floors apply. A metric the candidate lacks is a config error; one
    the champion lacks (an older release) is compared on its floor only and says so.
    """
    from tasks.lib.errors import ConfigError

    rows = []
    for rule in rules:
        if rule.metric not in candidate:
            raise ConfigError(f"promote.gate: metric '{rule.metric}' is not in the evaluation "
                              f"metrics; known: {', '.join(sorted(candidate))}")
        old = None if champion is None else champion.get(rule.metric)
        row = check_rule(rule, candidate[rule.metric], old)
        if champion is not None and old is None:
            row["note"] = "champion has no value for this metric: floor only"
        elif not row["checks"]:
            row["note"] = "no champion yet: nothing to compare"
        rows.append(row)
    return {"promoted": all(r["passed"] for r in rows), "first_release": champion is None,
            "rules": rows}


def decision_markdown(decision: dict[str, Any]) -> str:
    """The gate as a table a reviewer can read: every compared number and each check."""
    cand, champ = decision["candidate_version"], decision.get("champion_version")
    verdict = "PROMOTED" if decision["promoted"] else "NOT PROMOTED"
    lines = [f"# Release gate: {verdict}", "",
             f"Candidate: retriever v{cand['retriever']}, generator v{cand['generator']}  ",
             "Champion: " + (f"retriever v{champ['retriever']}, generator v{champ['generator']}"
                             if champ else "none (first release: absolute floors only)"), "",
             "| metric | candidate | champion | change | checks | result |",
             "|---|---:|---:|---:|---|---|"]
    for r in decision["rules"]:
        champion = "n/a" if r["champion"] is None else f"{r['champion']:.4g}"
        change = "n/a" if r["change"] is None else f"{r['change']:+.4g}"
        checks = "; ".join(c["text"] for c in r["checks"]) or r.get("note", "")
        lines.append(f"| {r['metric']} | {r['candidate']:.4g} | {champion} | {change} | {checks} | "
                     f"{'pass' if r['passed'] else 'FAIL'} |")
    lines += ["", decision["summary"], ""]
    return "\n".join(lines)


def summarize(decision: dict[str, Any]) -> str:
    """The gate's outcome in one sentence (which release is champion, what failed)."""
    cand = decision["candidate_version"]["retriever"]
    if decision["promoted"]:
        return f"release v{cand} is the new champion" + (
            " (first release)" if decision["first_release"] else "")
    failed = [f"{r['metric']}: " + "; ".join(c["text"] for c in r["checks"] if not c["passed"])
              for r in decision["rules"] if not r["passed"]]
    return f"release v{cand} is challenger; champion unchanged. Failed: " + " | ".join(failed)
