"""monitor steps: is the served release still answering what users ask, and should it retrain?

Reads the query log (`<logs_dir>/queries/`, written by `tunedex serve`), the release behind
@champion (its pinned table, its retriever, the train/eval questions promote logged with it)
and reports/monitor/state.json (the cursor: what earlier runs already judged). Computes, each
with its method named: query drift (MMD² permutation test on corpus profiles in the release's
own embedding space), retrieval confidence (top-1 cosine vs the eval questions'), feedback
(thumbs-down rate) and volume. A firing rule (`monitor.rules`) starts the retrain deployment,
once per `monitor.cooldown_hours`. Helpful, confidently answered questions go to a review
file. Writes reports/monitor/ (report.json, report.html, history.jsonl, review.jsonl,
state.json) and an MLflow run per release whose metrics are series over monitor runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.lib.config import MonitorConfig, MonitorRule
from tasks.lib.context import StageContext
from tasks.lib.runtime import IO_RETRIES

log = logging.getLogger(__name__)

# ---- pure ---------------------------------------------------------------------------------------


def release_requests(records: list[dict[str, Any]], version: int | None) -> list[dict[str, Any]]:
    """The /search and /ask requests one release served (by retriever version), oldest first."""
    return [r for r in records if r.get("kind") in ("search", "ask")
            and isinstance(r.get("release"), dict) and r["release"].get("retriever_version") == version
            and isinstance(r.get("question"), str) and r["question"].strip()]


def in_window(requests: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """Requests after the cursor."""
    return [r for r in requests if float(r.get("ts", 0)) > since]


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers rules can name (None where there was not enough data)."""
    drift, conf, fb = metrics["drift"], metrics["confidence"], metrics["feedback"]
    low, down = conf.get("low_share") or {}, fb.get("down") or {}
    return {"volume.questions": float(metrics["volume"]["questions"]),
            "volume.feedback": float(metrics["volume"]["feedback"]),
            "drift.p_value": drift.get("p_value"), "drift.mmd2": drift.get("mmd2"),
            "confidence.p_value": conf.get("p_value"),
            "confidence.median_change": conf.get("median_change"),
            "confidence.low_share": low.get("rate"), "confidence.low_share_low": low.get("low"),
            "feedback.down_rate": down.get("rate"), "feedback.down_rate_low": down.get("low")}


def check_rules(flat: dict[str, float | None], rules: tuple[MonitorRule, ...]) -> list[dict[str, Any]]:
    """Each rule with its value and whether it fired (a metric without data never fires)."""
    out = []
    for rule in rules:
        if rule.metric not in flat:
            from tasks.lib.errors import ConfigError

            raise ConfigError(f"monitor.rules: unknown metric {rule.metric}; known: "
                              f"{', '.join(sorted(flat))}")
        value = flat[rule.metric]
        bound = rule.below if rule.below is not None else rule.above
        op = "<" if rule.below is not None else ">"
        fired = value is not None and (value < bound if op == "<" else value > bound)
        out.append({"metric": rule.metric, "op": op, "threshold": bound, "value": value,
                    "fired": bool(fired),
                    "status": "not enough data" if value is None else ("fired" if fired else "ok")})
    return out


def decide(checks: list[dict[str, Any]], state: dict[str, Any], now: float,
           cooldown_hours: float) -> dict[str, Any]:
    """Retrain or not: any fired rule triggers, unless the last trigger is within the cooldown."""
    fired = [c for c in checks if c["fired"]]
    if not fired and checks and all(c["value"] is None for c in checks):
        return {"action": "none", "reason": "not enough data for any rule", "fired": []}
    if not fired:
        return {"action": "none", "reason": "no rule fired", "fired": []}
    reason = "; ".join(f"{c['metric']} = {c['value']:.4g} {c['op']} {c['threshold']:g}" for c in fired)
    last = (state.get("last_trigger") or {}).get("ts")
    if last is not None and now - last < cooldown_hours * 3600:
        left = cooldown_hours * 3600 - (now - last)
        return {"action": "cooldown", "fired": fired, "reason": f"{reason}; not triggered: last "
                f"trigger {(now - last) / 3600:.1f} h ago, cooldown {cooldown_hours:g} h "
                f"({left / 3600:.1f} h left)"}
    return {"action": "trigger", "reason": reason, "fired": fired}


def next_state(state: dict[str, Any], version: Any, metrics: dict[str, Any],
               decision: dict[str, Any], now: float) -> dict[str, Any]:
    """The state after a run: the cursor moves past the window only when it was judged (enough
    questions; fewer keep accumulating), and a started retrain starts the cooldown."""
    out = {"releases": dict(state.get("releases", {})), "last_trigger": state.get("last_trigger"),
           "runs": int(state.get("runs", 0)) + 1}
    volume = metrics["volume"]
    if volume["enough"] and volume["until"] is not None:
        out["releases"][str(version)] = {"cursor": volume["until"]}
    if decision["action"] in ("triggered", "retrained_here"):
        out["last_trigger"] = trigger_record(decision, version, now)
    return out


