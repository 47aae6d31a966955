"""promote: register the candidate as one release and move `champion` only if it passes the gate.

Reads the adapters (<adapters_dir>/retriever, /generator), reports/index/index.json (the table and
version built by the candidate retriever), reports/evaluate/metrics.json and per_question.json,
and the validation summary. Registers the release as three models (the retriever and generator
adapters, and tunedex-rag: both plus the pinned table, from code), tagged with all of that and
the eval-set digest, with the per-question results as an artifact of its run; compares
candidate and champion per question on the questions both answered (paired intervals; point
estimates for latencies), re-scoring the champion on the current eval set when its own results
cannot be paired (the `evaluate` section: how), moves `champion` (generator and rag first,
retriever last: the commit point) or sets `challenger`, describes every version (headline numbers
from answers.json/retrieval.json and the decision: the registry UI's Markdown), and writes
reports/promote/decision.{json,md}. Not a DVC stage: it changes the registry, not files DVC tracks.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from prefect import task

from tasks.lib.choice import resolve_chosen
from tasks.lib.config import (
    EvaluateConfig,
    GenerateConfig,
    IndexConfig,
    PrepareConfig,
    PromoteConfig,
    flatten,
)
from tasks.lib.context import StageContext
from tasks.lib.errors import ConfigError
from tasks.lib.gate import decision_markdown, evaluate_gate, judged, plan_pairing, summarize

log = logging.getLogger(__name__)

# ---- pure ---------------------------------------------------------------------------------------


def local_abspath(uri: str) -> str:
    """A local LanceDB directory as an absolute path (serving may run from another directory)."""
    return uri if "://" in uri else os.path.abspath(uri)


def gate_metrics(section: PromoteConfig, metrics: dict[str, Any], path: Path) -> dict[str, float]:
    """The evaluation metrics as a flat dict; refuse gate rules naming a metric not among them."""
    flat = {k: float(v) for k, v in flatten(metrics).items()}
    unknown = [r.metric for r in section.gate if r.metric not in flat]
    if unknown:  # before anything is registered
        raise ConfigError(f"promote.gate: metric(s) {', '.join(unknown)} not in {path}; known: "
                          f"{', '.join(sorted(flat))}")
    return flat


def release_tags(section: PromoteConfig, prepare: PrepareConfig, ctx: StageContext,
                 cand: dict[str, Any], run_ids: tuple[str, str]) -> dict[str, str]:
    """Tags every version of the release carries (the design's release record)."""
    from tasks.lib.per_question import eval_set_digest
    from tasks.lib.tracking import data_tags, mlflow_key

    table, validation = cand["table"], cand["validation"]
    tags = {"index.table": table["table"],
            "index.version": str(table["version"]), "index.rows": str(table["rows"]),
            "index.uri": local_abspath(cand["index"]["index_uri"]),
            "index.fingerprint": table["fingerprint"],
            "retriever.base_model": ctx.models.retriever_id,
            "generator.base_model": ctx.models.generator_id,
            "validation.success": str(bool(validation.get("success"))).lower(),
            "validation.checked": str(validation.get("checked")),
            "pipeline.run_id": run_ids[0], "promote.run_id": run_ids[1],
            "prepare.chunk_tokens": str(prepare.chunk_tokens),
            "prepare.chunk_overlap": str(prepare.chunk_overlap),
            "tunedex.profile": ctx.project.profile, **data_tags(ctx.catalog)}
    if cand.get("method"):  # what serving searches with by default (chosen by evaluate)
        tags["retrieval.method"] = cand["method"]
    for rule in section.gate:
        tags[f"metric.{mlflow_key(rule.metric)}"] = f"{cand['metrics'][rule.metric]:.4f}"
    if cand["per_question"] is not None:  # which questions the metrics were measured on
        tags["eval.digest"] = eval_set_digest(cand["per_question"])
        tags["eval.questions"] = str(len(cand["per_question"]["questions"]))
    return tags


def decide(section: PromoteConfig, seed: int, cand: dict[str, Any], champion: tuple[Any, ...],
           versions: dict[str, int]) -> dict[str, Any]:
    """The gate's decision on the registered candidate: paired on the questions both releases
    answered alike where it can, on point estimates where it cannot (and it says which).
    `champion`: (release, logged metrics, per-question results, how those were obtained)."""
    release, metrics, per_question, origin = champion
    pairing, compared = (None, None) if release is None else plan_pairing(
        cand["per_question"], per_question, section.min_shared, section.bootstrap, seed)
    if compared is not None and origin:  # re-scored, or why it was not
        compared["note"] = " — ".join(n for n in (compared["note"], origin) if n)
    gate = resolve_chosen(section.gate, cand.get("method"))  # retrieval.chosen: the candidate's
    decision = evaluate_gate(gate, cand["metrics"], metrics, pairing)
    decision.update(pairing=compared, candidate_version=versions, champion_version=None
                    if release is None else {"retriever": release.retriever_version,
                                             "generator": release.generator_version})
    decision["summary"] = summarize(decision)
    return decision


# ---- effects ------------------------------------------------------------------------------------


def candidate_inputs(section: PromoteConfig, ctx: StageContext) -> dict[str, Any]:
    """What the promote stage registers: adapters, pinned table, metrics, validation result."""
    from tasks.lib.choice import read_chosen
    from tasks.lib.files import read_json
    from tasks.lib.models import retriever_base_dir, retriever_fingerprint
    from tasks.lib.search import load_index_info

    cat = ctx.catalog
    info = load_index_info(cat)
    if "candidate" not in info["tables"]:
        raise ConfigError(f"{cat.index_info_path} has no candidate table: run "
                          "`tunedex stage train_retriever` and `tunedex stage index` first")
    adapters = {"retriever": cat.retriever_adapter_dir, "generator": cat.generator_adapter_dir}
    for role, path in adapters.items():
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"{path}: no trained adapter; run `tunedex stage train_{role}` first")
    metrics = gate_metrics(section, read_json(cat.evaluate_metrics_path, "evaluate"),
                           cat.evaluate_metrics_path)
    validation = read_json(cat.validation_summary_path, "validate")
    # Missing only when evaluate last ran before per-question results existed: the gate then
    # compares point estimates and says so.
    per_question = (read_json(cat.per_question_path, "evaluate")
                    if cat.per_question_path.is_file() else None)
    built_by = retriever_fingerprint(ctx.models.retriever_id,
                                     retriever_base_dir(ctx.models, cat.models_dir),
                                     adapters["retriever"])
    recorded = info["tables"]["candidate"].get("fingerprint")
    if recorded != built_by:
        raise ConfigError(f"{cat.index_info_path} names a table built by another retriever than "
                          f"{adapters['retriever']} (fingerprint {recorded} vs {built_by}): run "
                          "`tunedex stage index` (and evaluate) before promoting")
    return {"index": info, "table": info["tables"]["candidate"], "adapters": adapters,
            "metrics": metrics, "validation": validation, "per_question": per_question,
            "method": read_chosen(cat.evaluate_dir / "retrieval.json")}



