"""The MLflow Model Registry side of a release: registered adapters, aliases, rollback, gc.

A release is one version of `tunedex-retriever` plus one of `tunedex-generator`, registered by the
same promote run. The retriever version is the release record: its tags name the paired generator
version, the LanceDB table/version its vectors are in, the data version and the metrics. Serving
resolves `tunedex-retriever@champion` and follows those tags, so the retriever alias is the single
commit point of a promotion: the generator alias moves first and only mirrors it. A crash between
the two moves leaves the previous release served, whole, and the next promote repairs the mirror.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from tasks.errors import ConfigError, ServingError, first_line

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
ADAPTER_ARTIFACT = "adapter"  # the LoRA adapter directory inside each registered model
PIP_REQUIREMENTS = ["tunedex", "torch", "transformers", "peft", "sentence-transformers"]


# ---- registered models: loadable with one call -------------------------------------------------


class RetrieverModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc.load_model("models:/tunedex-retriever@champion").predict(["text"])`:
    unit-length embeddings from the base model with the registered LoRA adapter merged."""

    def load_context(self, context):
        from tasks.models import load_retriever, resolve_model_dir

        conf = context.model_config
        base = resolve_model_dir(conf["retriever_base_model_id"], False, conf["models_dir"])
        self.model = load_retriever(base, Path(context.artifacts[ADAPTER_ARTIFACT]), "auto")

    def predict(self, context, model_input: list[str], params=None) -> list[list[float]]:
        vectors = self.model.encode(_texts(model_input), normalize_embeddings=True,
                                    convert_to_numpy=True)
        return vectors.tolist()


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """`mlflow.pyfunc.load_model("models:/tunedex-generator@champion").predict(["question"])`:
    greedy answers from the base causal LM with the registered LoRA adapter merged."""

    def load_context(self, context):
        from tasks.generator import load_generator, resolve_generator_dir

        conf = context.model_config
        base_id = conf["generator_base_model_id"]
        base = resolve_generator_dir(base_id, False, Path(conf["models_dir"]))
        self.max_new_tokens = int(conf.get("max_new_tokens", 64))
        self.model, self.tokenizer = load_generator(base, Path(context.artifacts[ADAPTER_ARTIFACT]),
                                                    "auto", base_id)

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        from tasks.generator import build_messages, generate_answers, render_prompt

        prompts = [render_prompt(self.tokenizer, build_messages(q)) for q in _texts(model_input)]
        answers = generate_answers(self.model, self.tokenizer, prompts, self.max_new_tokens, 8)
        return [a["text"] for a in answers]


def _texts(model_input: Any) -> list[str]:
    """A list of strings from a list, a Series or the first column of a DataFrame."""
    if hasattr(model_input, "columns"):
        model_input = model_input[model_input.columns[0]]
    return [str(t) for t in list(model_input)]


# ---- client and reachability -------------------------------------------------------------------


def registry_uri(cfg: Any) -> str:
    return cfg.tracking.registry_uri or cfg.tracking.tracking_uri


def client(cfg: Any):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=registry_uri(cfg))


@contextmanager
def _quick_http() -> Iterator[None]:
    """Fail fast on an unreachable server: no retries, a short timeout (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_registry(cfg: Any) -> None:
    """Touch the tracking store and the model registry; a clear error before any work is done."""
    for what, uri in (("tracking store", cfg.tracking.tracking_uri), ("model registry", registry_uri(cfg))):
        try:
            with _quick_http():
                c = client(cfg)
                if what == "tracking store":
                    c.search_experiments(max_results=1)
                else:
                    c.search_registered_models(max_results=1)
        except Exception as err:  # noqa: BLE001 - any failure here means "unreachable"
            key = "tracking.tracking_uri" if what == "tracking store" else "tracking.registry_uri"
            raise ConfigError(f"MLflow {what} at '{uri}' is unreachable ({first_line(err)}); nothing was "
                              f"trained. Fix {key} in the config or start the server.") from None


# ---- versions and releases ---------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    """What serving needs: both versions, the pinned table, the base models."""

    retriever_version: int
    generator_version: int
    index_uri: str
    table: str
    table_version: int
    retriever_base: str
    generator_base: str
    tags: dict[str, str]


def is_not_found(err: Exception) -> bool:
    """An MLflow error that means "no such model/version/alias" (not "registry broken")."""
    code = getattr(err, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(err).lower())


def registry_failed(cfg: Any, err: Exception) -> ServingError:
    return ServingError(f"MLflow registry at {registry_uri(cfg)} failed: {first_line(err)}")


def alias_version(c: Any, name: str, alias: str) -> Any | None:
    """The model version an alias points at, or None (no such model or alias). Any other
    registry failure is raised: "champion unknown" must never read as "no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise ServingError(f"MLflow registry failed reading {name}@{alias}: {first_line(err)}"
                           ) from None