def trigger_record(decision: dict[str, Any], version: Any, now: float) -> dict[str, Any]:
    """What state.json keeps of a started retrain (the cooldown counts from its `ts`)."""
    return {"ts": now, "release": version, "reason": decision["reason"],
            "action": decision["action"], "detail": decision.get("detail")}


# ---- effects: the release and its numbers -----------------------------------------------------------


def measure(section: MonitorConfig, loaded: Any, reference: dict[str, list[str]],
            window: list[dict[str, Any]], ratings: dict[str, int], seed: int) -> dict[str, Any]:
    """Every monitor metric for the requests in the window (drift, confidence, feedback, volume),
    the most drifted questions, and the top-1 score a harvested question needs."""
    from tasks.lib.drift import rate, subsample, witness
    from tasks.lib.pii import redact
    from tasks.lib.question_space import (
        anchors_of,
        confidence,
        drift_test,
        encode,
        reference_sample,
        top1,
    )

    started = time.perf_counter()
    questions = [r["question"] for r in window]
    rated = [ratings[r["request_id"]] for r in window if r["request_id"] in ratings]
    volume = {"requests": len(window), "questions": len(questions),
              "distinct": len(set(questions)), "feedback": len(rated),
              "enough": len(questions) >= section.min_questions,
              "min_questions": section.min_questions,
              "since": min((r["ts"] for r in window), default=None),
              "until": max((r["ts"] for r in window), default=None)}
    fb_enough = len(rated) >= section.min_feedback
    feedback = {"down": rate(sum(1 for x in rated if x < 0), len(rated)) if fb_enough else None,
                "status": "ok" if fb_enough else f"not enough data ({len(rated)} rated, "
                f"{section.min_feedback} needed)"}
    metrics: dict[str, Any] = {"volume": volume, "feedback": feedback, "examples": [],
                               "drift": {"status": "not enough data"},
                               "confidence": {"status": "not enough data"}}
    if not volume["enough"]:
        msg = (f"not enough data: {len(questions)} served questions since the last judged run, "
               f"{section.min_questions} needed")
        metrics["drift"]["status"] = metrics["confidence"]["status"] = msg
        return {**metrics, "seconds": time.perf_counter() - started}

    model, table = loaded.retriever(), loaded.table()
    held = loaded.chunk_vectors()
    anchors = anchors_of(table, held, seed)
    # One seeded sample of at most max_questions served questions for every measure: the cost
    # stays bounded however busy the server was (encoding dominates it).
    sample = [questions[i] for i in subsample(len(questions), section.max_questions, seed + 1)]
    served_emb = encode(model, sample)
    ref_texts = reference_sample(section, reference, seed)
    if len(ref_texts) < 2:
        metrics["drift"]["status"] = "the release's reference holds fewer than 2 questions"
        metrics["confidence"]["status"] = metrics["drift"]["status"]
        return {**metrics, "seconds": time.perf_counter() - started}
    drift, ref_prof, srv_prof, _ = drift_test(section, anchors, encode(model, ref_texts),
                                              served_emb, seed)
    drift["reference"] = (f"{len(ref_texts)} of the release's {len(reference['train'])} train + "
                          f"{len(reference['eval'])} eval questions")
    drift["served"] = f"{len(sample)} of {len(questions)} served questions (seeded sample)"
    metrics["drift"] = {**drift, "status": "ok"}

    scores, docs = top1(served_emb, table, held, loaded.sections.index)
    eval_scores, _ = top1(encode(model, reference["eval"]), table, held, loaded.sections.index)
    metrics["confidence"] = confidence(section, scores, eval_scores)
    metrics["harvest_floor"] = (section.harvest_min_score if section.harvest_min_score is not None
                                else float(np.median(eval_scores)) if len(eval_scores) else 1.0)

    wit = witness(ref_prof, srv_prof, srv_prof, drift["bandwidth"])
    seen: set[str] = set()
    for i in np.argsort(-wit):
        if sample[i] in seen or len(metrics["examples"]) >= section.examples:
            continue
        seen.add(sample[i])
        metrics["examples"].append({"question": redact(sample[i])[0], "witness": float(wit[i]),
                                    "top1": float(scores[i]), "top_doc": docs[i]})
    return {**metrics, "seconds": time.perf_counter() - started}


# ---- effects: what is served, what was asked ------------------------------------------------------


