"""promote (tasks/promote.py): the gate's inputs and the release tags (pure), then releases on a
real MLflow registry (sqlite) and real LanceDB tables: the gate rejecting and promoting, both
aliases moving as one release, serving from @champion, rollback, and a crash between the moves."""

import json
from pathlib import Path

import pytest

from tasks.lib.config import PromoteConfig, load_config
from tasks.lib.errors import ConfigError
from tasks.lib.registry import registry_ref
from tasks.promote import decide, gate_metrics, local_abspath
from tests.conftest import SMOKE, champion_versions, sets, tunedex
from tests.conftest import promote_release as promote

RET, GEN = "tunedex-retriever", "tunedex-generator"
FLOOR_ONLY = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]  # passes whatever changed


# ---- pure ---------------------------------------------------------------------------------------


def test_local_abspath_leaves_remote_uris_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_abspath("lancedb") == str(tmp_path / "lancedb")
    assert local_abspath("s3://bucket/lancedb") == "s3://bucket/lancedb"


def test_gate_metrics_flatten_and_refuse_unknown_ones():
    metrics = {"answers": {"hybrid": {"token_f1": 0.25}}, "retrieval": {"fusion": {"ndcg@10": 1}}}
    section = PromoteConfig(gate=({"metric": "answers.hybrid.token_f1", "floor": 0.0},))
    assert gate_metrics(section, metrics, Path("m.json")) == {"answers.hybrid.token_f1": 0.25,
                                                              "retrieval.fusion.ndcg@10": 1.0}
    bad = PromoteConfig(gate=({"metric": "answers.hybrid.f1", "floor": 0.0},
                              {"metric": "retrieval.bm25.ndcg@10", "floor": 0.0}))
    with pytest.raises(ConfigError) as err:
        gate_metrics(bad, metrics, Path("reports/evaluate/metrics.json"))
    assert str(err.value) == ("promote.gate: metric(s) answers.hybrid.f1, retrieval.bm25.ndcg@10 not "
                              "in reports/evaluate/metrics.json; known: answers.hybrid.token_f1, "
                              "retrieval.fusion.ndcg@10")


def results(f1: list[float]) -> dict:
    """Per-question results with hybrid token F1 (and nDCG@10 1.0) on questions q0, q1, …"""
    qids = [f"q{i}" for i in range(len(f1))]
    return {"questions": [{"qid": q, "question": f"{q}?", "reference": "A", "doc_ids": ["d"],
                           "metadata": {}} for q in qids],
            "retrieval": {"fusion": {q: {"ndcg@10": 1.0} for q in qids}},
            "answers": {"hybrid": {q: {"token_f1": v} for q, v in zip(qids, f1, strict=True)}}}


def release(f1: list[float] | None, mean: float, origin: str | None = None) -> tuple:
    """(release, logged metrics, per-question results, their origin) as promote reads a champion."""
    from types import SimpleNamespace

    metrics = {"answers.hybrid.token_f1": mean, "retrieval.fusion.ndcg@10": 1.0,
               "retrieval.fusion.p95_ms": 10.0}
    return (SimpleNamespace(retriever_version=1, generator_version=1), metrics,
            None if f1 is None else results(f1), origin)


F1 = [0.1, 0.3, 0.2, 0.6, 0.0, 0.4] * 5  # mean 0.2667
SECTION = PromoteConfig(bootstrap=500)
VERSIONS = {"retriever": 2, "generator": 2, "rag": 2}


def candidate(f1: list[float]) -> dict:
    _, metrics, per_question, _ = release(f1, sum(f1) / len(f1))
    return {"metrics": metrics, "per_question": per_question, "method": "fusion"}  # chosen


def test_a_retrain_with_identical_per_question_results_is_not_promoted():
    decision = decide(SECTION, 13, candidate(F1), release(F1, sum(F1) / len(F1)), VERSIONS)
    assert not decision["promoted"]
    f1 = decision["rules"][0]
    assert (f1["comparison"], f1["paired"], f1["change"]) == ("paired", 30, 0.0)
    assert f1["interval"] == {"lo": 0.0, "hi": 0.0, "method": "degenerate"}
    assert decision["pairing"]["mode"] == "paired" and decision["pairing"]["note"] is None
    assert decision["summary"] == ("release v2 is challenger; champion unchanged. Failed: "
                                   "answers.hybrid.token_f1: improvement +0 at the lower bound "
                                   "(need >= 0.01)")


def test_a_first_release_pairs_with_nothing():
    decision = decide(SECTION, 13, candidate(F1), (None, None, None, None), VERSIONS)
    assert decision["promoted"] and decision["first_release"] and decision["pairing"] is None
    assert decision["champion_version"] is None


