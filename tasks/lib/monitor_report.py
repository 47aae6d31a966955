"""The monitor's report: JSON for machines, one self-contained HTML page for people, a history
line per run (the metrics as a series over time), and an MLflow run per release whose metrics
are logged at one step per monitor run, so the MLflow UI charts them over time."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACTIONS = {"none": "No rule fired: nothing to do.",
           "trigger": "A rule fired: retraining.",
           "triggered": "A rule fired: the retrain deployment was started.",
           "would_trigger": "A rule fired: a retrain would have been started (no Prefect server).",
           "retrained_here": "A rule fired: the pipeline was run here (--retrain-here).",
           "cooldown": "A rule fired, but the last retrain trigger is within the cooldown.",
           "trigger_failed": "A rule fired, but the retrain deployment could not be started."}

# ---- pure ---------------------------------------------------------------------------------------


def stamp(ts: float | None) -> str:
    return "–" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def build_report(version: Any, reference: dict[str, Any], metrics: dict[str, Any],
                 decision: dict[str, Any], harvested: dict[str, Any], now: float) -> dict[str, Any]:
    """Everything one monitor run found and decided (what report.json holds)."""
    return {"at": stamp(now), "ts": now, "release": version, "reference_source": reference["source"],
            "volume": metrics["volume"], "drift": metrics["drift"],
            "confidence": metrics["confidence"], "feedback": metrics["feedback"],
            "examples": metrics["examples"], "decision": {k: v for k, v in decision.items()},
            "harvest": harvested, "seconds": metrics.get("seconds")}


def history_line(report: dict[str, Any], flat: dict[str, float | None]) -> dict[str, Any]:
    return {"ts": report["ts"], "at": report["at"], "release": report["release"],
            "action": report["decision"]["action"], **flat}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _interval(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    return f"{r['rate']:.3f} [{r['low']:.3f}, {r['high']:.3f}] ({r['count']}/{r['n']})"


def drift_chart(history: list[dict[str, Any]], threshold: float = 0.01, width: int = 640,
                height: int = 140) -> str:
    """An inline SVG of the drift p-value per monitor run (log scale, the rule's line dashed);
    empty when fewer than two runs had a p-value."""
    import math

    points = [(i, h["drift.p_value"]) for i, h in enumerate(history[-60:])
              if h.get("drift.p_value") is not None]
    if len(points) < 2:
        return ""
    top = 4.0  # -log10(p) shown up to p = 1e-4
    n = max(i for i, _ in points) or 1

    def xy(i: int, p: float) -> str:
        y = min(-math.log10(max(p, 1e-12)), top) / top
        return f"{20 + i * (width - 40) / n:.1f},{height - 20 - y * (height - 40):.1f}"

    line = " ".join(xy(i, p) for i, p in points)
    ty = height - 20 - min(-math.log10(threshold), top) / top * (height - 40)
    dots = "".join(f'<circle cx="{xy(i, p).split(",")[0]}" cy="{xy(i, p).split(",")[1]}" r="3" '
                   f'fill="{"#e65100" if p < threshold else "#2e7d32"}"><title>p = {p:.3g}</title>'
                   "</circle>" for i, p in points)
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="drift p-value per run">'
            f'<line x1="20" x2="{width - 20}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e65100" '
            f'stroke-dasharray="4 3"/><text x="{width - 20}" y="{ty - 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#e65100">p = {threshold:g}</text>'
            f'<polyline points="{line}" fill="none" stroke="#555"/>{dots}'
            f'<text x="20" y="12" font-size="11" fill="#666">drift p-value per run (log scale; '
            f'higher = more drift)</text></svg>')


def render_html(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """One self-contained page (no scripts, no external assets)."""
    d, v, dr, cf, fb = (report["decision"], report["volume"], report["drift"],
                        report["confidence"], report["feedback"])
    level = "alert" if d["action"] not in ("none",) else "ok"
    measures = [
        ["query drift", dr.get("p_value"), f"MMD² {_fmt(dr.get('mmd2'))}", dr.get("method", ""),
         dr.get("status")],
        ["retrieval confidence", cf.get("p_value"),
         f"median top-1 {_fmt(cf.get('served_median'))} vs eval {_fmt(cf.get('reference_median'))}",
         cf.get("method", ""), cf.get("status")],
        ["low-confidence share", None, _interval(cf.get("low_share")),
         f"top-1 below {_fmt(cf.get('floor'))} ({cf.get('floor_source', '')}), Wilson 95%",
         cf.get("status")],
        ["thumbs-down rate", None, _interval(fb.get("down")), "Wilson score 95% interval",
         fb.get("status")],
    ]
    checks = [[c["metric"], f"{c['op']} {c['threshold']:g}", c["value"], c["status"]]
              for c in d.get("checks", [])]
    examples = [[e["question"], e["witness"], e["top1"], e["top_doc"]] for e in report["examples"]]
    hist = [[h["at"], h["release"], h.get("volume.questions"), h.get("drift.p_value"),
             h.get("confidence.low_share"), h.get("feedback.down_rate"), h["action"]]
            for h in history[-30:][::-1]]
    hv = report["harvest"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>tunedex monitor: release v{_fmt(report['release'])}</title><style>
body{{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}}
th,td{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}} .banner{{padding:.8em 1em;border-radius:6px;margin:1em 0}}
.ok{{background:#e8f5e9}} .alert{{background:#fff3e0}} small{{color:#666}}
</style></head><body>
<h1>Monitor — release v{_fmt(report['release'])}</h1>
<p><small>{html.escape(report['at'])} · questions {stamp(v.get('since'))} → {stamp(v.get('until'))}
· reference: {html.escape(str(report['reference_source']))}</small></p>
<div class="banner {level}"><strong>{html.escape(ACTIONS.get(d['action'], d['action']))}</strong><br>
{html.escape(d.get('reason', ''))}{('<br>' + html.escape(d['detail'])) if d.get('detail') else ''}</div>
<h2>Volume</h2>
{_table(["requests", "distinct questions", "rated", "enough for tests"],
        [[v['requests'], v['distinct'], v['feedback'],
          "yes" if v['enough'] else f"no (need {v['min_questions']})"]])}
<h2>Measures</h2>
{_table(["measure", "p-value", "value", "method", "status"], measures)}
<h2>Rules</h2>
{_table(["metric", "fires when", "value", "status"], checks)}
<h2>Most drifted questions</h2>
<p><small>Served questions where the served distribution is densest relative to the reference
(MMD witness); PII redacted.</small></p>
{_table(["question", "witness", "top-1 cosine", "top document"], examples)}
<h2>Harvested for review</h2>
<p>{hv.get('added', 0)} new candidate train questions; {hv.get('pending', 0)} pending in
<code>{html.escape(str(hv.get('review_path', '')))}</code> (accept with
<code>tunedex accept-queries</code>).</p>
<h2>History</h2>
{drift_chart(history)}
{_table(["at", "release", "questions", "drift p", "low-conf. share", "down rate", "action"], hist)}
</body></html>
"""


def test_line(part: dict[str, Any]) -> str:
    """One measure as `p = 0.002 (method)`, or its status when it did not run."""
    if part.get("p_value") is None:
        return part["status"]
    return f"p = {part['p_value']:.4g} ({part.get('method', '')})"


def summary_markdown(report: dict[str, Any]) -> str:
    """A few lines for the Prefect UI (the flow run's artifact)."""
    d, v = report["decision"], report["volume"]
    lines = [f"# Monitor: release v{report['release']}", "",
             f"**{ACTIONS.get(d['action'], d['action'])}** {d['reason']}"
             + (f" — {d['detail']}" if d.get("detail") else ""), "",
             f"- questions: {v['questions']} ({v['distinct']} distinct), rated: {v['feedback']}"]
    lines += [f"- {name}: {test_line(report[name])}" for name in ("drift", "confidence")]
    lines.append(f"- harvested for review: {report['harvest'].get('added', 0)}")
    return "\n".join(lines)


# ---- effects ------------------------------------------------------------------------------------


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a crash
    return out


def write_report(cat: Any, report: dict[str, Any], flat: dict[str, float | None]) -> dict[str, Path]:
    """report.json, report.html and one history line under reports/monitor/."""
    from tasks.lib.files import write_json, write_text_atomic

    out = cat.monitor_dir
    out.mkdir(parents=True, exist_ok=True)
    with cat.monitor_history_path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(history_line(report, flat)) + "\n")
    paths = {"json": write_json(out / "report.json", report), "html": out / "report.html"}
    write_text_atomic(paths["html"], render_html(report, read_history(cat.monitor_history_path)))
    return paths


