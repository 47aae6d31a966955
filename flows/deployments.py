"""The two scheduled deployments, defined in code (and mirrored in prefect.yaml for `prefect deploy`).

- retrain: the full pipeline (validate .. promote) on `schedule.retrain_cron` (default nightly);
  it trains nothing and ends in seconds when data, config and code match a registered release.
- reindex: corpus-only refresh with the champion retriever on `schedule.reindex_cron`.
- monitor: drift, confidence and feedback of the served release on `schedule.monitor_cron`
  (hourly); starts `retrain` when a rule in `monitor.rules` fires, once per cooldown.

Each has a deployment concurrency limit of 1 (`schedule.collision_strategy`: ENQUEUE waits,
CANCEL_NEW drops a run that comes due while one is running); the write lock (tasks/lib/lock.py) also
keeps manual runs from interleaving with scheduled ones. `tunedex schedule` (`make schedule`) runs all three
from this process; a Prefect server + `process` work pool + worker is the other way (README).
"""

from __future__ import annotations

from typing import Any

from tasks.lib.config import DEFAULT_CONFIG_PATH, load_config

DEPLOYMENTS = ("retrain", "reindex", "monitor")


def build_deployments(config_path: str = DEFAULT_CONFIG_PATH,
                      overrides: dict[str, Any] | None = None) -> list[Any]:
    """RunnerDeployments for retrain and reindex, scheduled and limited as the config says."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows.monitor import monitor
    from flows.pipeline import pipeline
    from flows.reindex import reindex

    cfg = load_config(config_path, overrides)
    s = cfg.schedule
    parameters = {"config_path": config_path, "overrides": overrides or {}}

    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy(
        s.collision_strategy))
    specs = [
        (pipeline, "retrain", s.retrain_cron,
         "Full pipeline: validate, train retriever + generator, index, evaluate, gated promotion. "
         "Skips when nothing changed since the last release."),
        (reindex, "reindex", s.reindex_cron,
         "Corpus refresh with the champion retriever; pins the new table version on the champion "
         "only if retrieval metrics hold."),
        (monitor, "monitor", s.monitor_cron,
         "Query drift, retrieval confidence and feedback of the served release; starts retrain "
         "when a monitor rule fires (once per cooldown) and proposes served questions for review."),
    ]
    return [flow_.to_deployment(name=name, schedules=[Cron(cron, timezone=s.timezone)],
                                parameters=parameters, concurrency_limit=limit,
                                tags=["tunedex", name], description=description)
            for flow_, name, cron, description in specs]


def serve_deployments(config_path: str = DEFAULT_CONFIG_PATH,
                      overrides: dict[str, Any] | None = None) -> None:
    """Serve the deployments from this process until interrupted (needs a Prefect API)."""
    from prefect import serve

    serve(*build_deployments(config_path, overrides))