def log_adapter_model(ctx: StageContext, generate: GenerateConfig, role: str, adapter: Path) -> str:
    """Log one adapter as a pyfunc model (adapter + base id + the settings it loads with)."""
    import mlflow

    from tasks.lib.registry import ADAPTER_ARTIFACT, code_paths, model_code, pip_requirements
    from tasks.lib.tracking import section_dict

    base = ctx.models.retriever_id if role == "retriever" else ctx.models.generator_id
    info = mlflow.pyfunc.log_model(
        name=f"{role}_model", python_model=model_code(role),  # from code: nothing pickled
        artifacts={ADAPTER_ARTIFACT: str(adapter)},
        model_config={f"{role}_base_model_id": base,  # role-named: logged as run params too
                      "models_dir": str(ctx.catalog.models_dir),  # relative: portable
                      "max_new_tokens": generate.max_new_tokens},
        pip_requirements=pip_requirements(), code_paths=code_paths(),
        metadata={"models": section_dict(ctx.models), "generate": section_dict(generate)})
    return info.model_uri


def rag_model_config(ctx: StageContext, sections: dict[str, Any], cand: dict[str, Any],
                     versions: tuple[int, int], setup: str) -> dict[str, Any]:
    """The release as tunedex-rag's model_config: base ids, table + pinned version, settings.
    Paths stay as configured (relative), so the model loads from another checkout."""
    from tasks.lib.tracking import section_dict

    return {"retriever_version": versions[0], "generator_version": versions[1],
            "retriever_base_model_id": ctx.models.retriever_id,
            "generator_base_model_id": ctx.models.generator_id,
            "index_uri": ctx.catalog.index_uri, "table": cand["table"]["table"],
            "table_version": int(cand["table"]["version"]), "setup": setup,
            "retrieval_method": cand.get("method"),
            "models_dir": str(ctx.catalog.models_dir),
            **{name: section_dict(section) for name, section in sections.items()}}


