"""The monitor flow end to end: a demo release (real MiniLM retriever, tiny generator) served
by a real uvicorn server, questions asked over HTTP, the monitor run under a real Prefect API.

Off-domain questions (PubMedQA) make drift fire and start the retrain deployment once; the
cooldown holds a second time; in-domain questions the release never saw do not fire; a tiny
log is a no-op; helpful answers become review rows that `tunedex accept-queries` adds to QA."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    REPO,
    SMOKE,
    clean_mlflow_env,
    isolated_overrides,
    promote_release,
    run_stages,
    sets,
    tunedex,
    uvicorn_app,
    write_jsonl_lines,
)

PUBMEDQA = REPO.parent / "shared" / "datasets" / "pubmedqa" / "pqal_dev.json"
HELD_OUT = ("-q5", "-q7")  # per article: one train-style and one eval-style question never used


def demo_rows() -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (REPO / "data/demo/qa.jsonl").read_text().splitlines()]
    return ([r for r in rows if not r["qid"].endswith(HELD_OUT)],
            [r for r in rows if r["qid"].endswith(HELD_OUT)])


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory) -> dict[str, str]:
    """The demo corpus and most of its questions, released with the real MiniLM retriever."""
    from tasks.lib.config import load_config

    root = tmp_path_factory.mktemp("monitored")
    kept, _ = demo_rows()
    overrides = {**isolated_overrides(root, REPO / "data/demo/corpus.jsonl",
                                      write_jsonl_lines(root / "raw" / "qa.jsonl", kept)),
                 "models.retriever_id": "sentence-transformers/all-MiniLM-L6-v2",
                 "prepare.chunk_tokens": 200, "prepare.chunk_overlap": 32,
                 "train_retriever.max_seq_length": 128, "evaluate.answer_questions": 4,
                 "serve.poll_seconds": 0, "serve.traces": False, "monitor.permutations": 300,
                 "serve.rate_limit_per_minute": 0}  # ~130 questions in a row from one client
    with clean_mlflow_env():
        run_stages(load_config(SMOKE, overrides))
        floor_only = [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]
        assert promote_release(overrides, **{"promote.gate": floor_only})["promoted"]
    return overrides


def ask_all(client: httpx.Client, questions: list[str], path: str = "/search") -> list[dict]:
    key = "query" if path == "/search" else "question"
    out = []
    for q in questions:
        response = client.post(path, json={key: q})
        assert response.status_code == 200, response.text
        out.append(response.json())
    return out


def run_monitor(overrides: dict) -> dict:
    from flows.monitor import monitor

    with clean_mlflow_env():
        return monitor(config_path=str(SMOKE), overrides=overrides)


def retrain_runs(deployment_id) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id]))))


@pytest.mark.slow
def test_monitor_judges_drift_triggers_once_and_harvests(demo_release, prefect_harness, tmp_path,
                                                         monkeypatch):
    from flows.pipeline import pipeline
    from flows.serve import create_app
    from tasks.lib.catalog import Catalog
    from tasks.lib.config import load_config

    if not PUBMEDQA.is_file():
        pytest.skip(f"{PUBMEDQA} (the shared datasets) is not here: no off-domain questions")
    monkeypatch.chdir(tmp_path)
    overrides = demo_release
    cfg = load_config(SMOKE, overrides)
    cat = Catalog(cfg.paths)
    _, held_out = demo_rows()
    random.Random(0).shuffle(held_out)  # users ask across the help centre, not article by article
    off_domain = [v["QUESTION"] for v in json.loads(PUBMEDQA.read_text()).values()]

    with clean_mlflow_env(), uvicorn_app(create_app(cfg)) as base, \
            httpx.Client(base_url=base, timeout=120) as client:
        # 1. A tiny log: "not enough data", nothing decided, the questions wait for the next run.
        ask_all(client, [r["question"] for r in held_out[:5]])
        tiny = run_monitor(overrides)
        assert not tiny["volume"]["enough"] and tiny["decision"]["action"] == "none"
        assert "not enough data" in tiny["drift"]["status"]

        # 2. In-domain questions the release never saw (both registers): no drift, no trigger.
        #    Helpful answers (rated +1) are proposed for review.
        ask_all(client, [r["question"] for r in held_out[5:40]])
        answers = ask_all(client, [r["question"] for r in held_out[40:50]], "/ask")
        for a in answers:
            assert client.post("/feedback", json={"request_id": a["request_id"],
                                                  "rating": 1}).status_code == 204
        calm = run_monitor(overrides)
        assert calm["volume"]["questions"] == 50 and calm["volume"]["feedback"] == 10
        assert calm["drift"]["p_value"] >= 0.01, calm["drift"]
        assert calm["decision"]["action"] == "none", calm["decision"]
        assert calm["harvest"]["added"] >= 1

        # 3. Off-domain questions: drift fires and the retrain deployment is started, once.
        deployment_id = pipeline.to_deployment(name="retrain").apply()
        ask_all(client, off_domain[:40])
        drifted = run_monitor(overrides)
        assert drifted["drift"]["p_value"] < 0.01 and drifted["volume"]["questions"] == 40
        assert drifted["decision"]["action"] == "triggered", drifted["decision"]
        assert "drift.p_value" in drifted["decision"]["reason"]
        assert retrain_runs(deployment_id) == 1
        assert drifted["examples"] and drifted["examples"][0]["question"] in off_domain[:40]

        # 4. Still drifting an hour later: the cooldown holds.
        ask_all(client, off_domain[40:80])
        again = run_monitor(overrides)
        assert again["decision"]["action"] == "cooldown" and retrain_runs(deployment_id) == 1

    # The report, the history and the MLflow series.
    page = (cat.monitor_dir / "report.html").read_text()
    assert "Monitor — release v1" in page and "cooldown" in page
    history = [json.loads(line) for line in cat.monitor_history_path.read_text().splitlines()]
    assert [h["action"] for h in history] == ["none", "none", "triggered", "cooldown"]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    series = client.get_metric_history(drifted["mlflow_run_id"], "monitor.drift.p_value")
    assert [m.step for m in series] == [2, 3, 4]  # the tiny run had no p-value

    # Reviewed questions into the QA data, as a person does it: edit the review file (write an
    # answer where the tiny generator gave none, accept), then the CLI.
    qa_path = Path(overrides["paths.qa_path"])
    before = qa_path.read_text().count("\n")
    review = [json.loads(line) for line in cat.review_path.read_text().splitlines()]
    assert len(review) == calm["harvest"]["added"]
    assert all(r["review"] == "pending" and r["metadata"]["source"] == "served" for r in review)
    cat.review_path.write_text("".join(json.dumps({**r, "review": "accept", "answer": r["answer"]
                                                   or "Written by the reviewer."}) + "\n"
                                       for r in review))
    done = tunedex("accept-queries", "-c", str(SMOKE), *sets(overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    added = [json.loads(line) for line in qa_path.read_text().splitlines()[before:]]
    assert [r["qid"] for r in added] == [r["qid"] for r in review]
    assert all(r["split"] == "train" and r["answer"] and r["doc_ids"] for r in added)
    assert "next: git add" in done.stdout
    assert {json.loads(line)["review"] for line in cat.review_path.read_text().splitlines()} == {
        "accepted"}
