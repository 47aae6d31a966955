"""The retrain flow: validate -> prepare -> train_retriever -> index -> train_generator -> evaluate
-> promote.

Reads the raw corpus/QA named in the config; writes reports/, data/prepared/, the adapters
(models/retriever, models/generator), LanceDB tables (paths.index_uri) and one MLflow parent run
with a nested run per stage; promote registers the release in the MLflow Model Registry. Each
step up to evaluate calls the same stage function `dvc repro` runs.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from tasks.config import DEFAULT_CONFIG_PATH, load_config
from tasks.evaluate import evaluate
from tasks.index import index
from tasks.lock import write_lock
from tasks.prepare import prepare
from tasks.promote import promote, unchanged_release
from tasks.registry import check_registry
from tasks.runtime import notify_failure
from tasks.tracking import pipeline_run
from tasks.train_generator import train_generator
from tasks.train_retriever import train_retriever
from tasks.validate import validate

# The file-producing stages in order; dvc.yaml has the same keys (a test keeps them in agreement).
STAGES = ("validate", "prepare", "train_retriever", "index", "train_generator", "evaluate")
# The flow's steps: promote changes the registry, not files, so `dvc repro` stops at evaluate.
FLOW_STAGES = (*STAGES, "promote")

log = logging.getLogger("flows.pipeline")  # by name: deployments load this file by path


@flow(name="tunedex-pipeline", flow_run_name="{config_path}", on_failure=[notify_failure],
      on_crashed=[notify_failure])
def pipeline(config_path: str = DEFAULT_CONFIG_PATH, overrides: dict[str, Any] | None = None,
             force: bool = False) -> dict[str, Any]:
    """Run the tunedex pipeline for one config; return the parent MLflow run id and stage outputs.

    Skips everything (in seconds) when the data, config and code are those of a registered
    release, unless `force` or `schedule.skip_unchanged: false`.
    """
    cfg = load_config(config_path, overrides)
    # 0. The registry must be reachable before hours of training are spent.
    check_registry(cfg)
    with write_lock(cfg, f"pipeline {config_path}"):
        if cfg.schedule.skip_unchanged and not force:
            same = unchanged_release(cfg)
            if same is not None:
                reason = (f"data, config and code are unchanged since release v{same['version']} "
                          f"({same['role']}, gate {same['gate']}; inputs {same['inputs']}): "
                          "nothing to train. Use --force to retrain anyway.")
                log.info("pipeline skipped: %s", reason)
                return {"skipped": True, "reason": reason, "release": same["version"]}
        return run_stages(cfg)


def run_stages(cfg: Any) -> dict[str, Any]:
    """Every stage in order inside one MLflow parent run (the write lock is held)."""
    with pipeline_run(cfg, run_name="pipeline") as run_id:
        # 1. Validate the raw data (stops the run on any failed expectation).
        report = validate(cfg, run_id)
        # 2. Split, leakage-check and chunk.
        prepared = prepare(cfg, run_id)
        # 3. LoRA-train the retriever on (question, relevant chunk) pairs.
        retriever = train_retriever(cfg, run_id)
        # 4. Embed chunks into LanceDB for the base and the candidate retriever.
        tables = index(cfg, run_id)
        # 5. LoRA-train the generator; part of its examples carry retrieved context.
        generator = train_generator(cfg, run_id)
        # 6. Scoreboard: retrieval (BM25/base/LoRA/hybrid), answers (base/finetuned/rag/hybrid).
        scoreboard = evaluate(cfg, run_id)
        # 7. Register the release; move `champion` only if the gate passes.
        release = promote(cfg, run_id)
    return {"skipped": False, "run_id": run_id, "validation": report.to_dict(),
            "prepare": prepared, "train_retriever": retriever, "index": tables,
            "train_generator": generator, "evaluate": scoreboard, "promote": release}