def read_state(cat: Any) -> dict[str, Any]:
    """The monitor's state: per-release cursors, the last trigger, how many runs so far."""
    import json

    path = cat.monitor_state_path
    if not path.is_file():
        return {"releases": {}, "last_trigger": None, "runs": 0}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        from tasks.lib.errors import DataError

        raise DataError(str(path), err.lineno, None, f"not valid JSON ({err.msg}); delete it to "
                        "start monitoring afresh (the query log is kept)") from None


def observe(reg: Any, sections: Any, ctx: StageContext) -> dict[str, Any]:
    """The release behind @champion (loaded lazily), its reference questions, and the query log:
    its requests, the ones since the last judged run, the ratings, the state."""
    from tasks.lib.harvest import latest_ratings
    from tasks.lib.querylog import read_log
    from tasks.lib.reference import load_reference
    from tasks.lib.serving import open_release

    cat = ctx.catalog
    loaded = open_release(reg, cat, sections)
    version = loaded.served.release
    reference = load_reference(ctx.tracking.tracking_uri, loaded.served.tags, cat)
    if not cat.query_log_dir.is_dir():
        log.warning("monitor: no query log at %s: nothing was served with serve.query_log on "
                    "(`tunedex serve` writes it)", cat.query_log_dir)
    records = list(read_log(cat.query_log_dir))
    requests = release_requests(records, version)
    state = read_state(cat)
    cursor = float(state["releases"].get(str(version), {}).get("cursor", 0.0))
    window = in_window(requests, cursor)
    log.info("monitor: release v%s; query log %s: %d records, %d requests to this release, %d "
             "since the last judged run", version, cat.query_log_dir, len(records), len(requests),
             len(window))
    return {"loaded": loaded, "version": version, "reference": reference, "requests": requests,
            "window": window, "ratings": latest_ratings(records), "state": state}


