"""The retrain flow (flows/pipeline.py) for real: Prefect (test harness API), a sqlite MLflow
store, GX validation, tiny models; its retry policy, skip-if-unchanged, the write lock and the
failure hook."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flows.pipeline import DVC_STAGES, FLOW_STAGES
from tasks.lib.errors import ValidationFailed
from tasks.lib.files import file_md5
from tests.conftest import REPO, SMOKE, TINY_DOCS, sets, tunedex, write_jsonl_lines


def test_flow_stages_match_dvc_yaml():
    dvc_stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert list(DVC_STAGES) == dvc_stages
    assert list(FLOW_STAGES) == [*dvc_stages, "promote"]  # promote moves aliases, not files


def test_io_tasks_retry_training_and_promotion_do_not():
    from tasks.evaluate import evaluate
    from tasks.index import index
    from tasks.prepare import prepare
    from tasks.promote import promote
    from tasks.synthesize import synthesize
    from tasks.train_generator import train_generator
    from tasks.train_retriever import train_retriever
    from tasks.validate import validate

    steps = (validate, synthesize, prepare, train_retriever, index, train_generator, evaluate,
             promote)
    assert [t.name for t in steps] == list(FLOW_STAGES)  # task name = stage name
    # synthesize: only transient I/O errors are retried (the cache keeps finished batches)
    assert [t.retries for t in (validate, synthesize, prepare, index, evaluate)] == [3] * 5
    assert [t.retries for t in (train_retriever, train_generator, promote)] == [0, 0, 0]


def runs_of(uri: str, parent_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return parent, {r.info.run_name: r for r in children}


@pytest.mark.slow
def test_pipeline_flow_records_parent_and_stage_runs(prefect_harness, smoke_overrides, tmp_path):
    from flows.pipeline import pipeline

    result = pipeline(config_path=str(SMOKE), overrides=smoke_overrides)

    parent, children = runs_of(smoke_overrides["tracking.tracking_uri"], result["run_id"])
    assert parent.info.status == "FINISHED"
    assert sorted(children) == sorted(FLOW_STAGES)
    assert all(r.info.status == "FINISHED" for r in children.values())
    tags = parent.data.tags
    assert tags["data.corpus_md5"] == file_md5(smoke_overrides["paths.corpus_path"])
    assert tags["data.qa_md5"] == file_md5(smoke_overrides["paths.qa_path"])
    assert len(tags["git.commit"]) in (40, 7) or tags["git.commit"] == "unknown"
    assert parent.data.params["prepare.chunk_tokens"] == "32"
    assert children["prepare"].data.params["prepare.chunk_tokens"] == "32"

    raw = {i.dataset.name: i.dataset.digest for i in children["validate"].inputs.dataset_inputs}
    assert set(raw) == {"raw_corpus", "raw_qa"} and all(raw.values())
    prepared = {i.dataset.name for i in children["prepare"].inputs.dataset_inputs}
    assert prepared == {"chunks", "train_qa", "eval_qa"}
    assert children["validate"].data.metrics["failed_expectations"] == 0
    assert children["prepare"].data.metrics["documents"] == 3

    out = Path(smoke_overrides["paths.prepared_dir"])
    assert result["prepare"]["chunks"] == len((out / "chunks.jsonl").read_text().splitlines())
    train = (out / "train_qa.jsonl").read_text().splitlines()
    evals = (out / "eval_qa.jsonl").read_text().splitlines()
    assert len(train) + len(evals) == 8
    assert result["prepare"]["split_from_data"] == 7

    adapter = Path(smoke_overrides["paths.adapters_dir"]) / "retriever"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()  # adapter only, never the base weights
    assert result["train_retriever"]["steps"] == 2
    assert 0 < result["train_retriever"]["trainable_parameters"] < result["train_retriever"][
        "total_parameters"]
    assert children["train_retriever"].data.metrics["train_loss"] > 0

    tables = result["index"]["tables"]
    assert set(tables) == {"base", "candidate"}
    assert tables["base"]["table"] != tables["candidate"]["table"]
    assert tables["base"]["rows"] == result["prepare"]["chunks"]
    assert children["index"].data.tags["index.candidate.table"] == tables["candidate"]["table"]

    scoreboard = result["evaluate"]["retrieval"]
    assert set(scoreboard["methods"]) == {"bm25", "base", "lora", "fusion", "fusion_native"}
    assert scoreboard["questions"] == len(evals)
    reports = Path(smoke_overrides["paths.reports_dir"]) / "evaluate"
    assert "| fusion |" in (reports / "retrieval.md").read_text()

    generator = Path(smoke_overrides["paths.adapters_dir"]) / "generator"
    assert (generator / "adapter_model.safetensors").is_file()
    assert result["train_generator"]["steps"] == 2
    assert 0 <= result["train_generator"]["padding_share"] < 1  # computed on the real batches
    answers = result["evaluate"]["answers"]
    assert set(answers["summary"]) == {"base", "finetuned", "rag", "hybrid"}
    assert answers["questions"] == len(evals) and answers["verdict"]
    assert "groundedness" not in answers["summary"]["base"]
    rows = __import__("json").loads((reports / "answers.json").read_text())["answers"]
    # at most generate.context_k chunks of context, each citing its document
    assert all(1 <= len(r["cited"]) <= 2 for r in rows["rag"] + rows["hybrid"]), rows["rag"]
    assert all(r["cited"] == [] and r["groundedness"] is None for r in rows["base"])
    rec = answers["recommendation"]
    assert rec["option"] in ("base", "fine-tune", "embed", "both") and answers["verdict"] == rec["summary"]
    page = (reports / "report.html").read_text()
    assert "id=recommendation" in page and page.count("<tr data-qid=") == len(evals)
    assert page.count("<svg") == 4  # quality, cost vs quality, both loss curves, the embedding map
    assert "fine-tuning + embeddings" in (reports / "scoreboard.md").read_text()
    metrics = __import__("json").loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"retrieval", "answers"}

    done = tunedex("search", "How much is the Basic plan?", "-k", "2", "-c", str(SMOKE),
                   *sets(smoke_overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert result["promote"]["promoted"] and result["promote"]["first_release"]
    chosen = json.loads((reports / "retrieval.json").read_text())["chosen"]["method"]
    assert lines[0] == (f"{chosen} search, release champion (tunedex-retriever v1, generator v1), "
                        f"table {tables['candidate']['table']} v{tables['candidate']['version']}")
    # k=2 at most (BM25, if chosen, lists only documents sharing a query word)
    assert 2 <= len(lines) <= 3 and lines[1].lstrip().startswith("1. plan-01")

    done = tunedex("ask", "Which cards do you take?", "--setup", "hybrid", "-c", str(SMOKE),
                   *sets(smoke_overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sources = done.stdout.splitlines()[-1]
    assert sources.startswith("sources: ") and set(sources[9:].split(", ")) <= {
        "plan-01", "pay-01", "sec-01"}

    check_through_mlflow_server(smoke_overrides["tracking.tracking_uri"], result["run_id"], tmp_path)


@pytest.mark.slow
def test_failed_validation_stops_before_prepare(prefect_harness, smoke_overrides, tmp_path):
    from flows.pipeline import pipeline

    write_jsonl_lines(Path(smoke_overrides["paths.corpus_path"]),
                      [*TINY_DOCS, {**TINY_DOCS[1]}])  # duplicate doc_id
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_unique on column 'doc_id'"):
        pipeline(config_path=str(SMOKE), overrides=smoke_overrides)

    assert not Path(smoke_overrides["paths.prepared_dir"]).exists()
    summary = Path(smoke_overrides["paths.reports_dir"]) / "validation" / "summary.md"
    assert "# Validation FAILED" in summary.read_text()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=smoke_overrides["tracking.tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("tunedex-smoke").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == {"pipeline", "validate"}  # nothing after validate ran
    assert by_name["validate"].info.status == "FAILED"
    assert by_name["pipeline"].info.status == "FAILED"
    artifacts = {a.path for a in client.list_artifacts(by_name["validate"].info.run_id, "validation")}
    assert "validation/summary.md" in artifacts


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_through_mlflow_server(store_uri: str, parent_id: str, tmp_path: Path) -> None:
    """Start a real `mlflow server` on a free loopback port over the pipeline's store and check,
    through its REST API, what the UI shows: runs, nested stage runs, metrics, the scoreboard
    artifact, registered versions with their aliases."""
    import json
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=os.environ.copy())

    def get(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if path.startswith("/api/") else {"text": raw.decode()}

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get("/health")["text"].strip() == "OK":
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
            time.sleep(1)

        parent = get(f"/api/2.0/mlflow/runs/get?run_id={parent_id}")["run"]
        assert parent["info"]["status"] == "FINISHED"
        experiment = parent["info"]["experiment_id"]
        runs = get("/api/2.0/mlflow/runs/search", {
            "experiment_ids": [experiment],
            "filter": f"tags.mlflow.parentRunId = '{parent_id}'"})["runs"]
        children = {r["info"]["run_name"]: r for r in runs}
        assert sorted(children) == sorted(FLOW_STAGES)
        evaluate = children["evaluate"]
        metrics = {m["key"]: m["value"] for m in evaluate["data"]["metrics"]}
        assert 0 <= metrics["retrieval.fusion.ndcg_at_10"] <= 1
        listed = get(f"/api/2.0/mlflow/artifacts/list?run_id={evaluate['info']['run_id']}"
                     "&path=evaluate")
        assert "evaluate/scoreboard.md" in {f["path"] for f in listed["files"]}
        scoreboard = get(f"/get-artifact?path=evaluate/scoreboard.md&run_uuid="
                         f"{evaluate['info']['run_id']}")["text"]
        assert scoreboard.startswith("# tunedex scoreboard")

        for name in ("tunedex-retriever", "tunedex-generator"):
            model = get(f"/api/2.0/mlflow/registered-models/get?name={name}")["registered_model"]
            assert {a["alias"]: a["version"] for a in model["aliases"]} == {"champion": "1"}
            version = get(f"/api/2.0/mlflow/model-versions/get?name={name}&version=1")[
                "model_version"]
            tags = {t["key"]: t["value"] for t in version["tags"]}
            assert tags["pipeline.run_id"] == parent_id and tags["gate.decision"] == "promoted"
            assert version["run_id"] == children["promote"]["info"]["run_id"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.parametrize("registry_uri", ["bogus://nowhere", "http://127.0.0.1:9"])
def test_unreachable_registry_fails_before_training(prefect_harness, smoke_overrides, registry_uri):
    from flows.pipeline import pipeline
    from tasks.lib.errors import ConfigError

    overrides = {**smoke_overrides, "tracking.registry_uri": registry_uri}
    with pytest.raises(ConfigError, match=f"MLflow model registry at '{registry_uri}' is "
                                          "unreachable .*nothing was trained"):
        pipeline(config_path=str(SMOKE), overrides=overrides)
    assert not Path(smoke_overrides["paths.prepared_dir"]).exists()
    assert not Path(smoke_overrides["paths.adapters_dir"]).exists()
    assert not Path(smoke_overrides["paths.reports_dir"]).exists()


# ---- on a released smoke run (one pipeline flow run per session) ----------------------------


def parent_runs(overrides) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=overrides["tracking.tracking_uri"])
    experiment = client.get_experiment_by_name("tunedex-smoke")
    return client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'pipeline'")


@pytest.mark.slow
def test_unchanged_retrain_trains_nothing_and_says_why(released):
    from flows.pipeline import pipeline
    from tasks.lib.config import load_config
    from tasks.lib.registry import registry_ref
    from tasks.lib.release_skip import release_inputs, unchanged_release

    def unchanged(cfg):
        return unchanged_release(registry_ref(cfg), release_inputs(cfg))

    before = len(parent_runs(released))
    result = pipeline(config_path=str(SMOKE), overrides=released)
    assert result["skipped"] and result["release"] == 1
    assert "unchanged since release v1 (champion" in result["reason"]
    assert len(parent_runs(released)) == before  # no run, nothing trained or registered

    changed = load_config(SMOKE, {**released, "train_retriever.learning_rate": 1e-4})
    assert unchanged(changed) is None  # a param change retrains
    corpus = Path(released["paths.corpus_path"])
    other = write_jsonl_lines(corpus.with_name("corpus-edited.jsonl"),
                              [*TINY_DOCS[:2], {**TINY_DOCS[2], "text": TINY_DOCS[2]["text"] + "!"}])
    assert unchanged(load_config(SMOKE, {**released, "paths.corpus_path": str(other)})) is None
    same_content = corpus.with_name("corpus-copy.jsonl")
    same_content.write_bytes(corpus.read_bytes())  # another path, same bytes: still unchanged
    assert unchanged(load_config(SMOKE, {**released, "paths.corpus_path": str(same_content)}))


HOLD_LOCK = textwrap.dedent("""
    import json, os, sys, time
    from filelock import FileLock
    path = sys.argv[1]
    lock = FileLock(path)
    lock.acquire()  # keep the reference: a collected FileLock releases
    with open(path + ".holder", "w") as f:
        json.dump({"what": "scheduled retrain", "pid": os.getpid(), "host": "box", "since": "now"}, f)
    print("held", flush=True)
    time.sleep(120)
