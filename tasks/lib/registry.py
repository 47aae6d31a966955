"""The MLflow Model Registry side of a release: registered adapters, aliases, rollback, gc.

A release is one version of `tunedex-retriever` plus one of `tunedex-generator` (and one of
`tunedex-rag`, both adapters and the pinned table as one models-from-code pyfunc), registered by
the same promote run. The retriever version is the release record: its tags name the paired
generator and rag versions, the LanceDB table/version its vectors are in, the data version and the
metrics. Serving resolves `tunedex-retriever@champion` and follows those tags, so the retriever
alias is the single commit point of a promotion: the generator and rag aliases move first and only
mirror it. A crash between the moves leaves the previous release served, whole, and the next
promote repairs the mirrors.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.lib.errors import ConfigError, ServingError, first_line
from tasks.lib.failpoints import failpoint
from tasks.lib.text import mask_uri

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
ADAPTER_ARTIFACT = "adapter"  # the LoRA adapter directory inside each registered model
# What a registered model needs, all on the package index (tunedex itself ships as code_paths).
REQUIREMENTS = ("mlflow", "transformers", "peft", "sentence-transformers", "lancedb", "pyarrow",
                "pydantic", "pyyaml", "gguf", "accelerate", "pandas", "numpy")


def pip_requirements() -> list[str]:
    """Pinned to what this environment runs; torch as a range (a GPU box picks its own build)."""
    from importlib import metadata

    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return ["torch>=2.4", *pins]


def code_paths() -> list[str]:
    """The tunedex package a registered model loads its code from (copied into the model)."""
    return [str(Path(__file__).resolve().parents[1])]


# ---- registered models: loadable with one call -------------------------------------------------


def model_code(role: str) -> str:
    """The file a registered model is logged from (models from code: nothing is pickled). By
    path, not imported: importing it runs mlflow.models.set_model."""
    import importlib.util

    return importlib.util.find_spec(f"tasks.lib.{role}_model").origin


def texts_of(model_input: Any) -> list[str]:
    """A list of strings from a list, a Series or the first column of a DataFrame."""
    if hasattr(model_input, "columns"):
        model_input = model_input[model_input.columns[0]]
    return [str(t) for t in list(model_input)]


# ---- where the registry is ---------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryRef:
    """What registry functions need: the stores, the model names, the caches and the lock."""

    tracking_uri: str
    registry_uri: str
    retriever_model: str  # the release record (its alias is the commit point)
    generator_model: str  # mirrors the retriever's aliases
    rag_model: str  # the whole release as one pyfunc; mirrors the retriever's aliases too
    keep_releases: int  # gc keeps the tables of the newest N versions
    catalog: Any  # tasks.lib.catalog.Catalog: registry download cache, index for gc
    lock: Any  # the `lock` section: rollback and gc are writers

    @classmethod
    def of(cls, tracking: Any, promote: Any, catalog: Any, lock: Any) -> RegistryRef:
        return cls(tracking.tracking_uri, tracking.registry_uri or tracking.tracking_uri,
                   promote.retriever_model, promote.generator_model, promote.rag_model,
                   promote.keep_releases, catalog, lock)


def registry_ref(cfg: Any) -> RegistryRef:
    """The registry of one whole config (CLI and flows; stages build it from their sections)."""
    from tasks.lib.catalog import Catalog

    return RegistryRef.of(cfg.tracking, cfg.promote, Catalog(cfg.paths), cfg.lock)


# ---- client and reachability -------------------------------------------------------------------


def client(reg: RegistryRef):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)


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


def check_registry(reg: RegistryRef) -> None:
    """Touch the tracking store and the model registry; a clear error before any work is done."""
    for what, uri in (("tracking store", reg.tracking_uri), ("model registry", reg.registry_uri)):
        try:
            with _quick_http():
                c = client(reg)
                if what == "tracking store":
                    c.search_experiments(max_results=1)
                else:
                    c.search_registered_models(max_results=1)
        except Exception as err:  # noqa: BLE001 - any failure here means "unreachable"
            key = "tracking.tracking_uri" if what == "tracking store" else "tracking.registry_uri"
            raise ConfigError(f"MLflow {what} at '{mask_uri(uri)}' is unreachable "
                              f"({mask_uri(first_line(err))}); nothing was "
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


def registry_failed(reg: RegistryRef, err: Exception) -> ServingError:
    return ServingError(f"MLflow registry at {mask_uri(reg.registry_uri)} failed: {first_line(err)}")


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


def resolve_release(reg: RegistryRef, ref: str = CHAMPION) -> Release:
    """The release behind an alias ("champion", "challenger") or a retriever version number."""
    from mlflow.exceptions import MlflowException

    c, name = client(reg), reg.retriever_model
    if ref.isdigit():
        try:
            version = c.get_model_version(name, ref)
        except MlflowException as err:
            if not is_not_found(err):
                raise registry_failed(reg, err) from None
            version = None
    else:
        version = alias_version(c, name, ref)
    if version is None:
        raise ServingError(f"no release '{ref}' in registered model {name} at {mask_uri(reg.registry_uri)}: "
                           "run the pipeline (its promote step), or use --release local for the "
                           "tables of the last index run")
    release = release_from_version(version)
    if ref == CHAMPION:
        mirror = alias_version(c, reg.generator_model, CHAMPION)
        if mirror is None or int(mirror.version) != release.generator_version:
            log.warning("%s@champion is v%s but the champion release pairs v%d (an interrupted "
                        "promotion?); serving the release recorded on %s v%d. The next promote "
                        "repairs the alias.", reg.generator_model,
                        None if mirror is None else mirror.version, release.generator_version,
                        name, release.retriever_version)
    return release


def version_metrics(c: Any, version: Any) -> dict[str, float]:
    """The evaluation metrics logged by the run that registered a version, by metric name."""
    from tasks.lib.choice import with_current_names
    from tasks.lib.tracking import from_mlflow_key

    run = c.get_run(version.run_id)
    return with_current_names({from_mlflow_key(k[len("eval."):]): v
                               for k, v in run.data.metrics.items() if k.startswith("eval.")})


def register(name: str, model_uri: str, tags: dict[str, str]) -> int:
    """Register a logged model as a new version of `name`, with tags; return its number."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags)
    return int(version.version)


