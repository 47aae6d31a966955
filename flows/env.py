"""Offline, quiet defaults for Prefect, MLflow, DVC and Hugging Face (set before their import)."""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks,flows,tunedex",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # stage runs outside a flow (DVC)
    "DO_NOT_TRACK": "true",  # MLflow reads only this literal
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar per registered adapter copy
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
}


def set_offline_env(project_dir: str | Path = ".", allow_download: bool = False) -> None:
    """Fill in offline defaults the user has not set (call before importing prefect/mlflow)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(Path(project_dir).resolve() / ".prefect"))
    if allow_download:
        os.environ["HF_HUB_OFFLINE"] = "0"