""")


@pytest.mark.slow
def test_a_second_writer_fails_or_waits_with_a_clear_message(released):
    from flows.pipeline import pipeline
    from tasks.lib.lock import LockBusy

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, released["lock.path"]],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=r"another tunedex run holds the write lock .*"
                                           r"scheduled retrain \(pid \d+ on box"):
            pipeline(config_path=str(SMOKE), overrides={**released, "lock.on_busy": "fail"},
                     force=True)
        started = time.monotonic()
        with pytest.raises(LockBusy, match="gave up after 2 s waiting for the write lock"):
            pipeline(config_path=str(SMOKE), force=True,
                     overrides={**released, "lock.on_busy": "wait", "lock.wait_seconds": 2})
        assert time.monotonic() - started >= 2  # it did wait
    finally:
        holder.kill()
        holder.wait()
    assert len(parent_runs(released)) == 1  # neither run started


@pytest.mark.slow
def test_failed_flow_calls_the_failure_hook(released, tmp_path, caplog):
    from flows.pipeline import pipeline
    from tasks.lib.errors import TunedexError

    caplog.set_level("ERROR", logger="tunedex.notify")
    with pytest.raises(TunedexError, match="missing.jsonl"):
        pipeline(config_path=str(SMOKE), force=True,
                 overrides={**released, "paths.corpus_path": str(tmp_path / "missing.jsonl")})
    notes = [r.getMessage() for r in caplog.records if r.name == "tunedex.notify"]
    assert notes and "tunedex flow 'tunedex-pipeline'" in notes[0] and "ended FAILED" in notes[0]
