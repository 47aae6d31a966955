"""reports/evaluate/report.html: one self-contained page a person can act on. The recommendation
on top (what to ship, the evidence, each option's cost, what would change it), the answer and
retrieval tables with intervals, the plots (inline SVG), metrics per slice, and every question.

Pure: render_report takes the evaluate results (answers.json's content, with its
"recommendation"; retrieval.json's; per_question.json's) and returns the HTML. Inline CSS, SVG
and script only: it opens from disk, offline, and can be mailed as one file.
"""

from __future__ import annotations

from html import escape
from typing import Any

from tasks.lib.recommend import OPTIONS, fmt_diff, name
from tasks.lib.report_assets import CSS, JS
from tasks.lib.report_questions import drilldown_html, fmt_ci, num, slice_metrics, slices_html
from tasks.lib.retrieval_eval import source_note

TITLE = "tunedex — fine-tune, embed or both?"
ANSWER_METRICS = ("token_f1", "rouge_l", "exact_match", "semantic_sim", "groundedness", "accuracy")
RETRIEVAL_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


def section(title: str, anchor: str, body: str) -> str:
    return f"<section id={anchor}><h2>{escape(title)}</h2>{body}</section>"


# ---- the recommendation ---------------------------------------------------------------------------


def banner_html(rec: dict[str, Any]) -> str:
    """The decision, its evidence and reasons, what would change it, and the options' costs."""
    if not rec.get("setup"):
        text = rec.get("summary", "No recommendation: the answer setups were not scored.")
        return f"<section class='banner tied' id=recommendation><p>{escape(text)}</p></section>"
    setup, metric, ev = rec["setup"], rec["metric"], rec.get("evidence")
    score = rec.get("score")
    evidence = f"{escape(metric)} {num(rec['means'][setup], digits=3)}"
    if score:
        evidence += f" [{score['lo']:.3f}, {score['hi']:.3f}]"
    if ev:
        evidence += (f" · {escape(setup)} − {escape(ev['vs'])} {escape(fmt_diff(ev))} "
                     f"(paired 95% interval, {ev['n']} questions)")
    why = "".join(f"<li>{escape(s)}</li>" for s in rec.get("why", []))
    change = rec.get("what_would_change", {}).get("text", "")
    return (f"<section class='banner {escape(rec['confidence'])}' id=recommendation>"
            f"<div class=ship>Ship <strong>{escape(OPTIONS[setup])}</strong> "
            f"<span class=setup>({escape(setup)})</span> <span class=badge>{escape(rec['confidence'])}"
            f"</span></div><p class=evidence>{evidence}</p><ul class=why>{why}</ul>"
            f"<p><b>What would change it:</b> {escape(change)}</p>{options_table(rec)}</section>")


def provenance_html(answers: dict[str, Any]) -> str:
    """Where the questions came from; a synthetic eval set is a warning above everything else."""
    from tasks.lib.provenance import SYNTHETIC_EVAL_WARNING, provenance_line

    prov = answers.get("provenance")
    if not prov:
        return ""
    warning = (f"<section class='banner tied' id=synthetic-eval><p><strong>"
               f"{escape(SYNTHETIC_EVAL_WARNING)}</strong></p></section>"
               if prov.get("eval_synthetic") else "")
    return warning + f"<p class=sub id=provenance>{escape(provenance_line(prov))}</p>"


def status_of(rec: dict[str, Any], setup: str) -> str:
    if setup == rec["setup"]:
        return "ship"
    beaten = rec["beaten_by"].get(setup) or []
    return f"beaten by {', '.join(beaten)}" if beaten else "tied with the top"