def write_decision(out: Path, decision: dict[str, Any]) -> Path:
    from tasks.lib.files import write_json, write_text_atomic

    write_json(out / "decision.json", decision)
    write_text_atomic(out / "decision.md", decision_markdown(decision))
    return out


def log_gate(decision: dict[str, Any]) -> None:
    """Every compared number of the gate as MLflow metrics of the promote run."""
    import mlflow

    from tasks.lib.tracking import mlflow_key

    for row in decision["rules"]:
        key = mlflow_key(row["metric"])
        numbers = {"passed": float(row["passed"]), "change": row["change"],
                   "champion": row["champion"], "paired": float(row["paired"]),
                   **({k: row["interval"][k] for k in ("lo", "hi")} if row["interval"] else {})}
        mlflow.log_metrics({f"gate.{key}.{name}": v for name, v in numbers.items()
                            if v is not None and math.isfinite(v)})
    mlflow.log_metric("gate.promoted", float(decision["promoted"]))


def register_release(reg: Any, tags: dict[str, str], uris: dict[str, str]) -> tuple[int, int]:
    """Register both adapters as one release (each version names the other); (retriever, generator)."""
    from tasks.lib import registry

    gen_version = registry.register(reg.generator_model, uris["generator"], tags)
    ret_version = registry.register(reg.retriever_model, uris["retriever"],
                                    {**tags, "release.generator_version": str(gen_version)})
    registry.tag_release(reg, ret_version, gen_version,
                         {"release.retriever_version": str(ret_version),
                          "release.generator_version": str(gen_version)})
    return ret_version, gen_version


def register_rag(reg: Any, ctx: StageContext, sections: dict[str, Any], cand: dict[str, Any],
                 versions: tuple[int, int], tags: dict[str, str], setup: str) -> int:
    """Register the release as one tunedex-rag version and name it on the retriever version."""
    from tasks.lib import registry

    uri = registry.log_rag_model(rag_model_config(ctx, sections, cand, versions, setup),
                                 cand["adapters"])
    version = registry.register(reg.rag_model, uri, {
        **tags, "release.retriever_version": str(versions[0]),
        "release.generator_version": str(versions[1])})
    registry.client(reg).set_model_version_tag(reg.retriever_model, str(versions[0]),
                                               "release.rag_version", str(version))
    return version


