"""What reruns when: one record (dvc.lock) for the flow and `dvc repro`, plus the release-level skip.

- **Per stage**: before running a stage, the flow asks DVC whether the stage is up to date (its
  data, params, code closure and upstream outputs match dvc.lock). If so, it reuses the outputs;
  if not, it runs the stage and records it with `dvc commit`, exactly what `dvc repro` writes.
  So after `make pipeline`, `dvc status` is clean; after `dvc repro`, the flow trains nothing.
  This applies when the flow runs the config dvc.yaml names, without --set overrides, and
  dvc.yaml is current for it; otherwise every stage runs (and the reason is logged).
- **Per release** (tasks/lib/release_skip.py): a retrain whose data, config and code match a
  registered release skips everything, promote included, in seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# ---- per stage: DVC ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Incremental:
    """Whether the flow may skip up-to-date stages, and why (or why not)."""

    enabled: bool
    reason: str
    root: str | None = None  # the DVC repository


def dvc_plan(config_path: str, overrides: dict[str, Any] | None, force: bool,
             root: Path | None = None) -> Incremental:
    """Per-stage skipping applies only to the config dvc.yaml is rendered for, as rendered."""
    from tasks.lib.stages import ROOT, dvc_yaml_config

    root = Path(root or ROOT)
    dvc_yaml = root / "dvc.yaml"
    target = dvc_yaml_config(dvc_yaml)
    if force:
        return Incremental(False, "--force: every stage runs")
    if not (root / ".dvc").is_dir() or target is None:
        return Incremental(False, f"no DVC project at {root}: every stage runs")
    if overrides:
        return Incremental(False, "--set overrides are not in dvc.lock's params: every stage runs")
    if Path(config_path).resolve() != (root / target).resolve():
        return Incremental(False, f"dvc.yaml runs {target}, not {config_path}: every stage runs "
                                  f"(`tunedex dvc-yaml --config {config_path}` renders it for this one)")
    stale = dvc_yaml_drift(root, target)
    if stale:
        return Incremental(False, f"dvc.yaml is not current for {target} ({stale}): every stage "
                                  f"runs; `tunedex dvc-yaml --config {target}` renders it")
    return Incremental(True, f"stages up to date in dvc.lock ({target}) are reused", str(root))


def dvc_yaml_drift(root: Path, config_path: str) -> str | None:
    """What differs between dvc.yaml and the one the stage table renders now (None: same)."""
    import yaml

    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config
    from tasks.lib.stages import render_dvc_yaml

    cfg = load_config(root / config_path)
    raw = yaml.safe_load((root / config_path).read_text(encoding="utf-8")) or {}
    want = yaml.safe_load(render_dvc_yaml(Catalog(cfg.paths), config_path, raw, root))
    have = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    diff = [name for name in want["stages"] if want["stages"][name] != have.get("stages", {}).get(name)]
    return f"stages {', '.join(diff)} differ" if diff else None


def _repo(root: str):
    from dvc.repo import Repo

    return Repo(root)


def stage_status(root: str, stage: str) -> dict[str, Any]:
    """DVC's status of one stage (empty: up to date with dvc.lock)."""
    with _repo(root) as repo:
        return repo.status(targets=[stage])


def describe_status(status: dict[str, Any], shown: int = 3) -> str:
    """A short reason a stage reruns: which deps, params or outs changed (a few names each)."""
    parts = []
    for entries in status.values():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, str):
                parts.append(entry)
                continue
            for kind, changed in entry.items():
                names = list(changed.items()) if isinstance(changed, dict) else [(changed, "")]
                listed = ", ".join(f"{k} ({v})" if v else str(k) for k, v in names[:shown])
                more = f" and {len(names) - shown} more" if len(names) > shown else ""
                parts.append(f"{kind}: {listed}{more}")
    return "; ".join(parts) or "not in dvc.lock"


def commit_stage(root: str, stage: str) -> None:
    """Record a stage's current deps, params and outs in dvc.lock (what `dvc repro` writes)."""
    with _repo(root) as repo:
        repo.commit(stage, force=True)


def run_or_reuse(ctx: Any, stage: str, run: Callable[[], dict[str, Any]],
                 still_valid: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Run a stage, or reuse its outputs when DVC says it is up to date (and `still_valid`,
    which checks what DVC cannot see, e.g. LanceDB tables, returns no reason to rerun)."""
    from dvc.lock import LockError

    plan: Incremental | None = getattr(ctx, "incremental", None)
    if plan is None or not plan.enabled:
        return run()
    try:
        status = stage_status(plan.root, stage)
    except LockError as err:  # a `dvc repro` holds DVC's lock: run, but do not record
        log.warning("%s: running without DVC's record (%s)", stage, err)
        return run()
    reason = describe_status(status) if status else (still_valid() if still_valid else None)
    if reason is None:
        return reuse_outputs(ctx, stage)
    log.info("%s: running (%s)", stage, reason)
    result = run()
    try:
        commit_stage(plan.root, stage)
    except LockError as err:
        log.warning("%s: ran, but not recorded in dvc.lock (%s); it reruns next time", stage, err)
    return result


def reuse_outputs(ctx: Any, stage: str) -> dict[str, Any]:
    """A skipped stage's result: its recorded metrics and outputs, and a tagged MLflow run."""
    import mlflow

    from tasks.lib.stages import BY_NAME
    from tasks.lib.tracking import stage_run

    spec, cat = BY_NAME[stage], ctx.catalog
    metrics_path = spec.metrics(cat)[0]
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    with stage_run(ctx, stage):
        mlflow.set_tags({"tunedex.skipped": "true",
                         "tunedex.skip_reason": "up to date in dvc.lock: outputs reused"})
    log.info("%s: up to date (dvc.lock): outputs reused", stage)
    return {"skipped": True, "metrics": metrics,
            "outputs": [str(p) for p in spec.outs(cat) + spec.reports(cat)]}
