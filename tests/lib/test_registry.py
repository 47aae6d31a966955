"""The Model Registry side of a release (tasks/lib/registry.py): which errors mean "no release",
the release record in a version's tags, and, on a real sqlite registry after a promote: gc of
unpinned tables, refused rollbacks, and registered models that load with one call."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.lib.catalog import Catalog
from tasks.lib.config import LockConfig, PathsConfig, PromoteConfig, TrackingConfig, load_config
from tasks.lib.errors import ServingError
from tasks.lib.registry import RegistryRef, is_not_found, registry_ref, release_from_version
from tests.conftest import SMOKE, champion_versions, sets, tunedex
from tests.conftest import promote_release as promote

RET, GEN = "tunedex-retriever", "tunedex-generator"
FLOOR_ONLY = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]  # passes whatever changed

TAGS = {"release.generator_version": "4", "index.uri": "/data/lancedb", "index.table": "chunks_ab",
        "index.version": "7", "retriever.base_model": "ret/base", "generator.base_model": "gen/base"}


def test_only_not_found_errors_mean_no_release():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
        TEMPORARILY_UNAVAILABLE,
    )

    assert is_not_found(MlflowException("no model", error_code=RESOURCE_DOES_NOT_EXIST))
    assert is_not_found(MlflowException("Registered model alias champion not found.",
                                        error_code=INVALID_PARAMETER_VALUE))
    assert not is_not_found(MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE))
    assert not is_not_found(MlflowException("503", error_code=TEMPORARILY_UNAVAILABLE))


def test_registry_ref_defaults_the_registry_to_the_tracking_store():
    cat = Catalog(PathsConfig())
    ref = RegistryRef.of(TrackingConfig(tracking_uri="sqlite:///x.db"), PromoteConfig(), cat,
                         LockConfig())
    assert (ref.tracking_uri, ref.registry_uri) == ("sqlite:///x.db", "sqlite:///x.db")
    assert (ref.retriever_model, ref.generator_model, ref.keep_releases) == (
        "tunedex-retriever", "tunedex-generator", 3)
    other = RegistryRef.of(TrackingConfig(tracking_uri="sqlite:///x.db",
                                          registry_uri="http://registry:5000"),
                           PromoteConfig(keep_releases=5), cat, LockConfig())
    assert (other.registry_uri, other.keep_releases) == ("http://registry:5000", 5)
    cfg = load_config(SMOKE, {"tracking.tracking_uri": "sqlite:///y.db"})
    assert registry_ref(cfg).catalog == Catalog(cfg.paths) and registry_ref(cfg).lock == cfg.lock


def test_a_release_is_read_from_the_retriever_version_tags():
    release = release_from_version(SimpleNamespace(version="3", tags=TAGS))
    assert (release.retriever_version, release.generator_version) == (3, 4)
    assert (release.index_uri, release.table, release.table_version) == ("/data/lancedb",
                                                                         "chunks_ab", 7)
    assert (release.retriever_base, release.generator_base) == ("ret/base", "gen/base")
    partial = {k: v for k, v in TAGS.items() if k != "index.table"}
    with pytest.raises(ServingError, match="tunedex-retriever version 3 lacks tag 'index.table'; it "
                                           "was not registered by the promote stage"):
        release_from_version(SimpleNamespace(version="3", tags=partial))


# ---- on a real registry (slow: the DVC stages run once per session) -------------------------------


@pytest.mark.slow
def test_gc_drops_unpinned_tables_and_serving_names_a_missing_one(registry_overrides, tmp_path):
    from tasks.lib.registry import client, gc, gc_plan, resolve_release, rollback
    from tasks.lib.search import connect, open_pinned

    overrides = registry_overrides
    reg = registry_ref(load_config(SMOKE, {**overrides, "promote.keep_releases": 1}))
    promote(overrides)
    db = connect(overrides["paths.index_uri"])
    pinned = client(reg).get_model_version(RET, "1").tags["index.table"]
    stale = "chunks_stale0000001"  # as if an older retriever had built it for release v1
    db.create_table(stale, db.open_table(pinned).to_arrow(), mode="overwrite")
    client(reg).set_model_version_tag(RET, "1", "index.table", stale)
    assert gc_plan(reg)["drop"] == []  # v1 is champion: its table is kept

    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v2 pins `pinned`
    assert gc_plan(reg)["drop"] == []  # v1 is the champion's previous release: a rollback target
    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v3; v1 now 2 back
    assert gc(reg, dry_run=True)["drop"] == [stale]
    assert stale in db.list_tables().tables  # a dry run drops nothing
    plan = gc(reg)
    assert plan["drop"] == [stale] and plan["versions_losing_index"] == [1]
    tables = db.list_tables().tables
    assert stale not in tables and pinned in tables
    assert client(reg).get_model_version(RET, "1").tags["index.gc"] == "dropped"

    with pytest.raises(ServingError, match=f"{stale} \\(pinned by release v1\\) is missing"):
        rollback(reg, to=1)
    assert champion_versions(reg) == (3, 3)  # a refused rollback moves nothing
    with pytest.raises(ServingError, match="already the champion"):
        rollback(reg, to=3)

    done = tunedex("search", "cards", "--release", "1", "-c", str(SMOKE), *sets(overrides),
                   cwd=tmp_path)
    assert done.returncode == 2
    assert f"LanceDB table {stale} (pinned by release v1) is missing" in done.stderr
    assert "run `tunedex rollback`" in done.stderr

    client(reg).set_model_version_tag(RET, "3", "index.version", "999")
    release = resolve_release(reg)
    with pytest.raises(ServingError, match=f"{pinned} has no version 999 \\(pinned by release v3\\)"):
        open_pinned(db, {"table": release.table, "version": release.table_version}, 3)


@pytest.mark.slow
def test_registered_models_load_with_one_call_and_nothing_unpickled(registry_overrides,
                                                                    monkeypatch):
    import mlflow
    import numpy as np
    import yaml

    overrides = registry_overrides
    promote(overrides)
    mlflow.set_tracking_uri(overrides["tracking.tracking_uri"])
    for name in (RET, GEN):  # models from code: MLflow re-runs a source file, unpickles nothing
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model", flavor
        assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.bin"))
        assert list(local.rglob("*.safetensors"))  # the adapter weights
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model(f"models:/{RET}@champion")
    vectors = np.asarray(model.predict(["Which cards do you take?", "plan prices"]))
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    generator = mlflow.pyfunc.load_model(f"models:/{GEN}@champion")
    answers = generator.predict(["Which cards do you take?"])
    assert len(answers) == 1 and isinstance(answers[0], str)
