"""The report's per-question half: the drill-down table (question, reference, each setup's answer
and score, what each retrieval method returned) and metrics per slice of the eval set.

Pure functions of per_question.json's shape:
    {"questions": [{"qid", "question", "reference", "doc_ids", "metadata"}],
     "retrieval": {method: {qid: {"ndcg@10", ..., "retrieved": [{"doc_id", "chunk_id", "score"}]}}},
     "answers": {setup: {qid: {"answer", "token_f1", ..., "cited": [doc_id, ...]}}}}
Rows are rendered on the server (escaped), so the page reads without script; the inline script
only sorts and filters them.
"""

from __future__ import annotations

from html import escape
from typing import Any

SLICE_KEYS = ("topic", "category")  # metadata keys that name a slice of the eval set
SHOWN_CHARS = 280  # longer text collapses behind a <details>, so 1000 rows stay scannable


def num(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def clip(text: Any) -> str:
    """Escaped text; past SHOWN_CHARS the rest opens on click."""
    text = "" if text is None else str(text)
    if len(text) <= SHOWN_CHARS:
        return escape(text)
    return (f"<details class=more><summary>{escape(text[:SHOWN_CHARS])}…</summary>"
            f"{escape(text[SHOWN_CHARS:])}</details>")


# ---- pure: rows and slices ------------------------------------------------------------------------


def slice_of(question: dict[str, Any]) -> tuple[str, str] | None:
    """(metadata key, value) of the question's slice, if its metadata names one."""
    meta = question.get("metadata") or {}
    return next(((k, str(meta[k])) for k in SLICE_KEYS if meta.get(k) not in (None, "")), None)


def delta(scores: dict[str, float | None], a: str, b: str) -> float | None:
    return None if scores.get(a) is None or scores.get(b) is None else scores[a] - scores[b]


def question_rows(per_question: dict[str, Any], metric: str = "token_f1") -> list[dict[str, Any]]:
    """One row per question: each setup's score, their spread (disagreement) and what fine-tuning
    (finetuned − base) and embedding (rag − base) changed; the widest spread first."""
    answers = per_question.get("answers", {})
    rows = []
    for q in per_question["questions"]:
        scores = {s: by_qid[q["qid"]].get(metric) for s, by_qid in answers.items() if q["qid"] in by_qid}
        present = [v for v in scores.values() if v is not None]
        rows.append({"question": q, "slice": slice_of(q), "scores": scores,
                     "disagreement": max(present) - min(present) if len(present) > 1 else None,
                     "d_finetune": delta(scores, "finetuned", "base"),
                     "d_embed": delta(scores, "rag", "base")})
    return sorted(rows, key=lambda r: -1.0 if r["disagreement"] is None else -r["disagreement"])


def slice_metrics(per_question: dict[str, Any], metric: str, resamples: int,
                  seed: int) -> dict[str, Any] | None:
    """Mean and interval of `metric` per setup within each slice; None when no question has one."""
    from tasks.lib.metrics import bootstrap_ci

    groups: dict[str, list[str]] = {}
    key = None
    for q in per_question["questions"]:
        found = slice_of(q)
        if found:
            key = key or found[0]
            groups.setdefault(found[1], []).append(q["qid"])
    if not groups:
        return None
    out = {}
    for name, qids in sorted(groups.items()):
        out[name] = {"n": len(qids)}
        for setup, by_qid in per_question.get("answers", {}).items():
            values = [by_qid[q][metric] for q in qids if by_qid.get(q, {}).get(metric) is not None]
            out[name][setup] = bootstrap_ci(values, resamples, seed) if values else None
    return {"key": key, "metric": metric, "slices": out}


# ---- HTML ---------------------------------------------------------------------------------------


def slices_html(slices: dict[str, Any]) -> str:
    """Per-slice table: slice, n, each setup's mean [lo, hi]."""
    setups = [s for s in next(iter(slices["slices"].values())) if s != "n"]
    head = "".join(f"<th class=n>{escape(s)}</th>" for s in setups)
    body = ""
    for name, row in slices["slices"].items():
        cells = "".join(f"<td class=n>{fmt_ci(row[s])}</td>" for s in setups)
        body += f"<tr><td>{escape(name)}</td><td class=n>{row['n']}</td>{cells}</tr>"
    return (f"<p class=note>{escape(slices['metric'])} by metadata.{escape(slices['key'])}, mean "
            f"[95% interval]; small slices have wide intervals.</p><table class=slices><thead><tr>"
            f"<th>{escape(slices['key'])}</th><th class=n>questions</th>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def fmt_ci(ci: dict[str, float] | None) -> str:
    return "–" if ci is None else f"{ci['mean']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]"


def question_cell(q: dict[str, Any], found: tuple[str, str] | None) -> str:
    badge = f"<span class=slice>{escape(found[1])}</span>" if found else ""
    gold = ", ".join(escape(str(d)) for d in q.get("doc_ids") or [])
    return (f"<td><div class=qid>{escape(q['qid'])}{badge}</div>"
            f"<div>{clip(q['question'])}</div><div class=ref><span class=label>reference</span> "
            f"{clip(q.get('reference'))}</div><div class=gold>relevant: {gold}</div></td>")


def answer_cell(row: dict[str, Any] | None, metric: str, gold: set[str], top: float | None) -> str:
    """A setup's answer, its score (bold where it is the row's best) and the documents it was given."""
    if row is None:
        return "<td data-v=\"\">–</td>"
    value = row.get(metric)
    mark = " top" if value is not None and value == top else ""
    cited = ", ".join(f"<span class=g>{escape(d)}</span>" if d in gold else escape(d)
                      for d in dict.fromkeys(row.get("cited") or []))
    return (f"<td data-v=\"{'' if value is None else value}\"><span class='score{mark}'>{num(value)}</span>"
            f"<div class=ans>{clip(row.get('answer'))}</div>"
            + (f"<div class=cited>context: {cited}</div>" if cited else "") + "</td>")


def hits_html(method: str, row: dict[str, Any] | None, gold: set[str]) -> str:
    """One method's top chunks in a closed <details>: the summary says where the first relevant is."""
    if row is None:
        return ""
    hits = row.get("retrieved") or []
    first = next((i + 1 for i, h in enumerate(hits) if h["doc_id"] in gold), None)
    where = f"first relevant #{first}" if first else "no relevant doc"
    items = "".join(f"<li{' class=g' if h['doc_id'] in gold else ''}>{escape(str(h['doc_id']))} "
                    f"<span class=score>{h['score']:.3f}</span></li>" for h in hits)
    return (f"<details class=hits><summary>{escape(method)} · nDCG {num(row.get('ndcg@10'))} · "
            f"{where}</summary><ol>{items}</ol></details>")


def row_html(r: dict[str, Any], per_question: dict[str, Any], setups: list[str],
             methods: list[str], metric: str) -> str:
    q = r["question"]
    gold = {str(d) for d in q.get("doc_ids") or []}
    cells = [f"<td class=n data-v=\"{'' if v is None else v}\">{num(v, signed=i > 0)}</td>"
             for i, v in enumerate((r["disagreement"], r["d_finetune"], r["d_embed"]))]
    cells.append(question_cell(q, r["slice"]))
    top = max((v for v in r["scores"].values() if v is not None), default=None)
    cells += [answer_cell(per_question["answers"][s].get(q["qid"]), metric, gold, top) for s in setups]
    retrieval = per_question.get("retrieval", {})
    if methods:
        cells.append("<td>" + "".join(hits_html(m, retrieval[m].get(q["qid"]), gold)
                                      for m in methods) + "</td>")
    return f"<tr data-qid=\"{escape(q['qid'])}\">" + "".join(cells) + "</tr>"


def drilldown_html(per_question: dict[str, Any], metric: str = "token_f1") -> str:
    """The sortable, filterable per-question table, widest disagreement first."""
    rows = question_rows(per_question, metric)
    setups, methods = list(per_question.get("answers", {})), list(per_question.get("retrieval", {}))
    cols = "<col class=num>" * 3 + "<col class=q>" + "<col>" * len(setups) + \
        ("<col class=hits>" if methods else "")
    head = ("<th class=n data-sort=num aria-sort=descending title='spread of the setups’ "
            f"{escape(metric)}: max − min'>disagree</th>"
            "<th class=n data-sort=num title='finetuned − base'>Δ fine-tune</th>"
            "<th class=n data-sort=num title='rag − base'>Δ embed</th>"
            "<th data-sort=text>question · reference</th>"
            + "".join(f"<th data-sort=num>{escape(s)}</th>" for s in setups)
            + ("<th>retrieved (top 10 per method)</th>" if methods else ""))
    body = "".join(row_html(r, per_question, setups, methods, metric) for r in rows)
    n = len(rows)
    return (f"<p class=note>{n} eval questions; scores are {escape(metric)}. Click a header to sort; "
            "retrieved documents that are relevant are green.</p><div class=controls>"
            "<input id=filter type=search placeholder='Filter: words in a question, answer or doc id'"
            f" aria-label='Filter questions'><span id=shown>{n} of {n} questions</span></div>"
            f"<table id=questions class=drill><colgroup>{cols}</colgroup><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>")