def release_from_version(version: Any) -> Release:
    """A release from a retriever version's tags."""
    tags = dict(version.tags)
    try:
        return Release(int(version.version), int(tags["release.generator_version"]),
                       tags["index.uri"], tags["index.table"], int(tags["index.version"]),
                       tags["retriever.base_model"], tags["generator.base_model"], tags)
    except KeyError as err:
        raise ServingError(f"tunedex-retriever version {version.version} lacks tag {err}; it was "
                           "not registered by the promote stage") from None


def resolve_release(cfg: Any, ref: str = CHAMPION) -> Release:
    """The release behind an alias ("champion", "challenger") or a retriever version number."""
    from mlflow.exceptions import MlflowException

    c, name = client(cfg), cfg.promote.retriever_model
    if ref.isdigit():
        try:
            version = c.get_model_version(name, ref)
        except MlflowException as err:
            if not is_not_found(err):
                raise registry_failed(cfg, err) from None
            version = None
    else:
        version = alias_version(c, name, ref)
    if version is None:
        raise ServingError(f"no release '{ref}' in registered model {name} at {registry_uri(cfg)}: "
                           "run the pipeline (its promote step), or use --release local for the "
                           "tables of the last index run")
    release = release_from_version(version)
    if ref == CHAMPION:
        mirror = alias_version(c, cfg.promote.generator_model, CHAMPION)
        if mirror is None or int(mirror.version) != release.generator_version:
            log.warning("%s@champion is v%s but the champion release pairs v%d (an interrupted "
                        "promotion?); serving the release recorded on %s v%d. The next promote "
                        "repairs the alias.", cfg.promote.generator_model,
                        None if mirror is None else mirror.version, release.generator_version,
                        name, release.retriever_version)
    return release


def version_metrics(c: Any, version: Any) -> dict[str, float]:
    """The evaluation metrics logged by the run that registered a version, by metric name."""
    from tasks.tracking import from_mlflow_key

    run = c.get_run(version.run_id)
    return {from_mlflow_key(k[len("eval."):]): v for k, v in run.data.metrics.items()
            if k.startswith("eval.")}


def register(name: str, model_uri: str, tags: dict[str, str]) -> int:
    """Register a logged model as a new version of `name`, with tags; return its number."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    return int(version.version)


def move_release(cfg: Any, alias: str, retriever_version: int, generator_version: int) -> None:
    """Point `alias` at a release: generator first (a mirror), retriever last (the commit point)."""
    c = client(cfg)
    c.set_registered_model_alias(cfg.promote.generator_model, alias, str(generator_version))
    c.set_registered_model_alias(cfg.promote.retriever_model, alias, str(retriever_version))


def repair_mirror(cfg: Any) -> bool:
    """Re-point generator@champion at the champion release's generator (after a crash)."""
    c = client(cfg)
    champion = alias_version(c, cfg.promote.retriever_model, CHAMPION)
    if champion is None:
        return False
    paired = release_from_version(champion).generator_version
    mirror = alias_version(c, cfg.promote.generator_model, CHAMPION)
    if mirror is not None and int(mirror.version) == paired:
        return False
    c.set_registered_model_alias(cfg.promote.generator_model, CHAMPION, str(paired))
    log.warning("repaired %s@champion: v%s -> v%d (paired with %s v%s)",
                cfg.promote.generator_model, None if mirror is None else mirror.version, paired,
                cfg.promote.retriever_model, champion.version)
    return True