def promote_stage(section: PromoteConfig, prepare: PrepareConfig, generate: GenerateConfig,
                  index: IndexConfig, evaluate: EvaluateConfig, ctx: StageContext,
                  inputs: str) -> dict[str, Any]:
    """Register the candidate release; move `champion` if the gate passes, else set `challenger`.
    `inputs` is the release-inputs digest (tasks/lib/release_skip.py) recorded for skip-if-unchanged."""
    import mlflow

    from tasks.lib import registry
    from tasks.lib.reference import log_reference
    from tasks.lib.release_eval import log_per_question, log_rescored, read_champion
    from tasks.lib.release_text import describe_release
    from tasks.lib.rescore import rescore_release
    from tasks.lib.tracking import log_json_artifact, mlflow_key, stage_run

    reg = registry.RegistryRef.of(ctx.tracking, section, ctx.catalog, ctx.lock)
    if ctx.parent_run_id is None:  # run on its own; inside the flow, the flow checked at its start
        registry.check_registry(reg)
    mlflow.set_registry_uri(reg.registry_uri)
    with stage_run(ctx, "promote", section) as run_id:  # holds the write lock
        cand = candidate_inputs(section, ctx)  # under the lock: what is registered is what was read
        # retrieval.chosen.* -> the candidate's chosen method, for both releases (tasks/lib/choice.py)
        section = section.model_copy(update={"gate": resolve_chosen(section.gate, cand["method"])})
        parent = mlflow.get_run(run_id).data.tags.get("mlflow.parentRunId", run_id)
        registry.repair_mirror(reg)
        c = registry.client(reg)
        champion = read_champion(c, reg, section, cand, lambda release, questions: log_rescored(
            rescore_release(reg, release, ctx, evaluate, generate, index, section.gate,
                            questions, cand["method"])))
        champion_release = champion[0]

        mlflow.log_metrics({f"eval.{mlflow_key(k)}": v for k, v in cand["metrics"].items()})
        # What the release was trained and measured on: the monitor's reference for drift.
        log_reference(ctx.catalog)
        if cand["per_question"] is not None:  # what a later candidate is paired against
            log_per_question(cand["per_question"])
        tags = release_tags(section, prepare, ctx, cand, (parent, run_id))
        uris = {role: log_adapter_model(ctx, generate, role, path)
                for role, path in cand["adapters"].items()}
        ret_version, gen_version = register_release(reg, tags, uris)
        rag_version = register_rag(reg, ctx, {"generate": generate, "index": index}, cand,
                                   (ret_version, gen_version), tags,
                                   judged(section.gate, "answers", "hybrid"))

        decision = decide(section, ctx.seed, cand, champion,
                          {"retriever": ret_version, "generator": gen_version, "rag": rag_version})
        outcome = "promoted" if decision["promoted"] else "rejected"
        registry.tag_release(reg, ret_version, gen_version, {"gate.decision": outcome})
        describe_release(reg, decision, ctx.catalog)  # the registry UI's page: numbers + gate
        if decision["promoted"]:
            if champion_release is not None:
                c.set_model_version_tag(reg.retriever_model, str(ret_version), "release.previous",
                                        str(champion_release.retriever_version))
            registry.move_release(reg, registry.CHAMPION, ret_version, gen_version, rag_version)
        else:
            registry.move_release(reg, registry.CHALLENGER, ret_version, gen_version, rag_version)
        # Last: what the skip-if-unchanged check reads. A promote that died before this point
        # leaves no inputs tag, so the next scheduled retrain runs (and repairs) instead of skipping.
        registry.tag_release(reg, ret_version, gen_version, {"release.inputs": inputs})

        log_gate(decision)
        mlflow.set_tags({"gate.decision": outcome, "release.retriever_version": str(ret_version),
                         "release.generator_version": str(gen_version)})
        out = write_decision(ctx.catalog.promote_dir, decision)
        mlflow.log_artifacts(str(out), "promote")
        log_json_artifact(cand["index"], "index.json", "promote")
        log.info("promote: %s", decision["summary"])
    return decision


# ---- Prefect task -------------------------------------------------------------------------------


@task(name="promote")
def promote(section: PromoteConfig, prepare: PrepareConfig, generate: GenerateConfig,
            index: IndexConfig, evaluate: EvaluateConfig, ctx: StageContext, inputs: str,
            scoreboard: dict[str, Any]) -> dict[str, Any]:
    """Register the release and apply the gate to `scoreboard` (evaluate's result). Not
    retried: it moves registry aliases."""
    return promote_stage(section, prepare, generate, index, evaluate, ctx, inputs)