def prefect_api_url() -> str | None:
    """The Prefect server runs are sent to (None: no server, only a temporary local API)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def start_retrain(section: MonitorConfig, decision: dict[str, Any]) -> dict[str, Any]:
    """Start the retrain deployment when the decision says so (a flow run a worker or
    `tunedex schedule` picks up); without a Prefect server that has it, say what would have
    been started."""
    from tasks.lib.errors import first_line

    if decision["action"] != "trigger":
        return decision
    from prefect.deployments import run_deployment

    try:
        run = run_deployment(name=section.deployment, timeout=0, as_subflow=False,
                             tags=["tunedex", "monitor"])
    except Exception as err:  # noqa: BLE001 - no such deployment or server: reported, retried next run
        why = type(err).__name__ + (f": {first_line(err)}" if str(err) not in ("", "None") else "")
        if prefect_api_url() is None:
            return {**decision, "action": "would_trigger", "detail": "no Prefect server "
                    f"(PREFECT_API_URL unset) has deployment {section.deployment} ({why}): it "
                    "would have been started"}
        return {**decision, "action": "trigger_failed",
                "detail": f"could not start deployment {section.deployment}: {why} (register it "
                          "with `tunedex schedule` or `prefect deploy --all`)"}
    return {**decision, "action": "triggered", "flow_run_id": str(run.id),
            "detail": f"started deployment {section.deployment}: flow run {run.name} ({run.id})"}


def harvest_served(section: MonitorConfig, cat: Any, observed: dict[str, Any],
                   floor: float | None) -> dict[str, Any]:
    """Helpful, confidently retrieved questions of this release -> the review file."""
    from tasks.lib.data import read_jsonl
    from tasks.lib.harvest import PENDING, add_to_review, harvest, read_review
    from tasks.lib.question_space import encode, top1
    from tasks.lib.text import normalize_question

    review = [row for _, row in read_review(cat.review_path)]
    reviewed = {row.get("metadata", {}).get("request_id") for row in review}
    todo = [r for r in observed["requests"] if observed["ratings"].get(r["request_id"], 0) > 0
            and r["request_id"] not in reviewed][-section.max_questions:]  # the newest, bounded
    if not todo:
        pending = sum(1 for row in review if row.get("review", PENDING) == PENDING)
        return {"added": 0, "pending": pending, "dropped": {}, "review_path": str(cat.review_path)}
    loaded = observed["loaded"]
    table, model = loaded.table(), loaded.retriever()
    held = loaded.chunk_vectors()  # read once: measure has usually loaded them already
    if floor is None:
        floor = section.harvest_min_score
    if floor is None:  # not measured this run (too few new questions): the eval median
        eval_scores, _ = top1(encode(model, observed["reference"]["eval"]), table, held,
                              loaded.sections.index)
        floor = float(np.median(eval_scores)) if len(eval_scores) else 1.0
    scores, _ = top1(encode(model, [r["question"] for r in todo]), table, held, loaded.sections.index)
    known = {normalize_question(q) for q in observed["reference"]["train"] + observed["reference"]["eval"]}
    if cat.has_qa:
        known |= {normalize_question(r.get("question", "")) for r in read_jsonl(cat.qa_path)}
    known |= {normalize_question(row.get("question", "")) for row in review}
    rows, dropped = harvest(todo, {r["request_id"]: float(s) for r, s in zip(todo, scores, strict=True)},
                            observed["ratings"], floor, known)
    pending = add_to_review(cat.review_path, rows) if rows else \
        sum(1 for row in review if row.get("review", PENDING) == PENDING)
    return {"added": len(rows), "pending": pending, "dropped": dropped, "floor": floor,
            "review_path": str(cat.review_path)}


# ---- Prefect tasks ----------------------------------------------------------------------------------


@task(name="observe", cache_policy=NO_CACHE, **IO_RETRIES)
def observe_task(reg: Any, sections: Any, ctx: StageContext) -> dict[str, Any]:
    """The served release and the query log since the last judged run."""
    return observe(reg, sections, ctx)


def save_state(cat: Any, state: dict[str, Any]) -> None:
    """Write state.json (atomically: a crash never leaves half a state)."""
    from tasks.lib.files import write_json

    write_json(cat.monitor_state_path, state)


@task(name="decide", cache_policy=NO_CACHE)
def decide_task(section: MonitorConfig, ctx: StageContext, metrics: dict[str, Any],
                observed: dict[str, Any]) -> dict[str, Any]:
    """Check the rules; start the retrain deployment when one fires (outside the cooldown)."""
    checks = check_rules(flat_metrics(metrics), section.rules)
    now = time.time()
    decision = start_retrain(section, decide(checks, observed["state"], now, section.cooldown_hours))
    decision["checks"] = checks
    if decision["action"] == "triggered":  # the cooldown starts now, even if this run dies later
        save_state(ctx.catalog, {**observed["state"],
                                 "last_trigger": trigger_record(decision, observed["version"], now)})
    log.info("monitor decision: %s (%s)%s", decision["action"], decision["reason"],
             f"; {decision['detail']}" if decision.get("detail") else "")
    return decision


@task(name="harvest", cache_policy=NO_CACHE)
def harvest_task(section: MonitorConfig, ctx: StageContext, observed: dict[str, Any],
                 metrics: dict[str, Any]) -> dict[str, Any]:
    """Helpful, confidently retrieved served questions into the review file."""
    out = harvest_served(section, ctx.catalog, observed, metrics.get("harvest_floor"))
    log.info("monitor harvest: %d new candidate train questions, %d pending review in %s",
             out["added"], out["pending"], out["review_path"])
    return out


@task(name="report", cache_policy=NO_CACHE)
def report_task(ctx: StageContext, observed: dict[str, Any], metrics: dict[str, Any],
                decision: dict[str, Any], harvested: dict[str, Any]) -> dict[str, Any]:
    """report.json/.html and history under reports/monitor/, the release's MLflow monitor run,
    then the state (last: a run that dies earlier is judged again next time)."""
    from tasks.lib.monitor_report import build_report, log_to_mlflow, summary_markdown, write_report

    cat, now = ctx.catalog, time.time()
    report = build_report(observed["version"], observed["reference"], metrics, decision, harvested, now)
    flat = flat_metrics(metrics)
    paths = write_report(cat, report, flat)
    state = next_state(read_state(cat), observed["version"], metrics, decision, now)
    run_id = log_to_mlflow(ctx.tracking, ctx.project.name, report, flat, state["runs"], paths)
    save_state(cat, state)
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(summary_markdown(report), key="monitor-report",
                             description="tunedex monitor: drift, confidence, feedback, decision")
    log.info("monitor report: %s (MLflow run %s)", paths["html"], run_id)
    return {**report, "paths": {k: str(v) for k, v in paths.items()}, "mlflow_run_id": run_id}


@task(name="measure", cache_policy=NO_CACHE)
def measure_task(section: MonitorConfig, loaded: Any, reference: dict[str, list[str]],
                 window: list[dict[str, Any]], ratings: dict[str, int], seed: int) -> dict[str, Any]:
    """Drift, confidence, feedback and volume of the served questions in the window."""
    metrics = measure(section, loaded, reference, window, ratings, seed)
    log.info("monitor: %d questions (%d rated) in %.1f s; drift %s; confidence %s",
             metrics["volume"]["questions"], metrics["volume"]["feedback"], metrics["seconds"],
             metrics["drift"].get("p_value", metrics["drift"]["status"]),
             metrics["confidence"].get("p_value", metrics["confidence"]["status"]))
    return metrics