def all_versions(c: Any, name: str) -> list[Any]:
    """Every version of a registered model, newest first (empty when it does not exist)."""
    versions = c.search_model_versions(f"name = '{name}'")
    return sorted(versions, key=lambda v: -int(v.version))


def aliases_by_version(c: Any, name: str) -> dict[int, list[str]]:
    """version -> its aliases (search results do not carry them; the registered model does)."""
    from mlflow.exceptions import MlflowException

    try:
        model = c.get_registered_model(name)
    except MlflowException as err:
        if is_not_found(err):
            return {}
        raise
    out: dict[int, list[str]] = {}
    for alias, version in model.aliases.items():
        out.setdefault(int(version), []).append(alias)
    return out


def list_releases(cfg: Any) -> list[dict[str, Any]]:
    """One row per retriever version: aliases, paired generator, table, headline metrics, gate."""
    from tasks.tracking import from_mlflow_key

    c = client(cfg)
    aliases = aliases_by_version(c, cfg.promote.retriever_model)
    rows = []
    for v in all_versions(c, cfg.promote.retriever_model):
        tags = dict(v.tags)
        rows.append({"version": int(v.version), "aliases": sorted(aliases.get(int(v.version), [])),
                     "generator_version": tags.get("release.generator_version"),
                     "table": f"{tags.get('index.table')}@v{tags.get('index.version')}",
                     "gate": tags.get("gate.decision", "?"),
                     "created": v.creation_timestamp,
                     "metrics": {from_mlflow_key(k[len("metric."):]): tags[k]
                                 for k in sorted(tags) if k.startswith("metric.")},
                     "git": tags.get("git.commit", "?")[:8], "gc": tags.get("index.gc"),
                     "rolled_back": tags.get("release.rolled_back") == "true"})
    return rows


def rollback(cfg: Any, to: int | None = None, wait: bool = False) -> tuple[Release, Release]:
    """Move champion back to the previous release (or version `to`); nothing is rebuilt.
    Fails at once (naming the holder) while another run writes, unless `wait`."""
    from tasks.lock import write_lock

    with write_lock(cfg, "rollback", None if wait else "fail"):
        return _rollback(cfg, to)


def _rollback(cfg: Any, to: int | None) -> tuple[Release, Release]:
    current = resolve_release(cfg, CHAMPION)
    target_ref = str(to) if to is not None else current.tags.get("release.previous")
    if not target_ref:
        raise ServingError(f"{cfg.promote.retriever_model} v{current.retriever_version} is the first "
                           "champion: there is no previous release to roll back to")
    target = resolve_release(cfg, target_ref)
    if target.retriever_version == current.retriever_version:
        raise ServingError(f"{cfg.promote.retriever_model} v{target.retriever_version} is already "
                           "the champion; nothing to roll back")
    from tasks.search import connect, open_pinned

    open_pinned(connect(target.index_uri, create=False),
                {"table": target.table, "version": target.table_version},
                release=target.retriever_version)  # refuse a target whose index is gone
    move_release(cfg, CHAMPION, target.retriever_version, target.generator_version)
    c = client(cfg)
    c.set_model_version_tag(cfg.promote.retriever_model, str(current.retriever_version),
                            "release.rolled_back", "true")
    if target.tags.get("release.rolled_back"):
        c.delete_model_version_tag(cfg.promote.retriever_model, str(target.retriever_version),
                                   "release.rolled_back")
    log.info("champion moved back: %s v%d -> v%d (generator v%d -> v%d)", cfg.promote.retriever_model,
             current.retriever_version, target.retriever_version, current.generator_version,
             target.generator_version)
    return current, target


# ---- serving: adapters from the registry ------------------------------------------------------


