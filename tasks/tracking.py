"""MLflow helpers: one parent run per pipeline run, a nested run per stage, datasets, tags."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tasks.config import Config, flatten

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's param value limit; longer values are cut


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts as a metric or tag key ("ndcg@10" -> "ndcg_at_10")."""
    return name.replace("@", "_at_")


def from_mlflow_key(key: str) -> str:
    """The metric name behind mlflow_key."""
    return key.replace("_at_", "@")


def file_md5(path: str | Path) -> str | None:
    """MD5 of a file's bytes (what DVC records for a file), or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_state() -> dict[str, str]:
    """The current git commit and whether the work tree has changes ("unknown" outside git)."""
    def _git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit or "unknown",
            "git.dirty": "unknown" if status is None else str(bool(status)).lower()}


def data_tags(cfg: Config) -> dict[str, str]:
    """Data version tags: MD5s of the raw files (the values DVC records) plus the git state."""
    tags = {
        "data.corpus_path": cfg.paths.corpus_path,
        "data.corpus_md5": file_md5(cfg.paths.corpus_path) or "missing",
        "data.qa_path": cfg.paths.qa_path,
        "data.qa_md5": file_md5(cfg.paths.qa_path) or "missing",
    }
    return {**tags, **git_state()}


def configure_tracking(cfg: Config) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.project.name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(cfg.project.name,
                                    artifact_location=cfg.tracking.artifact_location)


def log_params_flat(data: dict[str, Any], prefix: str = "") -> None:
    """Log nested config data as flat MLflow params."""
    import mlflow

    params = {k: str(v)[:MAX_PARAM_CHARS] for k, v in flatten(data, prefix).items()}
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params per batch
        mlflow.log_params(dict(list(params.items())[start:start + 100]))


def log_json_artifact(data: Any, name: str, artifact_path: str | None = None) -> None:
    """Log a JSON-serialisable object as an artifact file."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        mlflow.log_artifact(str(path), artifact_path)


@contextmanager
def pipeline_run(cfg: Config, run_name: str) -> Iterator[str]:
    """Start the parent run: resolved config as params and artifact, data and git tags."""
    import mlflow

    experiment_id = configure_tracking(cfg)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run:
        resolved = cfg.to_dict()
        log_params_flat(resolved)
        mlflow.set_tags({"tunedex.profile": cfg.project.profile, **data_tags(cfg)})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "resolved_config.yaml"
            path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
            mlflow.log_artifact(str(path))
        log.info("MLflow parent run %s (%s) in %s", run.info.run_id, run_name,
                 cfg.tracking.tracking_uri)
        yield run.info.run_id


@contextmanager
def stage_run(cfg: Config, stage: str, parent_run_id: str | None) -> Iterator[str]:
    """Start the nested run of one stage, named after the stage, with its config section.

    Holds the write lock (tasks/lock.py) for the stage: free inside a flow that holds it, and
    what keeps a manual `dvc repro`/`tunedex stage` from interleaving with a scheduled run."""
    import mlflow

    from tasks.lock import write_lock

    with write_lock(cfg, f"stage {stage}"):
        experiment_id = configure_tracking(cfg)
        if parent_run_id is None:  # a stage run on its own (DVC, `tunedex stage`): give it a parent
            with pipeline_run(cfg, f"stage-{stage}") as parent_id, \
                    stage_run(cfg, stage, parent_id) as run_id:
                yield run_id
            return
        with mlflow.start_run(run_name=stage, experiment_id=experiment_id, nested=True,
                              parent_run_id=parent_run_id) as run:
            section = cfg.to_dict().get(stage)
            if isinstance(section, dict):
                log_params_flat(section, f"{stage}.")
            mlflow.set_tag("tunedex.stage", stage)
            yield run.info.run_id


def log_dataset(df: Any, source: str, name: str, context: str) -> None:
    """Log a DataFrame as an MLflow dataset input (with digest) of the active run."""
    import mlflow

    flat = df.copy()
    for col in flat.columns:  # lists/dicts are not hashable for the digest: log them as JSON
        if flat[col].map(lambda v: isinstance(v, list | dict)).any():
            flat[col] = flat[col].map(lambda v: json.dumps(v, ensure_ascii=False))
    with warnings.catch_warnings():  # schema-inference hints about int columns; not actionable
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(flat, source=source, name=name)
        mlflow.log_input(dataset, context=context)


def record_training(cfg: Config, stage: str, history: list[dict[str, Any]],
                    stats: dict[str, Any], adapter_dir: Path, artifact_path: str) -> Path:
    """Log a training stage: loss curve, numeric stats, the adapter; write its metrics.json."""
    import mlflow

    for entry in history:
        mlflow.log_metric("train_loss", entry["loss"], step=int(entry["step"]))
    mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
    mlflow.log_artifacts(str(adapter_dir), artifact_path)
    report = Path(cfg.paths.reports_dir) / stage / "metrics.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(stats, indent=2) + "\n")
    return report