def options_table(rec: dict[str, Any]) -> str:
    """Each option, cheapest first: its mean, what it costs to build and to answer, its status."""
    costs = rec["costs"]
    # p95 per answer exists only where evaluate timed each answer (batched generation may not)
    p95 = any(c.get("p95_ms") is not None for c in costs.values())
    head = ("<tr><th>option</th><th>setup</th><th class=n>mean " + escape(rec["metric"]) + "</th>"
            "<th class=n>build s</th><th class=n>on disk MB</th><th class=n>ms / answer</th>"
            + ("<th class=n>p95 ms</th>" if p95 else "")
            + "<th class=n>retrieval p95 ms</th><th>status</th></tr>")
    rows = ""
    for setup in rec["cost_order"]:
        c = costs.get(setup, {})
        pick = " class=pick" if setup == rec["setup"] else ""
        rows += (f"<tr{pick}><td>{escape(OPTIONS[setup])}</td><td>{escape(setup)}</td>"
                 f"<td class=n>{num(rec['means'][setup], digits=3)}</td>"
                 f"<td class=n>{num(c.get('build_seconds'), digits=0)}</td>"
                 f"<td class=n>{num(None if c.get('bytes') is None else c['bytes'] / 1e6, digits=1)}</td>"
                 f"<td class=n>{num(c.get('latency_ms'), digits=0)}</td>"
                 + (f"<td class=n>{num(c.get('p95_ms'), digits=0)}</td>" if p95 else "")
                 + f"<td class=n>{num(c.get('retrieval_p95_ms'), digits=1)}</td>"
                 f"<td>{escape(status_of(rec, setup))}</td></tr>")
    return (f"<table class=options><thead>{head}</thead><tbody>{rows}</tbody></table>"
            "<p class=note>Options cheapest to build first (measured train + index seconds, then "
            "bytes). ms / answer: batched generation time shared by its answers.</p>")


# ---- tables -------------------------------------------------------------------------------------


def answers_table(answers: dict[str, Any]) -> str:
    """Setup × metric, mean [95% interval]; a metric's separated winner in bold."""
    summary, speed, winners = answers["summary"], answers.get("speed", {}), answers.get("winners", {})
    metrics = [m for m in ANSWER_METRICS if any(m in row for row in summary.values())]
    head = "".join(f"<th class=n>{escape(m)}</th>" for m in metrics)
    rows = ""
    for setup, row in summary.items():
        cells = "".join(f"<td class='n{' win' if winners.get(m) == setup else ''}'>"
                        f"{fmt_ci(row.get(m))}</td>" for m in metrics)
        fast = speed.get(setup, {})
        rows += (f"<tr><td>{escape(name(setup)) if setup in OPTIONS else escape(setup)}</td>{cells}"
                 f"<td class=n>{num(fast.get('latency_ms'), digits=0)}</td>"
                 f"<td class=n>{num(fast.get('tokens_per_s'), digits=1)}</td></tr>")
    return (f"<p class=note>{answers['questions']} eval questions; mean [bootstrap 95% interval]; "
            "bold: the winner of a metric (paired interval above 0 against every other setup)."
            f"</p><table class=answers><thead><tr><th>setup</th>{head}<th class=n>ms / answer</th>"
            f"<th class=n>tokens/s</th></tr></thead><tbody>{rows}</tbody></table>")


def pairwise_table(rec: dict[str, Any]) -> str:
    """Row − column paired differences of the headline metric; separated cells coloured."""
    diffs = rec.get("pairwise") or {}
    if not diffs:
        return ""
    setups = list(diffs)
    head = "".join(f"<th class=n>{escape(s)}</th>" for s in setups)
    rows = ""
    for a in setups:
        cells = ""
        for b in setups:
            d = diffs[a].get(b)
            kind = "" if d is None else " pos" if d["lo"] > 0 else " neg" if d["hi"] < 0 else ""
            cells += f"<td class='n{kind}'>{'–' if d is None else escape(fmt_diff(d))}</td>"
        rows += f"<tr><th>{escape(a)}</th>{cells}</tr>"
    return (f"<p class=note>Paired differences in {escape(rec['metric'])}, row − column, 95% "
            "interval over the same questions; green: the row is better, red: worse.</p>"
            f"<table class=pairwise><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>")