def test_a_clearly_better_candidate_is_promoted():
    better = [v + 0.1 for v in F1]
    decision = decide(SECTION, 13, candidate(better), release(F1, sum(F1) / len(F1)), VERSIONS)
    assert decision["promoted"] and decision["rules"][0]["interval"]["lo"] == pytest.approx(0.1)
    assert decision["champion_version"] == {"retriever": 1, "generator": 1}


def test_a_champion_without_per_question_results_is_compared_on_point_estimates():
    from tasks.lib.gate import decision_markdown

    champion = release(None, 0.2, "rescore by setting promote.rescore: true")
    decision = decide(SECTION, 13, candidate([v + 0.02 for v in F1]), champion, VERSIONS)
    assert decision["promoted"]  # +0.087 on the logged mean: today's point comparison
    assert [r["comparison"] for r in decision["rules"]] == ["point", "point", "point"]
    assert decision["pairing"]["mode"] == "point"
    md = decision_markdown(decision)
    assert ("Compared: champion has no per-question results (released before they were logged); "
            "compared point estimates — rescore by setting promote.rescore: true\n") in md


def test_a_re_scored_champion_is_paired_and_the_decision_says_so():
    champion = release(F1, 0.9, "champion re-scored on the current eval set (none were logged)")
    decision = decide(SECTION, 13, candidate(F1), champion, VERSIONS)
    assert decision["pairing"]["mode"] == "paired" and decision["pairing"]["questions"] == 30
    assert decision["pairing"]["note"] == ("champion re-scored on the current eval set (none were "
                                           "logged)")
    assert decision["rules"][0]["champion"] == pytest.approx(sum(F1) / len(F1))  # not 0.9: paired


# ---- releases on a real registry (slow: the DVC stages run once per session) ----------------------


