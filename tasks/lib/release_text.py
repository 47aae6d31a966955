"""The description every registered version of a release carries: headline numbers and the gate.

MLflow's UI renders a model version's description as Markdown on the version page, so whoever
opens the registry sees what the release scored and why it is (or is not) the champion without
opening the run. promote sets it once the gate has decided; the text is built from evaluate's
reports (answers.json, retrieval.json) and the decision, names taken from the data.
"""

from __future__ import annotations

from typing import Any

ANSWER_METRIC = "token_f1"  # the headline answer metric, with its interval
RETRIEVAL_METRIC = "ndcg@10"  # the headline retrieval metric


def interval_text(ci: dict[str, float]) -> str:
    """0.194 [0.143, 0.250]: the mean and its 95% bootstrap interval."""
    return f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def failed_checks(decision: dict[str, Any]) -> list[str]:
    """Each failed check of the gate as "metric: what failed"."""
    return [f"{rule['metric']}: {check['text']}" for rule in decision["rules"]
            for check in rule["checks"] if not check["passed"]]


def gate_lines(decision: dict[str, Any]) -> list[str]:
    """The decision: the alias the release got and why (the summary, or each failed check)."""
    if decision["promoted"]:
        return [f"**Gate: promoted to `@champion`** — {decision['summary']}"]
    return ["**Gate: not promoted, `@challenger`** — the champion is unchanged.", "",
            "Failed checks:", *[f"- {text}" for text in failed_checks(decision)]]


def table_lines(title: str, metric: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    """A two-column Markdown table: name -> metric with its interval (rows lacking it skipped)."""
    scored = {name: row[metric] for name, row in rows.items() if metric in row}
    if not scored:
        return []
    return ["", f"| {title} | {metric} [95% interval] |", "|---|---:|",
            *[f"| {name} | {interval_text(ci)} |" for name, ci in scored.items()]]


def recommendation_line(answers: dict[str, Any]) -> list[str]:
    """evaluate's recommendation in one line (the verdict of an older answers.json), if any."""
    text = (answers.get("recommendation") or {}).get("summary") or answers.get("verdict")
    return ["", f"**Recommendation:** {text}"] if text else []


def release_description(decision: dict[str, Any], answers: dict[str, Any],
                        retrieval: dict[str, Any]) -> str:
    """The Markdown description of a release's registered versions."""
    versions = decision["candidate_version"]
    head = "Release " + ", ".join(f"{role} v{v}" for role, v in versions.items())
    return "\n".join([head, "", *gate_lines(decision), *recommendation_line(answers),
                      *table_lines("answer setup", ANSWER_METRIC, answers.get("summary") or {}),
                      *table_lines("retrieval method", RETRIEVAL_METRIC,
                                   retrieval.get("methods") or {})]) + "\n"


def evaluation_reports(cat: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """evaluate's answers.json and retrieval.json ({} for one that is not there)."""
    import json

    paths = (cat.evaluate_dir / "answers.json", cat.evaluate_dir / "retrieval.json")
    answers, retrieval = (json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
                          for p in paths)
    return answers, retrieval


def describe_release(reg: Any, decision: dict[str, Any], cat: Any) -> str:
    """Set the description on every registered version of the release; return it."""
    from tasks.lib.registry import client

    text = release_description(decision, *evaluation_reports(cat))
    names = {"retriever": reg.retriever_model, "generator": reg.generator_model,
             "rag": reg.rag_model}
    c = client(reg)
    for role, version in decision["candidate_version"].items():
        c.update_model_version(names[role], str(version), description=text)
    return text
