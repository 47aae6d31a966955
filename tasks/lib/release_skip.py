"""Skip-if-unchanged for whole releases: a retrain whose data, config and code match a
registered release trains nothing (the per-stage mechanism is tasks/lib/incremental.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# The config sections that do not change what a retrain would produce.
NOT_INPUTS = ("paths", "tracking", "promote", "schedule", "lock", "serve", "monitor")


def inputs_digest(data_md5s: dict[str, str | None], config: dict[str, Any], code: str) -> str:
    """One hash of everything a retrain depends on: data content, config, code."""
    relevant = {k: v for k, v in config.items() if k not in NOT_INPUTS}
    blob = json.dumps({"data": data_md5s, "config": relevant, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pipeline_code(root: Path) -> list[Path]:
    """The files a retrain runs: each flow step's import closure and flows/pipeline.py (so an
    edit of serving code alone does not count as a new release)."""
    from tasks.lib.stages import FLOW_STAGES, import_closure

    files = {name for stage in FLOW_STAGES for name in import_closure(f"tasks.{stage}", root)}
    registered = root / "tasks" / "lib" / "rag_model.py"  # promote logs it by path, as model code
    return sorted([*(root / name for name in files), registered, root / "flows" / "pipeline.py"])


def code_digest(root: Path | None = None) -> str:
    """SHA-256 over the pipeline's code (pipeline_code)."""
    from tasks.lib.stages import ROOT

    root = Path(root or ROOT)
    h = hashlib.sha256()
    for path in pipeline_code(root):
        h.update(str(path.relative_to(root)).encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def release_inputs(cfg: Any) -> str:
    """The inputs digest of a retrain with this config, now."""
    from tasks.lib.files import data_md5s

    md5s = data_md5s(cfg.paths.corpus_path, cfg.paths.qa_path)
    return inputs_digest(md5s, cfg.to_dict(), code_digest())


def skip_disabled(cfg: Any, force: bool = False) -> bool:
    """True when no retrain is ever skipped: `force`, or `schedule.skip_unchanged: false`."""
    return force or not cfg.schedule.skip_unchanged


def skip_reason(cfg: Any, force: bool = False) -> dict[str, Any] | None:
    """The release a retrain with this config would only repeat ({"release", "reason"}), or
    None when it must run (`force`, `schedule.skip_unchanged: false`, or something changed)."""
    from tasks.lib.registry import registry_ref

    if skip_disabled(cfg, force):
        return None
    same = unchanged_release(registry_ref(cfg), release_inputs(cfg))
    if same is None:
        return None
    return {"release": same["version"],
            "reason": f"data, config and code are unchanged since release v{same['version']} "
                      f"({same['role']}, gate {same['gate']}; inputs {same['inputs']}): nothing "
                      "to train. Use --force to retrain anyway."}


def unchanged_release(reg: Any, digest: str) -> dict[str, Any] | None:
    """The registered release built from exactly these inputs (the champion, or the newest
    version when the gate rejected it), or None when something changed or nothing is registered."""
    from tasks.lib import registry

    c = registry.client(reg)
    champion = registry.alias_version(c, reg.retriever_model, registry.CHAMPION)
    newest = next(iter(registry.all_versions(c, reg.retriever_model)), None)
    for version, role in ((champion, "champion"), (newest, "newest version")):
        if version is not None and dict(version.tags).get("release.inputs") == digest:
            return {"version": int(version.version), "role": role, "inputs": digest,
                    "gate": dict(version.tags).get("gate.decision")}
    return None