@pytest.mark.slow
def test_gate_rejects_then_promotes_then_rollback_restores(registry_overrides, tmp_path):
    from tasks.lib.registry import client, resolve_release

    overrides = registry_overrides
    reg = registry_ref(load_config(SMOKE, overrides))
    first = promote(overrides)
    assert first["promoted"] and first["first_release"]
    assert champion_versions(reg) == (1, 1)
    version = client(reg).get_model_version(RET, "1")
    tags = version.tags
    index = __import__("json").loads((Path(overrides["paths.reports_dir"]) / "index" /
                                      "index.json").read_text())["tables"]["candidate"]
    assert (tags["index.table"], tags["index.version"]) == (index["table"], str(index["version"]))
    assert tags["release.generator_version"] == "1" and tags["validation.success"] == "true"
    assert tags["data.qa_md5"] != "missing" and tags["git.commit"]
    method = tags["retrieval.method"]  # chosen by evaluate; the gate's retrieval.chosen rules
    assert set(tags) >= {"pipeline.run_id", "metric.answers.hybrid.token_f1",
                         f"metric.retrieval.{method}.ndcg_at_10",
                         f"metric.retrieval.{method}.p95_ms",
                         "release.inputs", "eval.digest", "eval.questions"}
    from tasks.lib.release_eval import release_per_question

    logged = release_per_question(client(reg), version)  # what the next candidate pairs with
    assert logged is not None and tags["eval.questions"] == str(len(logged["questions"]))
    assert client(reg).get_run(version.run_id).data.metrics["gate.promoted"] == 1.0
    assert "**Gate: promoted to `@champion`**" in version.description

    second = promote(overrides)  # same adapters and metrics: no token-F1 improvement
    assert not second["promoted"]
    assert champion_versions(reg) == (1, 1)  # untouched
    c = client(reg)
    assert int(c.get_model_version_by_alias(RET, "challenger").version) == 2
    assert int(c.get_model_version_by_alias(GEN, "challenger").version) == 2
    described = c.get_model_version(RET, "2").description  # the registry UI's Markdown
    assert described == c.get_model_version(GEN, "2").description
    assert "`@challenger`" in described and "Failed checks:" in described
    assert "| answer setup | token_f1 [95% interval] |" in described
    failed = [r["metric"] for r in second["rules"] if not r["passed"]]
    assert failed == ["answers.hybrid.token_f1"]
    assert second["pairing"]["mode"] == "paired" and second["pairing"]["note"] is None
    assert second["rules"][0]["interval"] == {"lo": 0.0, "hi": 0.0, "method": "degenerate"}
    decision = (Path(overrides["paths.reports_dir"]) / "promote" / "decision.md").read_text()
    assert "NOT PROMOTED" in decision and "champion unchanged" in decision

    third = promote(overrides, **{"promote.gate": FLOOR_ONLY})
    assert third["promoted"] and champion_versions(reg) == (3, 3)
    assert resolve_release(reg).tags["release.previous"] == "1"

    listed = tunedex("releases", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert "champion" in rows[1] and rows[1].split()[0] == "3"
    assert "challenger" in rows[2] and "rejected" in rows[2]

    done = tunedex("rollback", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "retriever v3 -> v1, generator v3 -> v1" in done.stdout
    assert champion_versions(reg) == (1, 1)
    assert client(reg).get_model_version(RET, "3").tags["release.rolled_back"] == "true"

    done = tunedex("search", "Which cards do you take?", "-k", "2", "-c", str(SMOKE),
                   *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # no --mode: the method release v1 was promoted with (its retrieval.method tag)
    chosen = client(reg).get_model_version(RET, "1").tags["retrieval.method"]
    assert done.stdout.splitlines()[0] == (
        f"{chosen} search, release champion (tunedex-retriever v1, generator v1), "
        f"table {index['table']} v{index['version']}")

    done = tunedex("rollback", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 2 and "no previous release" in done.stderr


@pytest.mark.slow
def test_a_champion_without_per_question_results_is_re_scored(registry_overrides, tmp_path):
    from tasks.lib.choice import read_chosen
    from tasks.lib.rescore import RESCORABLE_METHODS

    overrides = registry_overrides
    assert promote(overrides)["promoted"]
    # As for a release from before per-question results were logged: the artifact is deleted
    # from the store. The second promote runs as a user runs it, in a fresh process (an
    # in-process load after the whole suite's servers and threads is not what users run).
    logged = list(Path(overrides["tracking.artifact_location"]).rglob("per_question.json"))
    assert len(logged) == 1
    logged[0].unlink()
    done = tunedex("stage", "promote", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads((Path(overrides["paths.reports_dir"]) / "promote" / "decision.json"
                         ).read_text())
    assert second["pairing"]["mode"] == "paired", done.stderr[-3000:]
    assert second["pairing"]["note"] == ("champion re-scored on the current eval set (none were "
                                         "logged)")
    rows = {r["metric"]: r for r in second["rules"]}
    method = read_chosen(Path(overrides["paths.reports_dir"]) / "evaluate" / "retrieval.json")
    rescored = ["answers.hybrid.token_f1"] + ([f"retrieval.{method}.ndcg@10"]
                                              if method in RESCORABLE_METHODS else [])
    for metric in rescored:
        assert rows[metric]["comparison"] == "paired" and rows[metric]["change"] == 0.0, metric
        assert rows[metric]["interval"]["method"] == "degenerate", metric
    assert rows[f"retrieval.{method}.ndcg@10"]["change"] == 0.0
    assert not second["promoted"] and champion_versions(registry_ref(
        load_config(SMOKE, overrides))) == (1, 1)


@pytest.mark.slow
def test_crash_between_the_alias_moves_serves_one_whole_release(registry_overrides, monkeypatch):
    from mlflow.tracking import MlflowClient

    from tasks.lib.registry import adapter_dir, client, repair_mirror, resolve_release

    overrides = registry_overrides
    reg = registry_ref(load_config(SMOKE, overrides))
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

    c = client(reg)
    mirrors = {name: int(c.get_model_version_by_alias(name, "champion").version) for name in (RET, GEN)}
    assert mirrors != {RET: 1, GEN: 1} and mirrors != {RET: 2, GEN: 2}  # the aliases disagree
    release = resolve_release(reg)  # ... but what is served is one promotion's pair
    assert (release.retriever_version, release.generator_version) == (1, 1)
    served = adapter_dir(reg, GEN, release.generator_version)
    assert served.parent.parent.name.startswith(f"{GEN}-v1-")

    assert "release.inputs" not in c.get_model_version(RET, "2").tags  # the next retrain runs
    assert int(c.get_model_version_by_alias(reg.rag_model, "champion").version) == 1  # not moved
    assert repair_mirror(reg) and champion_versions(reg) == (1, 1)
    assert not repair_mirror(reg)  # nothing left to repair
    assert promote(overrides, **{"promote.gate": FLOOR_ONLY})["promoted"]
    assert champion_versions(reg) == (3, 3)
    rag = c.get_model_version_by_alias(reg.rag_model, "champion")  # the mirror moved with it
    assert str(rag.version) == c.get_model_version(RET, "3").tags["release.rag_version"]
