"""promote: register the candidate as one release and move `champion` only if it passes the gate.

Reads the adapters (<adapters_dir>/retriever, /generator), reports/index/index.json (the table and
version built by the candidate retriever), reports/evaluate/metrics.json and the validation
summary. Registers both adapters (with tags naming all of that), compares the gate's metrics with
the champion's, moves `champion` (both models, retriever last) or sets `challenger`, and writes
reports/promote/decision.{json,md}. Not a DVC stage: it changes the registry, not files DVC tracks.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import Config, GateRule, flatten

log = logging.getLogger(__name__)

# ---- pure: the gate ------------------------------------------------------------------------------


def check_rule(rule: GateRule, candidate: float, champion: float | None) -> dict[str, Any]:
    """One rule's verdict with every number it used; `change` is positive when the candidate is better."""
    sign = 1.0 if rule.higher_is_better else -1.0
    row: dict[str, Any] = {"metric": rule.metric, "candidate": candidate, "champion": champion,
                           "change": None, "checks": [], "passed": True}

    def check(name: str, ok: bool, text: str) -> None:
        row["checks"].append({"check": name, "passed": ok, "text": text})
        row["passed"] = row["passed"] and ok

    if rule.floor is not None:
        ok = candidate >= rule.floor if rule.higher_is_better else candidate <= rule.floor
        check("floor", ok, f"value {candidate:.4g} (floor {'>=' if rule.higher_is_better else '<='} "
                           f"{rule.floor:g})")
    if champion is not None:
        change = sign * (candidate - champion)
        if rule.relative:
            change = change / abs(champion) if champion else (0.0 if change == 0 else math.copysign(
                math.inf, change))
        row["change"] = change
        unit = " (relative)" if rule.relative else ""
        if rule.min_improvement is not None:
            check("min_improvement", change >= rule.min_improvement - 1e-12,
                  f"improvement {change:+.4g} (need >= {rule.min_improvement:g}{unit})")
        if rule.max_regression is not None:
            regression = -change if change < 0 else 0.0
            check("max_regression", change >= -rule.max_regression - 1e-12,
                  f"regression {regression:.4g} (allowed <= {rule.max_regression:g}{unit})")
    return row


def evaluate_gate(rules: tuple[GateRule, ...], candidate: dict[str, float],
                  champion: dict[str, float] | None) -> dict[str, Any]:
    """Every rule against the candidate's and champion's metrics; promoted only if all pass.

    Without a champion only the floors apply. A metric the candidate lacks is a config error; one
    the champion lacks (an older release) is compared on its floor only and says so.
    """
    from tasks.errors import ConfigError

    rows = []
    for rule in rules:
        if rule.metric not in candidate:
            raise ConfigError(f"promote.gate: metric '{rule.metric}' is not in the evaluation "
                              f"metrics; known: {', '.join(sorted(candidate))}")
        old = None if champion is None else champion.get(rule.metric)
        row = check_rule(rule, candidate[rule.metric], old)
        if champion is not None and old is None:
            row["note"] = "champion has no value for this metric: floor only"
        elif not row["checks"]:
            row["note"] = "no champion yet: nothing to compare"
        rows.append(row)
    return {"promoted": all(r["passed"] for r in rows), "first_release": champion is None,
            "rules": rows}


def decision_markdown(decision: dict[str, Any]) -> str:
    """The gate as a table a reviewer can read: every compared number and each check."""
    cand, champ = decision["candidate_version"], decision.get("champion_version")
    verdict = "PROMOTED" if decision["promoted"] else "NOT PROMOTED"
    lines = [f"# Release gate: {verdict}", "",
             f"Candidate: retriever v{cand['retriever']}, generator v{cand['generator']}  ",
             "Champion: " + (f"retriever v{champ['retriever']}, generator v{champ['generator']}"
                             if champ else "none (first release: absolute floors only)"), "",
             "| metric | candidate | champion | change | checks | result |",
             "|---|---:|---:|---:|---|---|"]
    for r in decision["rules"]:
        champion = "n/a" if r["champion"] is None else f"{r['champion']:.4g}"
        change = "n/a" if r["change"] is None else f"{r['change']:+.4g}"
        checks = "; ".join(c["text"] for c in r["checks"]) or r.get("note", "")
        lines.append(f"| {r['metric']} | {r['candidate']:.4g} | {champion} | {change} | {checks} | "
                     f"{'pass' if r['passed'] else 'FAIL'} |")
    lines += ["", decision["summary"], ""]
    return "\n".join(lines)


