"""Releases on a real MLflow registry (sqlite) and real LanceDB tables: the gate, both aliases
moving as one release, serving from @champion, rollback, gc, and the faults around them."""

from pathlib import Path

import pytest

from flows.pipeline import STAGES
from tasks.lib.config import load_config
from tasks.lib.errors import ServingError
from tests.conftest import SMOKE, tiny_release_dir
from tests.flows.test_cli import sets, tunedex

RET, GEN = "tunedex-retriever", "tunedex-generator"
pytestmark = pytest.mark.slow  # trains tiny models once per module, then ~10 s per test
FLOOR_ONLY = [{"metric": "retrieval.hybrid.ndcg@10", "floor": 0.0}]  # passes whatever changed


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, str]:
    """Overrides of a smoke run through every DVC stage (validate .. evaluate), done once."""
    from flows.cli import stage_functions

    overrides = tiny_release_dir(tmp_path_factory.mktemp("built"))
    cfg = load_config(SMOKE, overrides)
    functions = {s.value: fn for s, fn in stage_functions().items()}
    for stage in STAGES:
        functions[stage](cfg)
    return overrides


@pytest.fixture
def overrides(built, tmp_path, monkeypatch) -> dict[str, str]:
    """The built run, with a fresh, empty MLflow store and registry for this test."""
    monkeypatch.chdir(tmp_path)
    return {**built, "tracking.tracking_uri": f"sqlite:///{tmp_path / 'registry.db'}",
            "tracking.artifact_location": str(tmp_path / "artifacts")}


def promote(overrides, **extra):
    from tasks.promote import promote_stage

    return promote_stage(load_config(SMOKE, {**overrides, **extra}))


def champion_versions(cfg) -> tuple[int, int]:
    from tasks.lib.registry import alias_version, client

    c = client(cfg)
    return (int(alias_version(c, RET, "champion").version),
            int(alias_version(c, GEN, "champion").version))


