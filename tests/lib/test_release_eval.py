"""A release's per-question results in the registry (tasks/lib/release_eval.py): read back, or
re-scored when they cannot be paired with the candidate's; against a fake MLflow client."""

import json
from pathlib import Path
from types import SimpleNamespace

from tasks.lib.config import PromoteConfig
from tasks.lib.release_eval import read_champion, release_per_question


def results(qids: list[str], asked: str = "Q") -> dict:
    return {"questions": [{"qid": q, "question": f"{asked} {q}", "reference": "A", "doc_ids": [],
                           "metadata": {}} for q in qids],
            "retrieval": {}, "answers": {"hybrid": {q: {"token_f1": 0.5} for q in qids}}}


class Client:
    """The MlflowClient calls read_champion makes: a champion v1 whose run logged `logged`."""

    def __init__(self, logged: dict | None, champion: bool = True):
        self.logged, self.champion = logged, champion

    def get_model_version_by_alias(self, name, alias):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if not self.champion:
            raise MlflowException("no alias", error_code=RESOURCE_DOES_NOT_EXIST)
        return SimpleNamespace(version="1", run_id="r1", tags={
            "release.generator_version": "1", "index.uri": "lancedb", "index.table": "t",
            "index.version": "3", "retriever.base_model": "ret", "generator.base_model": "gen"})

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(metrics={"eval.answers.hybrid.token_f1": 0.5}))

    def list_artifacts(self, run_id, path):
        assert (run_id, path) == ("r1", "evaluate")
        return [SimpleNamespace(path="evaluate/per_question.json")] if self.logged else []

    def download_artifacts(self, run_id, path, dst):
        out = Path(dst) / "per_question.json"
        out.write_text(json.dumps(self.logged))
        return str(out)


REG = SimpleNamespace(retriever_model="tunedex-retriever")
CAND = {"per_question": results([f"q{i}" for i in range(10)])}


def never(release, questions):
    raise AssertionError("re-scored although the logged results pair")


def test_release_per_question_reads_the_artifact_or_none():
    version = SimpleNamespace(run_id="r1")
    assert release_per_question(Client(results(["q1"])), version) == results(["q1"])
    assert release_per_question(Client(None), version) is None  # released before it was logged


def test_no_champion():
    assert read_champion(Client(None, champion=False), REG, PromoteConfig(), CAND, never) == (
        None, None, None, None)


def test_logged_results_that_pair_are_used_as_they_are():
    logged = results([f"q{i}" for i in range(9)])  # 9 of 10 shared: >= 80%
    release, metrics, per_question, origin = read_champion(Client(logged), REG, PromoteConfig(),
                                                           CAND, never)
    assert (release.retriever_version, release.table_version) == (1, 3)
    assert metrics == {"answers.hybrid.token_f1": 0.5}
    assert per_question == logged and origin is None


def test_missing_or_unpairable_results_are_re_scored_on_the_current_questions():
    calls = []

    def rescore(release, questions):
        calls.append((release.retriever_version, questions))
        return results([f"q{i}" for i in range(10)])

    _, _, per_question, origin = read_champion(Client(None), REG, PromoteConfig(), CAND, rescore)
    assert calls == [(1, CAND["per_question"])] and per_question == CAND["per_question"]
    assert origin == "champion re-scored on the current eval set (none were logged)"
    other = results([f"q{i}" for i in range(10)], asked="Other")
    origin = read_champion(Client(other), REG, PromoteConfig(), CAND, rescore)[3]
    assert origin == ("champion re-scored on the current eval set (its logged ones are from "
                      "another eval set)")


def test_re_scoring_off_or_failing_leaves_the_logged_results_and_says_why():
    off = read_champion(Client(None), REG, PromoteConfig(rescore=False), CAND, never)
    assert off[2] is None and off[3] == "rescore by setting promote.rescore: true"

    def broken(release, questions):
        raise FileNotFoundError("LanceDB table t is gone\nmore detail")

    failed = read_champion(Client(None), REG, PromoteConfig(), CAND, broken)
    assert failed[2] is None and failed[3] == "re-scoring failed: LanceDB table t is gone"


def test_a_candidate_without_results_is_not_re_scored_against():
    assert read_champion(Client(None), REG, PromoteConfig(), {"per_question": None}, never)[3] is None
