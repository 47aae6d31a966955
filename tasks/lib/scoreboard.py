"""The answer scoreboard: aggregate per-setup answer metrics, name winners, render MD/HTML.

Pure functions (plots return PNG bytes); the evaluate stage (tasks/evaluate.py) writes the
files, and is the only stage that imports this module: editing it reruns evaluate alone.
"""

from __future__ import annotations

import base64
import html
import io
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
    """The setup whose paired advantage on `metric` over every other setup has an interval > 0."""
    scored = {s: [r.get(metric) for r in rows] for s, rows in per_setup.items()}
    scored = {s: v for s, v in scored.items() if v and all(x is not None for x in v)}
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda s: sum(scored[s]) / len(scored[s]))
    for other, values in scored.items():
        if other != best and paired_diff_ci(scored[best], values, resamples, seed)["lo"] <= 0:
            return None
    return best


def verdict(summary: dict[str, dict[str, Any]], winners: dict[str, str | None],
            costs: dict[str, dict[str, float]]) -> str:
    """One sentence answering "fine-tune, embed or both?" from the token-F1 winner."""
    best = winners.get("token_f1")
    if best is None:
        ranked = sorted(summary, key=lambda s: -summary[s].get("token_f1", {"mean": 0})["mean"])
        others = [f"{PLAIN_NAMES[w]} leads on {m.replace('_', ' ')}" for m, w in winners.items() if w]
        return (f"No setup separates from the others on token F1 (best mean: "
                f"{PLAIN_NAMES[ranked[0]]}, {summary[ranked[0]]['token_f1']['mean']:.3f}), so this "
                "run cannot say that fine-tuning or embeddings beat the baseline on answer overlap"
                + (f"; {'; '.join(others)} with separated intervals" if others else "")
                + ". More eval questions (evaluate.answer_questions) narrow the intervals.")
    ci = summary[best]["token_f1"]
    cost = costs.get(best, {})
    spent = ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in cost.items()) or "no training"
    return (f"On this data, {PLAIN_NAMES[best]} ({best}) answers best: token F1 {ci['mean']:.3f} "
            f"[{ci['lo']:.3f}, {ci['hi']:.3f}], ahead of every other setup with separated "
            f"intervals; it costs {spent}.")


def _fmt(ci: dict[str, float] | None) -> str:
    return "–" if ci is None else f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def scoreboard_markdown(report: dict[str, Any]) -> str:
    """The answer scoreboard as Markdown: verdict, metric table, speed, costs."""
    summary, speed = report["summary"], report["speed"]
    metrics = [m for m in HEADLINE if any(m in row for row in summary.values())]
    lines = [f"## Answers ({report['questions']} eval questions)", "", f"**{report['verdict']}**",
             "", "| setup | " + " | ".join(metrics) + " | latency ms/q | tokens/s |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for setup, row in summary.items():
        lines.append(f"| {setup} ({PLAIN_NAMES[setup]}) | "
                     + " | ".join(_fmt(row.get(m)) for m in metrics)
                     + f" | {speed[setup]['latency_ms']:.0f} | {speed[setup]['tokens_per_s']:.1f} |")
    lines += ["", METRIC_NOTE]
    lines += ["", "Winner per metric (only where the paired interval separates it from every "
              "other setup): " + ", ".join(f"{m}: {w or 'none'}" for m, w in
                                            report["winners"].items()), ""]
    if report.get("costs"):
        lines += ["| option | " + " | ".join(next(iter(report["costs"].values()))) + " |",
                  "|---|" + "---|" * len(next(iter(report["costs"].values())))]
        for option, cost in report["costs"].items():
            lines.append(f"| {option} | " + " | ".join(f"{v:,.0f}" for v in cost.values()) + " |")
    return "\n".join(lines) + "\n"


def plot_bars(report: dict[str, Any], metrics: tuple[str, ...] = ("token_f1", "rouge_l",
                                                                  "semantic_sim")) -> bytes:
    """Per-setup bars with 95% interval whiskers, one group per metric; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(summary)
    for i, (setup, row) in enumerate(summary.items()):
        xs = [j + i * width for j, m in enumerate(metrics) if m in row]
        cis = [row[m] for m in metrics if m in row]
        ax.bar(xs, [c["mean"] for c in cis], width, label=setup,
               yerr=[[c["mean"] - c["lo"] for c in cis], [c["hi"] - c["mean"] for c in cis]],
               capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=4)
    ax.set_title("Answer quality by setup (95% bootstrap intervals)")
    return _png(fig)


def plot_cost_quality(report: dict[str, Any]) -> bytes:
    """Token F1 against seconds per answer for each setup; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for setup, row in report["summary"].items():
        x, ci = report["speed"][setup]["latency_ms"], row["token_f1"]
        ax.errorbar([x], [ci["mean"]], yerr=[[ci["mean"] - ci["lo"]], [ci["hi"] - ci["mean"]]],
                    fmt="o", capsize=3, label=setup)
    ax.set_xlabel("latency per answer (ms)")
    ax.set_ylabel("token F1")
    ax.legend(fontsize=8)
    ax.set_title("Cost vs quality")
    return _png(fig)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def scoreboard_html(markdown_tables: str, plots: dict[str, bytes], title: str) -> str:
    """A self-contained HTML page: the Markdown report (pre-formatted) and inline PNG plots."""
    images = "".join(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(name)}'
                     "</figcaption></figure>" for name, png in plots.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
            "pre{white-space:pre-wrap;font-size:13px;background:#f6f6f6;padding:1em}"
            "img{max-width:100%}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{images}<pre>{html.escape(markdown_tables)}</pre>"
            "</body></html>")
