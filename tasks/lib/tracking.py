"""MLflow helpers: one parent run per pipeline run, a nested run per stage, datasets, tags."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tasks.lib.config import Config, TrackingConfig, flatten, tracking_uri_source
from tasks.lib.failpoints import failpoint
from tasks.lib.files import data_md5s
from tasks.lib.text import mask_uri

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's param value limit; longer values are cut


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts as a metric or tag key ("ndcg@10" -> "ndcg_at_10")."""
    return name.replace("@", "_at_")


def from_mlflow_key(key: str) -> str:
    """The metric name behind mlflow_key."""
    return key.replace("_at_", "@")


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


def data_tags(cat: Any) -> dict[str, str]:
    """Data version tags: MD5s of the raw files (the values DVC records) plus the git state."""
    md5s = data_md5s(cat.corpus_path, cat.qa_path)
    tags = {"data.corpus_path": str(cat.corpus_path), "data.corpus_md5": md5s["corpus"] or "missing",
            "data.qa_path": cat.qa_label, "data.qa_md5": md5s["qa"] or "missing"}
    return {**tags, **git_state()}


def configure_tracking(tracking: TrackingConfig, experiment: str) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id."""
    import mlflow

    if mask_uri(tracking.tracking_uri) != tracking.tracking_uri:
        # MLflow prints "View run at: <tracking URI>/#/..." after each run, password included.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(tracking.tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(experiment, artifact_location=tracking.artifact_location)


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


def log_tables(tables: dict[str, list[dict[str, Any]]]) -> None:
    """Log lists of rows as MLflow tables (artifact file -> rows): the run's table view in the UI
    and `mlflow.load_table`. Empty tables are skipped."""
    import mlflow

    for artifact_file, rows in tables.items():
        if rows:
            mlflow.log_table({col: [row[col] for row in rows] for col in rows[0]}, artifact_file)


SECRET_KEYS = ("token", "password", "secret")  # config keys whose values are never logged


def is_secret(key: str) -> bool:
    """serve.token, *_password, *_secret — not chunk_tokens or max_new_tokens."""
    key = key.lower()
    return any(key == s or key.endswith(f"_{s}") for s in SECRET_KEYS)


def redact_secrets(data: Any) -> Any:
    """A copy of nested config data with secret values (e.g. serve.token) replaced by '***' and
    passwords inside URIs masked."""
    if isinstance(data, dict):
        return {k: "***" if is_secret(k) and v is not None else redact_secrets(v)
                for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact_secrets(v) for v in data)
    if isinstance(data, str):
        return mask_uri(data)
    return data


@contextmanager
def pipeline_run(cfg: Config, run_name: str) -> Iterator[str]:
    """Start the parent run: resolved config as params and artifact, data and git tags."""
    import mlflow

    from tasks.lib.catalog import Catalog

    experiment_id = configure_tracking(cfg.tracking, cfg.project.name)
    end_orphan_runs(experiment_id)
    with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run, killed_on_signal():
        resolved = redact_secrets(cfg.to_dict())
        log_params_flat(resolved)
        mlflow.set_tags({"tunedex.profile": cfg.project.profile, **data_tags(Catalog(cfg.paths)),
                         **process_tags()})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "resolved_config.yaml"
            path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
            mlflow.log_artifact(str(path))
        log.info("MLflow parent run %s (%s) in %s (%s)", run.info.run_id, run_name,
                 mask_uri(cfg.tracking.tracking_uri), tracking_uri_source(cfg.tracking))
        yield run.info.run_id


@contextmanager
def stage_run(ctx: Any, stage: str, *sections: Any) -> Iterator[str]:
    """Start the run of one stage, named after the stage, with the config sections it reads.

    Nested under ctx.parent_run_id when set (the flow, `tunedex stage`); top-level otherwise.
    Holds the write lock (tasks/lib/lock.py) for the stage: free inside a flow that holds it, and
    what keeps a manual `dvc repro`/`tunedex stage` from interleaving with a scheduled run."""
    import mlflow

    from tasks.lib.lock import write_lock

    with write_lock(ctx.lock, f"stage {stage}"):
        experiment_id = configure_tracking(ctx.tracking, ctx.project.name)
        nested = {"nested": True, "parent_run_id": ctx.parent_run_id} if ctx.parent_run_id else {}
        with mlflow.start_run(run_name=stage, experiment_id=experiment_id, **nested) as run, \
                killed_on_signal():
            for section in sections:
                log_params_flat(section_dict(section), f"{section_name(section)}.")
            mlflow.set_tags({"tunedex.stage": stage, **process_tags()})
            failpoint(f"stage.{stage}")
            yield run.info.run_id


def process_tags() -> dict[str, str]:
    """Which process runs this MLflow run: how the next run tells a killed one from a live one."""
    return {"tunedex.pid": str(os.getpid()), "tunedex.host": socket.gethostname()}


@contextmanager
def killed_on_signal() -> Iterator[None]:
    """End the active run KILLED, not FAILED, when a signal (SIGTERM, Ctrl-C) unwinds it."""
    import mlflow

    try:
        yield
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal":
            mlflow.end_run("KILLED")
        raise


def end_orphan_runs(experiment_id: str) -> list[str]:
    """End as KILLED the runs still RUNNING whose process (on this host) is gone: what a SIGKILL
    or a power cut leaves. Return their ids."""
    from mlflow import MlflowClient

    from tasks.lib.files import pid_alive

    c = MlflowClient()
    host = socket.gethostname()
    ended = []
    for run in c.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=500):
        tags = run.data.tags
        pid = tags.get("tunedex.pid", "")
        if tags.get("tunedex.host") != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        c.set_tag(run.info.run_id, "tunedex.ended_by", f"the next run: process {pid} was gone")
        c.set_terminated(run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    if ended:
        log.warning("ended %d MLflow run(s) left RUNNING by a killed process as KILLED: %s",
                    len(ended), ", ".join(ended))
    return ended


def section_name(section: Any) -> str:
    """The YAML key of a config section object (ValidateConfig -> validate)."""
    from tasks.lib.config import SECTION_KEYS

    return SECTION_KEYS[type(section)]


def section_dict(section: Any) -> dict[str, Any]:
    return section.model_dump(by_alias=True, mode="json")


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


def loss_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The loss curve as DVC plot rows: step and loss only (no timings, so two runs of the same
    inputs write the same file)."""
    return [{"step": int(h["step"]), "loss": round(float(h["loss"]), 6)} for h in history]


def record_training(cat: Any, stage: str, history: list[dict[str, Any]],
                    stats: dict[str, Any], adapter_dir: Path, artifact_path: str) -> Path:
    """Log a training stage: loss curve, numeric stats, the adapter; write its metrics.json and
    its loss curve (reports/<stage>/loss.json, for `dvc plots`)."""
    import mlflow

    from tasks.lib.files import write_json

    for entry in history:
        mlflow.log_metric("train_loss", entry["loss"], step=int(entry["step"]))
    mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
    mlflow.log_artifacts(str(adapter_dir), artifact_path)
    write_json(cat.stage_loss_path(stage), loss_rows(history))
    return write_json(cat.stage_metrics_path(stage), stats)
