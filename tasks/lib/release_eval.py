"""A release's per-question results in the registry: logged by promote with the release, read
back when a later candidate is paired against it (tasks/lib/gate.py), or re-scored on the
current eval set (tasks/lib/rescore.py) when they cannot be paired."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARTIFACT_DIR = "evaluate"  # in the run that registered the release (the promote run)
PER_QUESTION_ARTIFACT = f"{ARTIFACT_DIR}/per_question.json"


def log_per_question(per_question: dict[str, Any]) -> None:
    """Log evaluate's per-question results with the release the active run registers."""
    import mlflow

    mlflow.log_dict(per_question, PER_QUESTION_ARTIFACT)


def log_rescored(per_question: dict[str, Any]) -> dict[str, Any]:
    """Log the champion's re-scored results with the promote run that compared against them."""
    import mlflow

    mlflow.log_dict(per_question, "promote/champion_per_question.json")
    return per_question


def release_per_question(c: Any, version: Any) -> dict[str, Any] | None:
    """The per-question results logged with a registered version; None for a release from
    before they were logged. Other registry failures are raised."""
    if PER_QUESTION_ARTIFACT not in {f.path for f in c.list_artifacts(version.run_id,
                                                                      ARTIFACT_DIR)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = c.download_artifacts(version.run_id, PER_QUESTION_ARTIFACT, tmp)
        return json.loads(Path(path).read_text(encoding="utf-8"))


def read_champion(c: Any, reg: Any, section: Any, cand: dict[str, Any],
                  rescore: Callable[[Any, dict[str, Any]], dict[str, Any]]) -> tuple[Any, ...]:
    """(release, logged metrics, per-question results, how they were obtained) of the champion;
    all None without one. Per-question results that cannot be paired with the candidate's (none
    logged, another eval set) are replaced by the champion re-scored on the current eval set."""
    from tasks.lib import registry
    from tasks.lib.errors import first_line
    from tasks.lib.gate import plan_pairing

    champion = registry.alias_version(c, reg.retriever_model, registry.CHAMPION)
    if champion is None:
        return None, None, None, None
    release = registry.release_from_version(champion)
    metrics, logged = registry.version_metrics(c, champion), release_per_question(c, champion)
    if cand["per_question"] is None or plan_pairing(cand["per_question"], logged,
                                                    section.min_shared)[0] is not None:
        return release, metrics, logged, None
    if not section.rescore:
        return release, metrics, logged, "rescore by setting promote.rescore: true"
    try:
        rescored = rescore(release, cand["per_question"])
    except Exception as err:  # noqa: BLE001 - any failure: the point comparison, named, not a crash
        log.warning("promote: re-scoring the champion failed: %s", err)
        return release, metrics, logged, f"re-scoring failed: {first_line(err)}"
    why = "none were logged" if logged is None else "its logged ones are from another eval set"
    return release, metrics, rescored, f"champion re-scored on the current eval set ({why})"