def adapter_dir(cfg: Any, name: str, version: int) -> Path:
    """A registered version's adapter directory. The model is downloaded once into
    <models_dir>/registry/<name>-v<version>-<hash of its source>: versions are immutable, but a
    new store (or another registry) reuses version numbers."""
    import hashlib

    import mlflow
    import yaml

    source = client(cfg).get_model_version(name, str(version)).source
    digest = hashlib.sha256(f"{registry_uri(cfg)}|{source}".encode()).hexdigest()[:10]
    out = Path(cfg.paths.models_dir) / "registry" / f"{name}-v{version}-{digest}"
    if not (out / "MLmodel").is_file():
        import tempfile

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))  # private per caller
        mlflow.set_registry_uri(registry_uri(cfg))
        mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                            dst_path=str(tmp))
        try:
            tmp.rename(out)  # atomic; fails if a concurrent download got there first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    flavor = yaml.safe_load((out / "MLmodel").read_text())["flavors"]["python_function"]
    return out / flavor["artifacts"][ADAPTER_ARTIFACT]["path"]


# ---- gc: tables no kept release pins --------------------------------------------------------------


def gc_plan(cfg: Any) -> dict[str, Any]:
    """Which LanceDB tables to drop: those no kept release (newest N, champion, challenger) and
    not the last index run pins."""
    from tasks.search import connect, index_path

    c = client(cfg)
    versions = all_versions(c, cfg.promote.retriever_model)
    keep_versions = {int(v.version) for v in versions[: cfg.promote.keep_releases]}
    aliased = {v for v, names in aliases_by_version(c, cfg.promote.retriever_model).items()
               if set(names) & {CHAMPION, CHALLENGER}}
    keep_versions |= aliased
    by_number = {int(v.version): v for v in versions}
    for start in aliased:  # rollback targets: the previous releases of champion and challenger
        step, seen = dict(by_number[start].tags).get("release.previous"), 0
        while step and step.isdigit() and int(step) in by_number and seen < cfg.promote.keep_releases:
            keep_versions.add(int(step))
            step, seen = dict(by_number[int(step)].tags).get("release.previous"), seen + 1
    here = os.path.abspath(cfg.paths.index_uri)
    kept: dict[str, list[int]] = {}
    for v in versions:
        tags = dict(v.tags)
        if int(v.version) in keep_versions and os.path.abspath(tags.get("index.uri", "")) == here:
            kept.setdefault(tags.get("index.table", ""), []).append(int(v.version))
    local = {}
    if index_path(cfg).is_file():
        local = json.loads(index_path(cfg).read_text()).get("tables", {})
    for role, info in local.items():
        kept.setdefault(info["table"], []).append(f"last index run ({role})")
    tables = connect(cfg.paths.index_uri).list_tables().tables
    drop = [t for t in tables if t.startswith("chunks_") and t not in kept]
    dropped_versions = [int(v.version) for v in versions
                        if dict(v.tags).get("index.table") in drop
                        and os.path.abspath(dict(v.tags).get("index.uri", "")) == here]
    return {"keep": {t: kept[t] for t in tables if t in kept}, "drop": drop,
            "versions_losing_index": dropped_versions}


def gc(cfg: Any, dry_run: bool = False, wait: bool = False) -> dict[str, Any]:
    """Drop the tables gc_plan names; tag the versions that pinned them (index.gc=dropped)."""
    from tasks.lock import write_lock
    from tasks.search import connect

    if dry_run:
        return gc_plan(cfg)
    with write_lock(cfg, "gc", None if wait else "fail"):
        return _gc(cfg, connect)


def _gc(cfg: Any, connect: Any) -> dict[str, Any]:
    plan = gc_plan(cfg)
    if not plan["drop"]:
        return plan
    db = connect(cfg.paths.index_uri)
    for name in plan["drop"]:
        db.drop_table(name)
        log.info("gc: dropped LanceDB table %s", name)
    c = client(cfg)
    for version in plan["versions_losing_index"]:
        c.set_model_version_tag(cfg.promote.retriever_model, str(version), "index.gc", "dropped")
    return plan
