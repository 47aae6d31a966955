"""A release's per-question results in the registry: logged by promote with the release, read
back when a later candidate is paired against it (tasks/lib/gate.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

ARTIFACT_DIR = "evaluate"  # in the run that registered the release (the promote run)
PER_QUESTION_ARTIFACT = f"{ARTIFACT_DIR}/per_question.json"


def log_per_question(per_question: dict[str, Any]) -> None:
    """Log evaluate's per-question results with the release the active run registers."""
    import mlflow

    mlflow.log_dict(per_question, PER_QUESTION_ARTIFACT)


def release_per_question(c: Any, version: Any) -> dict[str, Any] | None:
    """The per-question results logged with a registered version; None for a release from
    before they were logged. Other registry failures are raised."""
    if PER_QUESTION_ARTIFACT not in {f.path for f in c.list_artifacts(version.run_id,
                                                                      ARTIFACT_DIR)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = c.download_artifacts(version.run_id, PER_QUESTION_ARTIFACT, tmp)
        return json.loads(Path(path).read_text(encoding="utf-8"))