def summarize(decision: dict[str, Any]) -> str:
    cand = decision["candidate_version"]["retriever"]
    if decision["promoted"]:
        return f"release v{cand} is the new champion" + (
            " (first release)" if decision["first_release"] else "")
    failed = [f"{r['metric']}: " + "; ".join(c["text"] for c in r["checks"] if not c["passed"])
              for r in decision["rules"] if not r["passed"]]
    return f"release v{cand} is challenger; champion unchanged. Failed: " + " | ".join(failed)


# The config sections that do not change what a retrain would produce.
NOT_INPUTS = ("paths", "tracking", "promote", "schedule", "lock")


def inputs_digest(data_md5s: dict[str, str | None], config: dict[str, Any], code: str) -> str:
    """One hash of everything a retrain depends on: data content, config, code."""
    import hashlib

    relevant = {k: v for k, v in config.items() if k not in NOT_INPUTS}
    blob = json.dumps({"data": data_md5s, "config": relevant, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- effects ---------------------------------------------------------------------------------


def code_digest() -> str:
    """SHA-256 over the pipeline's code (tasks/*.py, flows/pipeline.py): what DVC lists as deps."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted([*root.joinpath("tasks").glob("*.py"), root / "flows" / "pipeline.py"]):
        h.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def release_inputs(cfg: Config) -> str:
    """The inputs digest of a retrain with this config, now."""
    from tasks.tracking import file_md5

    md5s = {"corpus": file_md5(cfg.paths.corpus_path), "qa": file_md5(cfg.paths.qa_path)}
    return inputs_digest(md5s, cfg.to_dict(), code_digest())


def unchanged_release(cfg: Config) -> dict[str, Any] | None:
    """The registered release built from exactly these inputs (the champion, or the newest
    version when the gate rejected it), or None when something changed or nothing is registered."""
    from tasks import registry

    digest = release_inputs(cfg)
    c = registry.client(cfg)
    champion = registry.alias_version(c, cfg.promote.retriever_model, registry.CHAMPION)
    newest = next(iter(registry.all_versions(c, cfg.promote.retriever_model)), None)
    for version, role in ((champion, "champion"), (newest, "newest version")):
        if version is not None and dict(version.tags).get("release.inputs") == digest:
            return {"version": int(version.version), "role": role, "inputs": digest,
                    "gate": dict(version.tags).get("gate.decision")}
    return None




def read_json(path: Path, stage: str) -> dict[str, Any]:
    from tasks.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{path} not found: run `tunedex stage {stage}` (or the pipeline) first")
    return json.loads(path.read_text())


def candidate_inputs(cfg: Config) -> dict[str, Any]:
    """What the promote stage registers: adapters, pinned table, metrics, validation result."""
    from tasks.errors import ConfigError
    from tasks.search import load_index_info
    from tasks.train_generator import generator_adapter_dir

    reports = Path(cfg.paths.reports_dir)
    info = load_index_info(cfg)
    if "candidate" not in info["tables"]:
        raise ConfigError(f"{reports / 'index' / 'index.json'} has no candidate table: run "
                          "`tunedex stage train_retriever` and `tunedex stage index` first")
    adapters = {"retriever": Path(cfg.paths.adapters_dir) / "retriever",
                "generator": generator_adapter_dir(cfg)}
    for role, path in adapters.items():
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"{path}: no trained adapter; run `tunedex stage train_{role}` first")
    metrics = {k: float(v) for k, v in flatten(read_json(reports / "evaluate" / "metrics.json",
                                                         "evaluate")).items()}
    unknown = [r.metric for r in cfg.promote.gate if r.metric not in metrics]
    if unknown:  # before anything is registered
        raise ConfigError(f"promote.gate: metric(s) {', '.join(unknown)} not in "
                          f"{reports / 'evaluate' / 'metrics.json'}; known: {', '.join(sorted(metrics))}")
    validation = read_json(reports / "validation" / "summary.json", "validate")
    from tasks.models import retriever_base_dir, retriever_fingerprint

    built_by = retriever_fingerprint(cfg.models.retriever_id, retriever_base_dir(cfg),
                                     adapters["retriever"])
    if info["tables"]["candidate"].get("fingerprint") != built_by:
        raise ConfigError(f"{reports / 'index' / 'index.json'} names a table built by another "
                          f"retriever than {adapters['retriever']} (fingerprint "
                          f"{info['tables']['candidate'].get('fingerprint')} vs {built_by}): run "
                          "`tunedex stage index` (and evaluate) before promoting")
    return {"index": info, "table": info["tables"]["candidate"], "adapters": adapters,
            "metrics": metrics,
            "validation": validation}


def local_abspath(uri: str) -> str:
    """A local LanceDB directory as an absolute path (serving may run from another directory)."""
    import os

    return uri if "://" in uri else os.path.abspath(uri)


def release_tags(cfg: Config, cand: dict[str, Any], parent_run_id: str, run_id: str) -> dict[str, str]:
    """Tags every version of the release carries (the design's release record)."""
    from tasks.tracking import data_tags, mlflow_key

    table, validation = cand["table"], cand["validation"]
    tags = {"index.table": table["table"],
            "index.version": str(table["version"]), "index.rows": str(table["rows"]),
            "index.uri": local_abspath(cand["index"]["index_uri"]),
            "index.fingerprint": table["fingerprint"],
            "retriever.base_model": cfg.models.retriever_id,
            "generator.base_model": cfg.models.generator_id,
            "validation.success": str(bool(validation.get("success"))).lower(),
            "validation.checked": str(validation.get("checked")),
            "pipeline.run_id": parent_run_id, "promote.run_id": run_id,
            "prepare.chunk_tokens": str(cfg.prepare.chunk_tokens),
            "prepare.chunk_overlap": str(cfg.prepare.chunk_overlap),
            "tunedex.profile": cfg.project.profile, **data_tags(cfg)}
    for rule in cfg.promote.gate:
        tags[f"metric.{mlflow_key(rule.metric)}"] = f"{cand['metrics'][rule.metric]:.4f}"
    return tags


def log_adapter_model(cfg: Config, role: str, adapter: Path) -> str:
    """Log one adapter as a pyfunc model (adapter + base id + resolved config); return its URI."""
    import mlflow

    from tasks.registry import ADAPTER_ARTIFACT, PIP_REQUIREMENTS, GeneratorModel, RetrieverModel

    python_model = RetrieverModel() if role == "retriever" else GeneratorModel()
    base = cfg.models.retriever_id if role == "retriever" else cfg.models.generator_id
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    pyfunc_log.setLevel(logging.ERROR)  # the CloudPickle notice: the class is imported, not pickled
    try:
        info = mlflow.pyfunc.log_model(
            name=f"{role}_model", python_model=python_model,
            artifacts={ADAPTER_ARTIFACT: str(adapter)},
            model_config={f"{role}_base_model_id": base,  # role-named: logged as run params too
                          "models_dir": str(Path(cfg.paths.models_dir).resolve()),
                          "max_new_tokens": cfg.generate.max_new_tokens},
            pip_requirements=PIP_REQUIREMENTS, metadata={"resolved_config": cfg.to_dict()})
    finally:
        pyfunc_log.setLevel(level)
    return info.model_uri


def write_decision(cfg: Config, decision: dict[str, Any]) -> Path:
    out = Path(cfg.paths.reports_dir) / "promote"
    out.mkdir(parents=True, exist_ok=True)
    (out / "decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    (out / "decision.md").write_text(decision_markdown(decision), encoding="utf-8")
    return out


def promote_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Register the candidate release; move `champion` if the gate passes, else set `challenger`."""
    import mlflow

    from tasks import registry
    from tasks.tracking import log_json_artifact, mlflow_key, stage_run

    if parent_run_id is None:  # run on its own; inside the flow, the flow checked at its start
        registry.check_registry(cfg)
    cand = candidate_inputs(cfg)
    mlflow.set_registry_uri(registry.registry_uri(cfg))
    with stage_run(cfg, "promote", parent_run_id) as run_id:  # holds the write lock
        parent = mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId", run_id)
        registry.repair_mirror(cfg)
        c = registry.client(cfg)
        champion = registry.alias_version(c, cfg.promote.retriever_model, registry.CHAMPION)
        champion_release = None if champion is None else registry.release_from_version(champion)
        champion_metrics = None if champion is None else registry.version_metrics(c, champion)

        mlflow.log_metrics({f"eval.{mlflow_key(k)}": v for k, v in cand["metrics"].items()})
        tags = release_tags(cfg, cand, parent, run_id)
        uris = {role: log_adapter_model(cfg, role, path) for role, path in cand["adapters"].items()}
        gen_version = registry.register(cfg.promote.generator_model, uris["generator"], tags)
        ret_version = registry.register(cfg.promote.retriever_model, uris["retriever"],
                                        {**tags, "release.generator_version": str(gen_version)})

        def tag_both(tags: dict[str, str]) -> None:
            for name, version in ((cfg.promote.generator_model, gen_version),
                                  (cfg.promote.retriever_model, ret_version)):
                for key, value in tags.items():
                    c.set_model_version_tag(name, str(version), key, value)

        tag_both({"release.retriever_version": str(ret_version),
                  "release.generator_version": str(gen_version)})

        decision = evaluate_gate(cfg.promote.gate, cand["metrics"], champion_metrics)
        decision["candidate_version"] = {"retriever": ret_version, "generator": gen_version}
        decision["champion_version"] = None if champion_release is None else {
            "retriever": champion_release.retriever_version,
            "generator": champion_release.generator_version}
        decision["summary"] = summarize(decision)
        outcome = "promoted" if decision["promoted"] else "rejected"
        tag_both({"gate.decision": outcome})
        if decision["promoted"]:
            if champion_release is not None:
                c.set_model_version_tag(cfg.promote.retriever_model, str(ret_version),
                                        "release.previous", str(champion_release.retriever_version))
            registry.move_release(cfg, registry.CHAMPION, ret_version, gen_version)
        else:
            registry.move_release(cfg, registry.CHALLENGER, ret_version, gen_version)
        # Last: what the skip-if-unchanged check reads. A promote that died before this point
        # leaves no inputs tag, so the next scheduled retrain runs (and repairs) instead of skipping.
        tag_both({"release.inputs": release_inputs(cfg)})

        for row in decision["rules"]:
            key = mlflow_key(row["metric"])
            mlflow.log_metric(f"gate.{key}.passed", float(row["passed"]))
            if row["change"] is not None and math.isfinite(row["change"]):
                mlflow.log_metric(f"gate.{key}.change", row["change"])
            if row["champion"] is not None:
                mlflow.log_metric(f"gate.{key}.champion", row["champion"])
        mlflow.log_metric("gate.promoted", float(decision["promoted"]))
        mlflow.set_tags({"gate.decision": outcome, "release.retriever_version": str(ret_version),
                         "release.generator_version": str(gen_version)})
        out = write_decision(cfg, decision)
        mlflow.log_artifacts(str(out), "promote")
        log_json_artifact(cand["index"], "index.json", "promote")
        log.info("promote: %s", decision["summary"])
    return decision


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="promote")
def promote(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Register the release and apply the gate (not retried: it moves registry aliases)."""
    return promote_stage(cfg, parent_run_id)
