"""The monitor flow: watch the served release, retrain when its world drifts.

Reads the query log `tunedex serve` writes (<logs_dir>/queries/), the release behind @champion
(pinned table, retriever, the questions it was trained and evaluated on) and
reports/monitor/state.json. Writes reports/monitor/ (report.html, report.json, history.jsonl,
review.jsonl, state.json) and the release's MLflow monitor run; starts the `retrain`
deployment when a rule in `monitor.rules` fires, at most once per `monitor.cooldown_hours`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.lib.config import DEFAULT_CONFIG_PATH, load_config
from tasks.lib.context import StageContext
from tasks.lib.registry import check_registry, registry_ref
from tasks.lib.runtime import notify_failure
from tasks.lib.serving import ServingSections
from tasks.monitor import decide_task, harvest_task, measure_task, observe_task, report_task


def retrain_in_process(config_path: str, overrides: dict[str, Any] | None,
                       decision: dict[str, Any]) -> dict[str, Any]:
    """Run the retrain pipeline here (a subflow), for a box without a Prefect server."""
    from flows.pipeline import pipeline

    result = pipeline(config_path=config_path, overrides=overrides)
    if result["skipped"]:
        detail = (f"ran the pipeline here; it trained nothing: {result['reason']} Accept harvested "
                  "questions (`tunedex accept-queries`) or update the corpus to give it something new.")
    else:
        detail = f"ran the pipeline here (MLflow run {result['run_id']}): {result['promote']['summary']}"
    return {**decision, "action": "retrained_here", "detail": detail}


@flow(name="tunedex-monitor", flow_run_name="{config_path}", on_failure=[notify_failure],
      on_crashed=[notify_failure])
def monitor(config_path: str = DEFAULT_CONFIG_PATH, overrides: dict[str, Any] | None = None,
            retrain_here: bool = False) -> dict[str, Any]:
    """Measure drift, confidence and feedback of the served release; retrain if a rule fires
    (`retrain_here`: without a Prefect server, run the pipeline in this process instead)."""
    cfg = load_config(config_path, overrides)
    reg = registry_ref(cfg)
    check_registry(reg)
    ctx = StageContext.of(cfg)
    sections = ServingSections(cfg.models, cfg.generate, cfg.evaluate, cfg.index)
    # 1. The served release and the questions asked since the last judged run.
    observed = observe_task(reg, sections, ctx)
    # 2. Query drift, retrieval confidence, feedback and volume, each with its method.
    metrics = measure_task(cfg.monitor, observed["loaded"], observed["reference"],
                           observed["window"], observed["ratings"], cfg.project.seed)
    # 3. Rules -> start the retrain deployment (or say what would start), cooldown respected.
    decision = decide_task(cfg.monitor, ctx, metrics, observed)
    if retrain_here and decision["action"] == "would_trigger":
        decision = retrain_in_process(config_path, overrides, decision)
    # 4. Helpful, confidently answered questions -> the review file (PII redacted).
    harvested = harvest_task(cfg.monitor, ctx, observed, metrics)
    # 5. Report (HTML + JSON + history), MLflow series, state.
    return report_task(ctx, observed, metrics, decision, harvested)