def log_rag_model(config: dict[str, Any], adapters: dict[str, Any]) -> str:
    """Log tunedex-rag from code (tasks/lib/rag_model.py: nothing pickled); return its URI."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name="rag_model", python_model=model_code("rag"), model_config=config,
        artifacts={"retriever_adapter": str(adapters["retriever"]),
                   "generator_adapter": str(adapters["generator"])},
        code_paths=code_paths(), pip_requirements=pip_requirements())
    return info.model_uri


def repin_rag(reg: RegistryRef, retriever_version: int, table_version: int) -> int | None:
    """After a reindex pin: register the champion's tunedex-rag again with the new table
    version (same adapters) and move its alias, so the portable model serves what serving
    serves. None when the release has no rag model."""
    import mlflow
    import yaml

    c = client(reg)
    old = dict(c.get_model_version(reg.retriever_model, str(retriever_version)).tags).get(
        "release.rag_version")
    if not old:
        return None
    if c.get_model_version(reg.rag_model, old).tags.get("index.version") == str(table_version):
        return int(old)  # already serves that table version
    mlflow.set_registry_uri(reg.registry_uri)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{reg.rag_model}/{old}"))
    pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    adapters = {role: local / pyfunc["artifacts"][f"{role}_adapter"]["path"]
                for role in ("retriever", "generator")}
    uri = log_rag_model({**pyfunc["config"], "table_version": table_version}, adapters)
    tags = {k: v for k, v in c.get_model_version(reg.rag_model, old).tags.items()}
    version = register(reg.rag_model, uri, {**tags, "index.version": str(table_version)})
    c.set_registered_model_alias(reg.rag_model, CHAMPION, str(version))  # the mirror first,
    c.set_model_version_tag(reg.retriever_model, str(retriever_version), "release.rag_version",
                            str(version))  # then the record (a crash between: repair_mirror)
    return version


def tag_release(reg: RegistryRef, retriever_version: int, generator_version: int,
                tags: dict[str, str]) -> None:
    """Set the same tags on both versions of a release."""
    c = client(reg)
    for name, version in ((reg.generator_model, generator_version),
                          (reg.retriever_model, retriever_version)):
        for key, value in tags.items():
            c.set_model_version_tag(name, str(version), key, value)


def move_release(reg: RegistryRef, alias: str, retriever_version: int, generator_version: int,
                 rag_version: int | str | None = None) -> None:
    """Point `alias` at a release: generator and rag first (mirrors), retriever last (the commit
    point)."""
    c = client(reg)
    c.set_registered_model_alias(reg.generator_model, alias, str(generator_version))
    if rag_version is not None:
        c.set_registered_model_alias(reg.rag_model, alias, str(rag_version))
    failpoint(f"release.move.{alias}")  # crash tests: mirrors moved, the record not yet
    c.set_registered_model_alias(reg.retriever_model, alias, str(retriever_version))


def repair_mirror(reg: RegistryRef) -> bool:
    """Re-point the mirrors (generator@champion, rag@champion) at the champion release's own
    versions after a crash between alias moves; True if anything moved."""
    c = client(reg)
    champion = alias_version(c, reg.retriever_model, CHAMPION)
    if champion is None:
        return False
    tags = dict(champion.tags)
    moved = False
    for name, paired in ((reg.generator_model, tags.get("release.generator_version")),
                         (reg.rag_model, tags.get("release.rag_version"))):
        mirror = alias_version(c, name, CHAMPION)
        if paired is None:  # a release from before tunedex-rag: no rag model may claim it
            if mirror is not None and name == reg.rag_model:
                c.delete_registered_model_alias(name, CHAMPION)
                moved = True
            continue
        if mirror is not None and str(mirror.version) == str(paired):
            continue
        c.set_registered_model_alias(name, CHAMPION, str(paired))
        log.warning("repaired %s@champion: v%s -> v%s (paired with %s v%s)", name,
                    None if mirror is None else mirror.version, paired, reg.retriever_model,
                    champion.version)
        moved = True
    return moved


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


def list_releases(reg: RegistryRef) -> list[dict[str, Any]]:
    """One row per retriever version: aliases, paired generator, table, headline metrics, gate."""
    from tasks.lib.tracking import from_mlflow_key

    c = client(reg)
    aliases = aliases_by_version(c, reg.retriever_model)
    rows = []
    for v in all_versions(c, reg.retriever_model):
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


def rollback(reg: RegistryRef, to: int | None = None, wait: bool = False) -> tuple[Release, Release]:
    """Move champion back to the previous release (or version `to`); nothing is rebuilt.
    Fails at once (naming the holder) while another run writes, unless `wait`."""
    from tasks.lib.lock import write_lock

    with write_lock(reg.lock, "rollback", None if wait else "fail"):
        return _rollback(reg, to)


def _rollback(reg: RegistryRef, to: int | None) -> tuple[Release, Release]:
    current = resolve_release(reg, CHAMPION)
    target_ref = str(to) if to is not None else current.tags.get("release.previous")
    if not target_ref:
        raise ServingError(f"{reg.retriever_model} v{current.retriever_version} is the first "
                           "champion: there is no previous release to roll back to")
    target = resolve_release(reg, target_ref)
    if target.retriever_version == current.retriever_version:
        raise ServingError(f"{reg.retriever_model} v{target.retriever_version} is already "
                           "the champion; nothing to roll back")
    from tasks.lib.search import connect, open_pinned

    open_pinned(connect(target.index_uri, create=False),
                {"table": target.table, "version": target.table_version},
                release=target.retriever_version)  # refuse a target whose index is gone
    move_release(reg, CHAMPION, target.retriever_version, target.generator_version,
                 target.tags.get("release.rag_version"))
    if not target.tags.get("release.rag_version") and alias_version(client(reg), reg.rag_model,
                                                                   CHAMPION) is not None:
        client(reg).delete_registered_model_alias(reg.rag_model, CHAMPION)  # never a stale rag
    c = client(reg)
    c.set_model_version_tag(reg.retriever_model, str(current.retriever_version),
                            "release.rolled_back", "true")
    if target.tags.get("release.rolled_back"):
        c.delete_model_version_tag(reg.retriever_model, str(target.retriever_version),
                                   "release.rolled_back")
    log.info("champion moved back: %s v%d -> v%d (generator v%d -> v%d)", reg.retriever_model,
             current.retriever_version, target.retriever_version, current.generator_version,
             target.generator_version)
    return current, target


# ---- serving: adapters from the registry ------------------------------------------------------


def adapter_dir(reg: RegistryRef, name: str, version: int) -> Path:
    """A registered version's adapter directory. The model is downloaded once into
    <models_dir>/registry/<name>-v<version>-<hash of its source>: versions are immutable, but a
    new store (or another registry) reuses version numbers."""
    import hashlib

    import mlflow
    import yaml

    from tasks.lib.files import publish_dir

    source = client(reg).get_model_version(name, str(version)).source
    digest = hashlib.sha256(f"{reg.registry_uri}|{source}".encode()).hexdigest()[:10]
    out = reg.catalog.registry_cache_dir / f"{name}-v{version}-{digest}"
    if not (out / "MLmodel").is_file():
        mlflow.set_registry_uri(reg.registry_uri)
        mlflow.set_tracking_uri(reg.tracking_uri)

        def download(tmp: Path) -> None:
            tmp.mkdir()
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                dst_path=str(tmp))

        publish_dir(out, download, replace=False)  # a concurrent download of the same version wins
    flavor = yaml.safe_load((out / "MLmodel").read_text())["flavors"]["python_function"]
    return out / flavor["artifacts"][ADAPTER_ARTIFACT]["path"]


# ---- gc: tables no kept release pins --------------------------------------------------------------


def gc_plan(reg: RegistryRef) -> dict[str, Any]:
    """Which LanceDB tables to drop: those no kept release (newest N, champion, challenger) and
    not the last index run pins."""
    from tasks.lib.search import connect

    c = client(reg)
    versions = all_versions(c, reg.retriever_model)
    keep_versions = {int(v.version) for v in versions[: reg.keep_releases]}
    aliased = {v for v, names in aliases_by_version(c, reg.retriever_model).items()
               if set(names) & {CHAMPION, CHALLENGER}}
    keep_versions |= aliased
    by_number = {int(v.version): v for v in versions}
    for start in aliased:  # rollback targets: the previous releases of champion and challenger
        step, seen = dict(by_number[start].tags).get("release.previous"), 0
        while step and step.isdigit() and int(step) in by_number and seen < reg.keep_releases:
            keep_versions.add(int(step))
            step, seen = dict(by_number[int(step)].tags).get("release.previous"), seen + 1
    here = os.path.abspath(reg.catalog.index_uri)
    kept: dict[str, list[int]] = {}
    for v in versions:
        tags = dict(v.tags)
        if int(v.version) in keep_versions and os.path.abspath(tags.get("index.uri", "")) == here:
            kept.setdefault(tags.get("index.table", ""), []).append(int(v.version))
    local = {}
    if reg.catalog.index_info_path.is_file():
        local = json.loads(reg.catalog.index_info_path.read_text()).get("tables", {})
    for role, info in local.items():
        kept.setdefault(info["table"], []).append(f"last index run ({role})")
    tables = connect(reg.catalog.index_uri).list_tables().tables
    drop = [t for t in tables if t.startswith("chunks_") and t not in kept]
    dropped_versions = [int(v.version) for v in versions
                        if dict(v.tags).get("index.table") in drop
                        and os.path.abspath(dict(v.tags).get("index.uri", "")) == here]
    return {"keep": {t: kept[t] for t in tables if t in kept}, "drop": drop,
            "versions_losing_index": dropped_versions}


def gc(reg: RegistryRef, dry_run: bool = False, wait: bool = False) -> dict[str, Any]:
    """Drop the tables gc_plan names; tag the versions that pinned them (index.gc=dropped)."""
    from tasks.lib.lock import write_lock
    from tasks.lib.search import connect

    if dry_run:
        return gc_plan(reg)
    with write_lock(reg.lock, "gc", None if wait else "fail"):
        return _gc(reg, connect)


def _gc(reg: RegistryRef, connect: Any) -> dict[str, Any]:
    plan = gc_plan(reg)
    if not plan["drop"]:
        return plan
    c = client(reg)
    # Tag first: a crash before a drop leaves a tagged version whose table the next gc drops;
    # dropping first would leave untagged versions pointing at nothing.
    for version in plan["versions_losing_index"]:
        c.set_model_version_tag(reg.retriever_model, str(version), "index.gc", "dropped")
    db = connect(reg.catalog.index_uri)
    for name in plan["drop"]:
        failpoint("gc.drop")
        db.drop_table(name)
        log.info("gc: dropped LanceDB table %s", name)
    return plan