def retrieval_tables(retrieval: dict[str, Any]) -> str:
    """Method × metric with latency, then the paired comparisons."""
    head = "".join(f"<th class=n>{escape(m)}</th>" for m in RETRIEVAL_METRICS)
    rows = ""
    for method, row in retrieval.get("methods", {}).items():
        lat = row.get("latency", {})
        rows += (f"<tr><td>{escape(method)}</td>"
                 + "".join(f"<td class=n>{fmt_ci(row.get(m))}</td>" for m in RETRIEVAL_METRICS)
                 + f"<td class=n>{num(lat.get('p50_ms'), digits=1)}</td>"
                 f"<td class=n>{num(lat.get('p95_ms'), digits=1)}</td></tr>")
    words = {1: "better", -1: "worse", 0: "no separable difference"}
    comps = ""
    for key, diff in retrieval.get("comparisons", {}).items():
        kind = {1: "pos", -1: "neg"}.get(diff.get("verdict"), "")
        comps += (f"<tr><td>{escape(key.replace('_vs_', ' − '))}</td>"
                  f"<td class='n {kind}'>{escape(fmt_diff(diff['ndcg@10']))}</td>"
                  f"<td class=n>{escape(fmt_diff(diff['recall@10']))}</td>"
                  f"<td>{words.get(diff.get('verdict'), '')}</td></tr>")
    sources = source_note(retrieval.get("methods", {}))
    note = (f"{retrieval.get('questions', '?')} eval questions, document level; mean [95% "
            "interval]." + (f" {escape(sources)}" if sources else ""))
    return (f"<p class=note>{note}</p><table class=retrieval><thead><tr><th>method</th>"
            f"{head}<th class=n>p50 ms</th><th class=n>p95 ms</th></tr></thead><tbody>{rows}"
            "</tbody></table><table class=comparisons><thead><tr><th>paired difference</th>"
            "<th class=n>nDCG@10</th><th class=n>Recall@10</th><th>verdict</th></tr></thead>"
            f"<tbody>{comps}</tbody></table>")


# ---- plots and the page ---------------------------------------------------------------------------


def plots_html(answers: dict[str, Any], rec: dict[str, Any], losses: dict[str, Any] | None,
               spaces: dict[str, Any] | None) -> str:
    """Every plot the inputs allow, each an inline SVG with a caption."""
    from tasks.lib.report_plots import plot_cost_quality, plot_embedding_map, plot_losses, plot_quality

    figures = [(plot_quality(answers["summary"]), "Answer quality per setup: mean and 95% interval.")]
    if rec.get("costs"):
        figures.append((plot_cost_quality(answers["summary"], rec["costs"], rec["metric"]),
                        "Cost against quality: build seconds (left) and time per answer (right)."))
    if losses and any(losses.values()):
        figures.append((plot_losses(losses), "Training loss per step (from the MLflow stage runs)."))
    if spaces:
        figures.append((plot_embedding_map(spaces), "Chunks and eval questions, 2-D PCA of each "
                        "retriever's vectors; each question is joined to its nearest relevant chunk."))
    return "".join(f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"
                   for svg, caption in figures)


def render_report(answers: dict[str, Any], retrieval: dict[str, Any],
                  per_question: dict[str, Any] | None = None, *, losses: dict[str, Any] | None = None,
                  spaces: dict[str, Any] | None = None, resamples: int = 1000, seed: int = 0,
                  title: str = TITLE) -> str:
    """The whole page as one HTML string."""
    rec = answers.get("recommendation") or {}
    metric = rec.get("metric", "token_f1")
    parts = [provenance_html(answers), banner_html(rec),
             section("Answers", "answers", answers_table(answers) + pairwise_table(rec)),
             section("Retrieval", "retrieval", retrieval_tables(retrieval)),
             section("Plots", "plots", plots_html(answers, rec, losses, spaces))]
    slices = slice_metrics(per_question, metric, resamples, seed) if per_question else None
    if slices:
        parts.append(section(f"By {slices['key']}", "slices", slices_html(slices)))
    if per_question:
        parts.append(section("Questions", "questions-section", drilldown_html(per_question, metric)))
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<link rel=icon href='data:,'><title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body><h1>{escape(title)}</h1><p class=sub>{answers['questions']} eval questions "
            f"answered by {len(answers['summary'])} setups · headline metric {escape(metric)}</p>"
            + "".join(parts) + f"<script>{JS}</script></body></html>")