def test_gate_rejects_then_promotes_then_rollback_restores(overrides, tmp_path):
    from tasks.lib.registry import client, resolve_release

    cfg = load_config(SMOKE, overrides)
    first = promote(overrides)
    assert first["promoted"] and first["first_release"]
    assert champion_versions(cfg) == (1, 1)
    version = client(cfg).get_model_version(RET, "1")
    tags = version.tags
    index = __import__("json").loads((Path(overrides["paths.reports_dir"]) / "index" /
                                      "index.json").read_text())["tables"]["candidate"]
    assert (tags["index.table"], tags["index.version"]) == (index["table"], str(index["version"]))
    assert tags["release.generator_version"] == "1" and tags["validation.success"] == "true"
    assert tags["data.qa_md5"] != "missing" and tags["git.commit"]
    assert set(tags) >= {"pipeline.run_id", "metric.answers.hybrid.token_f1",
                         "metric.retrieval.hybrid.ndcg_at_10", "metric.retrieval.hybrid.p95_ms"}
    assert client(cfg).get_run(version.run_id).data.metrics["gate.promoted"] == 1.0

    second = promote(overrides)  # same adapters and metrics: no token-F1 improvement
    assert not second["promoted"]
    assert champion_versions(cfg) == (1, 1)  # untouched
    c = client(cfg)
    assert int(c.get_model_version_by_alias(RET, "challenger").version) == 2
    assert int(c.get_model_version_by_alias(GEN, "challenger").version) == 2
    failed = [r["metric"] for r in second["rules"] if not r["passed"]]
    assert failed == ["answers.hybrid.token_f1"]
    decision = (Path(overrides["paths.reports_dir"]) / "promote" / "decision.md").read_text()
    assert "NOT PROMOTED" in decision and "champion unchanged" in decision

    third = promote(overrides, **{"promote.gate": FLOOR_ONLY})
    assert third["promoted"] and champion_versions(cfg) == (3, 3)
    assert resolve_release(cfg).tags["release.previous"] == "1"

    listed = tunedex("releases", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert "champion" in rows[1] and rows[1].split()[0] == "3"
    assert "challenger" in rows[2] and "rejected" in rows[2]

    done = tunedex("rollback", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "retriever v3 -> v1, generator v3 -> v1" in done.stdout
    assert champion_versions(cfg) == (1, 1)
    assert client(cfg).get_model_version(RET, "3").tags["release.rolled_back"] == "true"

    done = tunedex("search", "Which cards do you take?", "-k", "2", "-c", str(SMOKE),
                   *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"hybrid search, release champion (tunedex-retriever v1, generator v1), "
        f"table {index['table']} v{index['version']}")

    done = tunedex("rollback", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 2 and "no previous release" in done.stderr


def test_crash_between_the_alias_moves_serves_one_whole_release(overrides, monkeypatch):
    from mlflow.tracking import MlflowClient

    from tasks.lib.registry import adapter_dir, client, repair_mirror, resolve_release

    cfg = load_config(SMOKE, overrides)
    promote(overrides)
    real_move = MlflowClient.set_registered_model_alias
    moves: list[str] = []

    def crash_on_second_champion_move(self, name, alias, version):
        if alias == "champion":
            moves.append(name)
            if len(moves) == 2:
                raise RuntimeError("killed between the two alias moves")
        return real_move(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash_on_second_champion_move)
    with pytest.raises(RuntimeError, match="killed between"):
        promote(overrides, **{"promote.gate": FLOOR_ONLY})
    monkeypatch.undo()

    c = client(cfg)
    mirrors = {name: int(c.get_model_version_by_alias(name, "champion").version) for name in (RET, GEN)}
    assert mirrors != {RET: 1, GEN: 1} and mirrors != {RET: 2, GEN: 2}  # the aliases disagree
    release = resolve_release(cfg)  # ... but what is served is one promotion's pair
    assert (release.retriever_version, release.generator_version) == (1, 1)
    served = adapter_dir(cfg, GEN, release.generator_version)
    assert served.parent.parent.name.startswith(f"{GEN}-v1-")

    assert "release.inputs" not in c.get_model_version(RET, "2").tags  # the next retrain runs
    assert repair_mirror(cfg) and champion_versions(cfg) == (1, 1)
    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]
    assert champion_versions(cfg) == (3, 3)


def test_gc_drops_unpinned_tables_and_serving_names_a_missing_one(overrides, tmp_path):
    from tasks.lib.registry import client, gc, gc_plan, rollback
    from tasks.lib.search import connect

    cfg = load_config(SMOKE, {**overrides, "promote.keep_releases": 1})
    promote(overrides)
    db = connect(overrides["paths.index_uri"])
    pinned = client(cfg).get_model_version(RET, "1").tags["index.table"]
    stale = "chunks_stale0000001"  # as if an older retriever had built it for release v1
    db.create_table(stale, db.open_table(pinned).to_arrow(), mode="overwrite")
    client(cfg).set_model_version_tag(RET, "1", "index.table", stale)
    assert gc_plan(cfg)["drop"] == []  # v1 is champion: its table is kept

    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v2 pins `pinned`
    assert gc_plan(cfg)["drop"] == []  # v1 is the champion's previous release: a rollback target
    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]  # v3; v1 now 2 back
    plan = gc(cfg)
    assert plan["drop"] == [stale] and plan["versions_losing_index"] == [1]
    tables = db.list_tables().tables
    assert stale not in tables and pinned in tables
    assert client(cfg).get_model_version(RET, "1").tags["index.gc"] == "dropped"

    with pytest.raises(ServingError, match=f"{stale} \\(pinned by release v1\\) is missing"):
        rollback(cfg, to=1)
    assert champion_versions(cfg) == (3, 3)  # a refused rollback moves nothing
    with pytest.raises(ServingError, match="already the champion"):
        rollback(cfg, to=3)

    done = tunedex("search", "cards", "--release", "1", "-c", str(SMOKE), *sets(overrides),
                   cwd=tmp_path)
    assert done.returncode == 2
    assert f"LanceDB table {stale} (pinned by release v1) is missing" in done.stderr
    assert "run `tunedex rollback`" in done.stderr

    client(cfg).set_model_version_tag(RET, "3", "index.version", "999")
    from tasks.lib.registry import resolve_release
    from tasks.lib.search import open_pinned

    release = resolve_release(cfg)
    with pytest.raises(ServingError, match=f"{pinned} has no version 999 \\(pinned by release v3\\)"):
        open_pinned(db, {"table": release.table, "version": release.table_version}, 3)


def test_registered_models_load_with_one_call(overrides):
    import mlflow
    import numpy as np

    promote(overrides)
    mlflow.set_tracking_uri(overrides["tracking.tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{RET}@champion")
    vectors = np.asarray(model.predict(["Which cards do you take?", "plan prices"]))
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    generator = mlflow.pyfunc.load_model(f"models:/{GEN}@champion")
    answers = generator.predict(["Which cards do you take?"])
    assert len(answers) == 1 and isinstance(answers[0], str)
