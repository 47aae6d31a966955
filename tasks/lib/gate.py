"""The release gate: candidate against champion, rule by rule, every number kept.

Promote pairs the two releases on the same eval questions (their per-question results) and
acts on the paired-difference interval: improvement needs its lower bound >= min_improvement,
a tolerated regression its lower bound >= -max_regression. Latencies (no per-question values),
and champions without comparable per-question results, get the point comparison (check_rule),
which reindex also uses for its retrieval rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tasks.lib.config import GateRule

TOLERANCE = 1e-12  # a bound exactly at the bar passes despite float noise


def judged(gate: tuple[GateRule, ...], prefix: str, default: str) -> str:
    """What the gate judges: the setup (prefix "answers") or retrieval method ("retrieval") of
    the first rule on such a metric, e.g. answers.hybrid.token_f1 -> hybrid."""
    for rule in gate:
        parts = rule.metric.split(".")
        if len(parts) >= 3 and parts[0] == prefix:
            return parts[1]
    return default


def _row(rule: GateRule, candidate: float, champion: float | None) -> dict[str, Any]:
    return {"metric": rule.metric, "candidate": candidate, "champion": champion, "change": None,
            "checks": [], "passed": True}


def _check(row: dict[str, Any], name: str, ok: bool, text: str) -> None:
    row["checks"].append({"check": name, "passed": ok, "text": text})
    row["passed"] = row["passed"] and ok


def _floor(row: dict[str, Any], rule: GateRule, candidate: float) -> None:
    if rule.floor is not None:
        ok = candidate >= rule.floor if rule.higher_is_better else candidate <= rule.floor
        _check(row, "floor", ok, f"value {candidate:.4g} (floor "
                                 f"{'>=' if rule.higher_is_better else '<='} {rule.floor:g})")


def _bars(row: dict[str, Any], rule: GateRule, change: float, where: str = "") -> None:
    """min_improvement and max_regression on `change` (positive: the candidate is better)."""
    unit = " (relative)" if rule.relative else ""
    if rule.min_improvement is not None:
        _check(row, "min_improvement", change >= rule.min_improvement - TOLERANCE,
               f"improvement {change:+.4g}{where} (need >= {rule.min_improvement:g}{unit})")
    if rule.max_regression is not None:
        regression = -change if change < 0 else 0.0
        _check(row, "max_regression", change >= -rule.max_regression - TOLERANCE,
               f"regression {regression:.4g}{where} (allowed <= {rule.max_regression:g}{unit})")


def check_rule(rule: GateRule, candidate: float, champion: float | None) -> dict[str, Any]:
    """One rule on point estimates, every number kept; `change` is positive when the candidate
    is better."""
    row = _row(rule, candidate, champion)
    _floor(row, rule, candidate)
    if champion is not None:
        # + 0.0: no "-0" in the decision when a lower-is-better metric did not change
        change = (1.0 if rule.higher_is_better else -1.0) * (candidate - champion) + 0.0
        if rule.relative:
            change = change / abs(champion) if champion else (0.0 if change == 0 else math.copysign(
                math.inf, change))
        row["change"] = change
        _bars(row, rule, change)
    return row


def check_paired(rule: GateRule, candidate: float, values: tuple[list[float], list[float]],
                 resamples: int, seed: int) -> dict[str, Any] | None:
    """One rule on per-question values (candidate's, champion's; same questions, same order):
    the bars act on the lower bound of the paired-difference interval (BCa): an improvement must
    show above the noise of the questions, and a regression beyond the tolerance must be ruled
    out. The floor stays on the candidate's mean. None when a relative rule has a zero champion
    mean to scale by (the point comparison then decides)."""
    from tasks.lib.metrics import paired_diff_ci

    cand, champ = values
    champion = sum(champ) / len(champ)
    scale = abs(champion) if rule.relative else 1.0
    if scale == 0:
        return None
    better, worse = (cand, champ) if rule.higher_is_better else (champ, cand)
    diff = paired_diff_ci(better, worse, resamples, seed)
    row = _row(rule, candidate, champion)
    _floor(row, rule, candidate)
    row.update(change=diff["mean"] / scale, paired=len(cand),
               interval={"lo": diff["lo"] / scale, "hi": diff["hi"] / scale,
                         "method": diff["method"]})
    _bars(row, rule, row["interval"]["lo"], " at the lower bound")
    return row


@dataclass(frozen=True)
class Pairing:
    """Both releases' per-question results (tasks/lib/per_question.py) and the questions both
    asked alike: what the gate pairs on."""

    candidate: dict[str, Any]
    champion: dict[str, Any]
    qids: frozenset[str]
    resamples: int = 1000  # bootstrap resamples of each paired interval
    seed: int = 0

    def values(self, metric: str) -> tuple[list[float], list[float]] | None:
        """(candidate's, champion's) values of a metric on the shared questions both scored."""
        from tasks.lib.per_question import metric_values

        cand, champ = metric_values(self.candidate, metric), metric_values(self.champion, metric)
        if cand is None or champ is None:
            return None
        shared = sorted(self.qids & cand.keys() & champ.keys())
        return ([cand[q] for q in shared], [champ[q] for q in shared]) if shared else None


def judge_rule(rule: GateRule, candidate: dict[str, float], champion: dict[str, float] | None,
               pairing: Pairing | None) -> dict[str, Any]:
    """One rule: paired where both releases have per-question values for its metric, else on
    point estimates (latencies, older champions)."""
    value = candidate[rule.metric]
    paired = None if champion is None or pairing is None else pairing.values(rule.metric)
    row = None if paired is None else check_paired(rule, value, paired, pairing.resamples,
                                                    pairing.seed)
    if row is not None:
        return {**row, "comparison": "paired"}
    old = None if champion is None else champion.get(rule.metric)
    row = {**check_rule(rule, value, old), "comparison": "point", "interval": None, "paired": 0}
    if champion is not None and old is None:
        row["note"] = "champion has no value for this metric: floor only"
    elif not row["checks"]:
        row["note"] = "no champion yet: nothing to compare"
    return row


def evaluate_gate(rules: tuple[GateRule, ...], candidate: dict[str, float],
                  champion: dict[str, float] | None,
                  pairing: Pairing | None = None) -> dict[str, Any]:
    """Every rule against the champion; promoted only if all pass.

    Without a champion only the floors apply. A metric the candidate lacks is a config error; one
    the champion lacks (an older release) is compared on its floor only and says so. With a
    pairing, rules on metrics with per-question values act on paired intervals.
    """
    from tasks.lib.errors import ConfigError

    for rule in rules:
        if rule.metric not in candidate:
            raise ConfigError(f"promote.gate: metric '{rule.metric}' is not in the evaluation "
                              f"metrics; known: {', '.join(sorted(candidate))}")
    rows = [judge_rule(rule, candidate, champion, pairing) for rule in rules]
    return {"promoted": all(r["passed"] for r in rows), "first_release": champion is None,
            "rules": rows}


def plan_pairing(candidate: dict[str, Any] | None, champion: dict[str, Any] | None,
                 min_shared: float, resamples: int = 1000,
                 seed: int = 0) -> tuple[Pairing | None, dict[str, Any]]:
    """Pair on the eval questions both releases asked alike (same qid, question and reference),
    or say why the gate falls back to point estimates: (pairing or None, what the decision
    records). A changed eval set still pairs when the shared questions are at least
    `min_shared` of the current ones."""
    from tasks.lib.per_question import eval_set_digest

    info: dict[str, Any] = {
        "mode": "point", "questions": 0,
        "eval_questions": None if candidate is None else len(candidate["questions"]),
        "candidate_digest": None if candidate is None else eval_set_digest(candidate),
        "champion_digest": None if champion is None else eval_set_digest(champion), "note": None}
    if candidate is None:
        info["note"] = ("the candidate has no per-question results (evaluate ran before they "
                        "existed); compared point estimates — rerun evaluate")
        return None, info
    if champion is None:
        info["note"] = ("champion has no per-question results (released before they were "
                        "logged); compared point estimates")
        return None, info
    asked = {q["qid"]: (q["question"], q["reference"]) for q in champion["questions"]}
    qids = frozenset(q["qid"] for q in candidate["questions"]
                     if asked.get(q["qid"]) == (q["question"], q["reference"]))
    total, same = len(candidate["questions"]), info["candidate_digest"] == info["champion_digest"]
    info["questions"] = len(qids)
    if not same and len(qids) < min_shared * total:
        info["note"] = (f"champion released on another eval set ({len(qids)} of {total} current "
                        f"questions shared, below {min_shared:.0%}); compared point estimates")
        return None, info
    info["mode"] = "paired"
    if not same:
        info["note"] = (f"champion released on another eval set: paired on the {len(qids)} of "
                        f"{total} current questions it was asked alike")
    return Pairing(candidate, champion, qids, resamples, seed), info


def _change_cell(row: dict[str, Any]) -> str:
    if row["change"] is None:
        return "n/a"
    if row.get("interval") is None:
        return f"{row['change']:+.4g}"
    ci = row["interval"]
    return f"{row['change']:+.4g} [{ci['lo']:+.4g}, {ci['hi']:+.4g}] (n={row['paired']})"


def _compared(pairing: dict[str, Any]) -> str:
    """The decision's line on what was compared: paired on how many questions, or why not."""
    if pairing["mode"] != "paired":  # the note says why and what to do
        return f"Compared: {pairing.get('note') or 'point estimates'}"
    note = f" ({pairing['note']})" if pairing.get("note") else ""
    return (f"Compared: paired on {pairing['questions']} of {pairing['eval_questions']} eval "
            f"questions (eval set {pairing['candidate_digest']}){note}; 95% BCa intervals of "
            "candidate − champion")


def decision_markdown(decision: dict[str, Any]) -> str:
    """The gate as a table a reviewer can read: every compared number and each check."""
    cand, champ = decision["candidate_version"], decision.get("champion_version")
    verdict = "PROMOTED" if decision["promoted"] else "NOT PROMOTED"
    lines = [f"# Release gate: {verdict}", "",
             f"Candidate: retriever v{cand['retriever']}, generator v{cand['generator']}  ",
             "Champion: " + (f"retriever v{champ['retriever']}, generator v{champ['generator']}"
                             if champ else "none (first release: absolute floors only)"), ""]
    if champ and decision.get("pairing"):
        lines += [_compared(decision["pairing"]), ""]
    lines += ["| metric | candidate | champion | change [95% interval] | checks | result |",
              "|---|---:|---:|---:|---|---|"]
    for r in decision["rules"]:
        champion = "n/a" if r["champion"] is None else f"{r['champion']:.4g}"
        checks = "; ".join(c["text"] for c in r["checks"]) or r.get("note", "")
        lines.append(f"| {r['metric']} | {r['candidate']:.4g} | {champion} | {_change_cell(r)} | "
                     f"{checks} | {'pass' if r['passed'] else 'FAIL'} |")
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
