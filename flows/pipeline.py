"""The retrain flow: validate -> synthesize -> prepare -> train_retriever -> index ->
train_generator -> evaluate -> promote.

Reads the raw corpus/QA named in the config; writes reports/, data/prepared/, the adapters
(models/retriever, models/generator), LanceDB tables (paths.index_uri) and one MLflow parent run
with a nested run per stage; promote registers the release in the MLflow Model Registry. Each
step up to evaluate calls the same stage function `dvc repro` runs, and a step whose inputs match
dvc.lock reuses its outputs (tasks/lib/incremental.py); each task receives the result of the
steps it reads from, so the run graph shows the data edges.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from tasks.evaluate import evaluate
from tasks.index import index
from tasks.lib.config import DEFAULT_CONFIG_PATH, load_config
from tasks.lib.context import StageContext
from tasks.lib.incremental import dvc_plan
from tasks.lib.lock import write_lock
from tasks.lib.registry import check_registry, registry_ref
from tasks.lib.release_skip import release_inputs, skip_reason
from tasks.lib.runtime import clean_killed_runs, notify_failure, until_cancelled
from tasks.lib.stages import DVC_STAGES, FLOW_STAGES  # noqa: F401 - the step lists, re-exported
from tasks.lib.tracking import pipeline_run
from tasks.prepare import prepare
from tasks.promote import promote
from tasks.synthesize import synthesize
from tasks.train_generator import train_generator
from tasks.train_retriever import train_retriever
from tasks.validate import validate

log = logging.getLogger("flows.pipeline")  # by name: deployments load this file by path


@flow(name="tunedex-pipeline", flow_run_name="{config_path}", on_failure=[notify_failure],
      on_crashed=[notify_failure], on_cancellation=[notify_failure])
def pipeline(config_path: str = DEFAULT_CONFIG_PATH, overrides: dict[str, Any] | None = None,
             force: bool = False) -> dict[str, Any]:
    """Run the tunedex pipeline for one config; return the parent MLflow run id and stage outputs.

    Skips everything (in seconds) when the data, config and code are those of a registered
    release, unless `force` or `schedule.skip_unchanged: false`; otherwise skips each stage that
    is up to date in dvc.lock."""
    cfg = load_config(config_path, overrides)
    reg = registry_ref(cfg)
    # 0. The registry must be reachable before hours of training are spent.
    check_registry(reg)
    with write_lock(cfg.lock, f"pipeline {config_path}"):
        skip = skip_reason(cfg, force)
        if skip is not None:
            log.info("pipeline skipped: %s", skip["reason"])
            return {"skipped": True, **skip}
        clean_killed_runs(reg.catalog)  # temp outputs of a killed run (its MLflow runs: pipeline_run)
        inputs = release_inputs(cfg)
        plan = dvc_plan(config_path, overrides, force)
        log.info("pipeline: %s", plan.reason)
        # A SIGTERM (timeout, cancellation) ends the run Cancelled, its lock and runs released.
        return until_cancelled("pipeline", run_stages, cfg, plan, inputs)


def run_stages(cfg: Any, plan: Any, inputs: str) -> dict[str, Any]:
    """Every stage in order inside one MLflow parent run (the write lock is held)."""
    with pipeline_run(cfg, run_name="pipeline") as run_id:
        ctx = StageContext.of(cfg, run_id).under(run_id, plan)
        # 1. Validate the raw data (stops the run on any failed expectation).
        validated = validate(cfg.validate_, cfg.pii, ctx)
        # 2. Write training questions from the corpus (mode auto: only when there is no QA file).
        synthesized = synthesize(cfg.synthesize, cfg.prepare, cfg.pii, cfg.validate_, ctx,
                                 validated)
        # 3. Merge them with the real questions, split, leakage-check and chunk.
        prepared = prepare(cfg.prepare, cfg.pii, cfg.synthesize, ctx, synthesized)
        # 4. LoRA-train the retriever on (question, relevant chunk) pairs.
        retriever = train_retriever(cfg.train_retriever, ctx, prepared)
        # 5. Embed chunks into LanceDB for the base and the candidate retriever.
        tables = index(cfg.index, ctx, retriever)
        # 6. LoRA-train the generator; part of its examples carry retrieved context.
        generator = train_generator(cfg.train_generator, cfg.index, ctx, prepared, tables)
        # 7. Scoreboard: retrieval (BM25/base/LoRA/fusion; the method chosen on train questions),
        # answers (base/finetuned/rag/hybrid).
        scoreboard = evaluate(cfg.evaluate, cfg.generate, cfg.index, ctx, prepared, tables,
                              generator)
        # 8. Register the release; move `champion` only if the gate passes.
        release = promote(cfg.promote, cfg.prepare, cfg.generate, cfg.index, cfg.evaluate, ctx,
                          inputs, scoreboard)
    return {"skipped": False, "run_id": run_id, "incremental": plan.reason,
            "validate": validated, "synthesize": synthesized, "prepare": prepared,
            "train_retriever": retriever, "index": tables, "train_generator": generator,
            "evaluate": scoreboard,
            "promote": release}