def log_to_mlflow(tracking: Any, experiment: str, report: dict[str, Any],
                  flat: dict[str, float | None], step: int, paths: dict[str, Path]) -> str:
    """Log this run's metrics at `step` into the release's monitor run (created on first use)."""
    import mlflow

    from tasks.lib.tracking import configure_tracking

    experiment_id = configure_tracking(tracking, experiment)
    tag = str(report["release"])
    found = mlflow.search_runs([experiment_id], filter_string=f"tags.`tunedex.monitor_release` = '{tag}'",
                               max_results=1, output_format="list")
    run_id = found[0].info.run_id if found else None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id,
                          run_name=None if run_id else f"monitor release v{tag}") as run:
        d = report["decision"]
        mlflow.set_tags({"tunedex.monitor_release": tag, "tunedex.kind": "monitor",
                         "monitor.last_action": d["action"], "monitor.last_at": report["at"],
                         "monitor.last_reason": (d["reason"] + (f"; {d['detail']}" if d.get("detail")
                                                                else ""))[:4000]})
        ts_ms = int(report["ts"] * 1000)
        for key, value in flat.items():
            if value is not None:
                mlflow.log_metric(f"monitor.{key}", float(value), step=step, timestamp=ts_ms)
        stamp_dir = datetime.fromtimestamp(report["ts"], UTC).strftime("%Y%m%dT%H%M%S")
        for path in paths.values():
            mlflow.log_artifact(str(path), f"monitor/{stamp_dir}")
        return run.info.run_id
