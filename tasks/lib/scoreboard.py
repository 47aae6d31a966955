"""The answer scoreboard: aggregate per-setup answer metrics, name winners, render Markdown.

Pure functions; the evaluate stage (tasks/evaluate.py) writes the files, and is the only stage
that imports this module: editing it reruns evaluate alone. The HTML page is tasks/lib/report.py,
the recommendation tasks/lib/recommend.py.
"""

from __future__ import annotations

from typing import Any

from tasks.lib.metrics import bootstrap_ci, paired_diff_ci

# setup -> (uses the LoRA generator, uses retrieved context); DESIGN.md's four setups
SETUPS = {"base": (False, False), "finetuned": (True, False), "rag": (False, True),
          "hybrid": (True, True)}
PLAIN_NAMES = {"base": "baseline", "finetuned": "fine-tuning", "rag": "embeddings",
               "hybrid": "fine-tuning + embeddings"}
HEADLINE = ("token_f1", "rouge_l", "exact_match", "semantic_sim", "groundedness", "accuracy")
# What the answer metrics are, under the table: two texts named "F1" are not always comparable.
METRIC_NOTE = ("token_f1 and exact_match: token F1 and exact match (SQuAD-normalised: lowercase, "
               "no punctuation, no articles); rouge_l: ROUGE-L F-measure (rouge-score, no "
               "stemming); intervals: 95% BCa bootstrap over questions.")
# Shown when any eval question has choices (qa.jsonl); on a mixed set it covers those questions only.
ACCURACY_NOTE = ("accuracy: on short-answer questions only (qa.jsonl `choices`): 1 when the answer "
                 "starts with the same choice as the reference (case and punctuation ignored), else 0.")


def summarize_setups(per_setup: dict[str, list[dict[str, Any]]], resamples: int,
                     seed: int) -> dict[str, dict[str, Any]]:
    """Mean + 95% interval per metric per setup (metrics that are None for a setup skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for setup, rows in per_setup.items():
        out[setup] = {}
        for metric in HEADLINE:
            values = [r[metric] for r in rows if r.get(metric) is not None]
            if values:
                out[setup][metric] = bootstrap_ci(values, resamples, seed)
    return out


def winner(per_setup: dict[str, list[dict[str, Any]]], metric: str, resamples: int,
           seed: int) -> str | None:
    """The setup whose paired advantage on `metric` over every other setup has an interval > 0,
    on the questions every setup scored (accuracy: the short-answer ones); setups with no value
    on any question (groundedness without context) are left out."""
    scored = {s: [r.get(metric) for r in rows] for s, rows in per_setup.items()}
    scored = {s: v for s, v in scored.items() if any(x is not None for x in v)}
    keep = [i for i, row in enumerate(zip(*scored.values(), strict=True)) if None not in row]
    scored = {s: [v[i] for i in keep] for s, v in scored.items()}
    if len(scored) < 2 or not keep:
        return None
    best = max(scored, key=lambda s: sum(scored[s]) / len(scored[s]))
    for other, values in scored.items():
        if other != best and paired_diff_ci(scored[best], values, resamples, seed)["lo"] <= 0:
            return None
    return best


def provenance_lines(report: dict[str, Any]) -> list[str]:
    """The train questions' source and, for a synthetic eval set, the warning (before the verdict)."""
    from tasks.lib.provenance import SYNTHETIC_EVAL_WARNING, provenance_line

    prov = report.get("provenance")
    if not prov:
        return []
    warning = [f"> **Warning: {SYNTHETIC_EVAL_WARNING}**", ""] if prov.get("eval_synthetic") else []
    return [*warning, provenance_line(prov), ""]


def _fmt(ci: dict[str, float] | None) -> str:
    return "–" if ci is None else f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def scoreboard_markdown(report: dict[str, Any]) -> str:
    """The answer scoreboard as Markdown: the recommendation's line, metric table, speed, costs."""
    summary, speed = report["summary"], report["speed"]
    metrics = [m for m in HEADLINE if any(m in row for row in summary.values())]
    rec = report.get("recommendation") or {}
    reasons = [f"- {reason}" for reason in rec.get("why", [])]
    if rec.get("what_would_change"):
        reasons.append(f"- What would change it: {rec['what_would_change']['text']}")
    lines = [f"## Answers ({report['questions']} eval questions)", "", *provenance_lines(report),
             f"**{report['verdict']}**", "", *reasons, *([""] if reasons else []),
             "| setup | " + " | ".join(metrics) + " | latency ms/q | tokens/s |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for setup, row in summary.items():
        lines.append(f"| {setup} ({PLAIN_NAMES[setup]}) | "
                     + " | ".join(_fmt(row.get(m)) for m in metrics)
                     + f" | {speed[setup]['latency_ms']:.0f} | {speed[setup]['tokens_per_s']:.1f} |")
    lines += ["", METRIC_NOTE, *([ACCURACY_NOTE] if "accuracy" in metrics else [])]
    lines += ["", "Winner per metric (only where the paired interval separates it from every "
              "other setup): " + ", ".join(f"{m}: {w or 'none'}" for m, w in
                                            report["winners"].items()), ""]
    if report.get("costs"):
        lines += ["| option | " + " | ".join(next(iter(report["costs"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(report["costs"].values())))]
        for option, cost in report["costs"].items():
            lines.append(f"| {option} | " + " | ".join(f"{v:,.0f}" for v in cost.values()) + " |")
    return "\n".join(lines) + "\n"
