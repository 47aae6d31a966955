"""Unattended runs: the deployments (code and prefect.yaml), skip-if-unchanged, reindex after
adding/changing/deleting documents, the write lock, retries and failure hooks — real Prefect
flow runs (test harness API), a real MLflow store and LanceDB tables."""

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SMOKE, TINY_DOCS, tiny_release_dir, write_jsonl_lines
from tests.flows.test_cli import sets, tunedex

# ---- deployment definitions (no server needed) ----------------------------------------------


def test_deployments_in_code_follow_the_config():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.deployments import build_deployments

    overrides = {"schedule.retrain_cron": "30 1 * * *", "schedule.timezone": "Europe/Berlin",
                 "schedule.collision_strategy": "CANCEL_NEW"}
    retrain, reindex = build_deployments(str(SMOKE), overrides)
    assert (retrain.name, retrain.flow_name) == ("retrain", "tunedex-pipeline")
    assert (reindex.name, reindex.flow_name) == ("reindex", "tunedex-reindex")
    assert retrain.schedules[0].schedule.cron == "30 1 * * *"
    assert retrain.schedules[0].schedule.timezone == "Europe/Berlin"
    assert reindex.schedules[0].schedule.cron == "0 */4 * * *"  # the default
    for d in (retrain, reindex):
        assert d.parameters == {"config_path": str(SMOKE), "overrides": overrides}
        assert d.concurrency_limit == 1
        assert d.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW


def test_prefect_yaml_matches_the_deployments_in_code(monkeypatch):
    from prefect.cli.deploy._models import PrefectYamlModel  # what `prefect deploy` validates with
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.flows import load_flow_from_entrypoint

    from flows.deployments import build_deployments

    raw = yaml.safe_load((REPO / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(raw)
    monkeypatch.chdir(REPO)
    in_code = {d.name: d for d in build_deployments("configs/cpu.yaml")}
    in_yaml = {d["name"]: d for d in raw["deployments"]}
    assert set(in_yaml) == set(in_code) == {"retrain", "reindex"}
    for name, spec in in_yaml.items():
        code = in_code[name]
        flow = load_flow_from_entrypoint(spec["entrypoint"])
        assert flow.name == code.flow_name
        flow.validate_parameters(spec["parameters"])
        assert spec["parameters"] == code.parameters
        (schedule,) = spec["schedules"]
        assert schedule["cron"] == code.schedules[0].schedule.cron
        assert schedule["timezone"] == code.schedules[0].schedule.timezone
        assert spec["concurrency_limit"]["limit"] == code.concurrency_limit == 1
        assert ConcurrencyLimitStrategy(spec["concurrency_limit"]["collision_strategy"]) == \
            code.concurrency_options.collision_strategy
        assert spec["work_pool"]["name"] == "tunedex-local"


def test_io_tasks_retry_training_and_promotion_do_not():
    from prefect.states import Failed

    from tasks.lib.errors import DataError
    from tasks.evaluate import evaluate
    from tasks.index import index
    from tasks.prepare import prepare
    from tasks.promote import promote
    from tasks.lib.runtime import retry_on_io
    from tasks.train_generator import train_generator
    from tasks.train_retriever import train_retriever
    from tasks.validate import validate

    assert [t.retries for t in (validate, prepare, index, evaluate)] == [3, 3, 3, 3]
    assert [t.retries for t in (train_retriever, train_generator, promote)] == [0, 0, 0]
    assert retry_on_io(index, None, Failed(data=OSError("disk hiccup")))
    assert retry_on_io(index, None, Failed(data=RuntimeError("LanceError(IO): connection reset")))
    assert not retry_on_io(index, None, Failed(data=DataError("x.jsonl", 3, "text", "a string")))
    assert not retry_on_io(index, None, Failed(data=KeyError("a bug is not transient")))


# ---- flows on a released smoke run ----------------------------------------------------------


@pytest.fixture(scope="module")
def released(tmp_path_factory, prefect_harness) -> dict[str, str]:
    """A smoke pipeline flow run whose release is champion, in its own directory."""
    from flows.pipeline import pipeline

    overrides = tiny_release_dir(tmp_path_factory.mktemp("released"))
    result = pipeline(config_path=str(SMOKE), overrides=overrides)
    assert result["promote"]["promoted"]
    return overrides


def parent_runs(overrides) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=overrides["tracking.tracking_uri"])
    experiment = client.get_experiment_by_name("tunedex-smoke")
    return client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'pipeline'")


@pytest.mark.slow
def test_unchanged_retrain_trains_nothing_and_says_why(released):
    from flows.pipeline import pipeline
    from tasks.lib.config import load_config
    from tasks.promote import unchanged_release

    before = len(parent_runs(released))
    result = pipeline(config_path=str(SMOKE), overrides=released)
    assert result["skipped"] and result["release"] == 1
    assert "unchanged since release v1 (champion" in result["reason"]
    assert len(parent_runs(released)) == before  # no run, nothing trained or registered

    changed = load_config(SMOKE, {**released, "train_retriever.learning_rate": 1e-4})
    assert unchanged_release(changed) is None  # a param change retrains
    corpus = Path(released["paths.corpus_path"])
    other = write_jsonl_lines(corpus.with_name("corpus-edited.jsonl"),
                              [*TINY_DOCS[:2], {**TINY_DOCS[2], "text": TINY_DOCS[2]["text"] + "!"}])
    assert unchanged_release(load_config(SMOKE, {**released, "paths.corpus_path": str(other)})) is None
    same_content = corpus.with_name("corpus-copy.jsonl")
    same_content.write_bytes(corpus.read_bytes())  # another path, same bytes: still unchanged
    assert unchanged_release(load_config(SMOKE, {**released,
                                                 "paths.corpus_path": str(same_content)}))


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


@pytest.mark.slow
def test_reindex_reflects_added_changed_and_deleted_documents(released, tmp_path):
    """Runs last in this module: it changes the champion's table and tags."""
    from flows.reindex import reindex
    from tasks.lib.config import load_config
    from tasks.lib.registry import client, resolve_release

    cfg = load_config(SMOKE, released)
    before = resolve_release(cfg)
    changed = {**TINY_DOCS[1], "text": TINY_DOCS[1]["text"] + " We also accept American Express."}
    added = {"doc_id": "ref-01", "title": "Refunds",
             "text": "Refunds for an annual plan are paid back to the card within 14 days."}
    corpus = write_jsonl_lines(tmp_path / "corpus.jsonl", [TINY_DOCS[0], changed, added])  # sec-01 gone
    overrides = {**released, "paths.corpus_path": str(corpus)}

    strict = {**overrides, "promote.gate": [{"metric": "retrieval.hybrid.ndcg@10", "floor": 1.01}]}
    kept = reindex(config_path=str(SMOKE), overrides=strict)
    assert kept["pin"]["outcome"] == "kept" and "keeps serving" in kept["pin"]["summary"]
    assert resolve_release(cfg).table_version == before.table_version  # champion untouched
    assert kept["index"]["embedded"] >= 2 and kept["index"]["deleted"] >= 1

    lenient = {**overrides, "promote.gate": [{"metric": "retrieval.hybrid.ndcg@10", "floor": 0.0}]}
    pinned = reindex(config_path=str(SMOKE), overrides=lenient)  # nothing new to embed, but the
    assert pinned["index"]["embedded"] == 0  # kept version is newer than the pin: pin it now
    assert pinned["pin"]["outcome"] == "pinned" and pinned["metrics"]["questions"] >= 1
    after = resolve_release(cfg)
    assert after.retriever_version == before.retriever_version
    assert after.table_version == kept["index"]["version"] > before.table_version
    tags = client(cfg).get_model_version("tunedex-retriever", str(after.retriever_version)).tags
    assert tags["index.previous_version"] == str(before.table_version)

    done = tunedex("search", "refund card accept American Express code", "-k", "10", "--mode",
                   "bm25", "-c", str(SMOKE), *sets(lenient), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [line.split()[1] for line in done.stdout.splitlines()[1:]]
    assert {"ref-01", "pay-01"} <= set(docs) and "sec-01" not in docs
    assert "American Express" in done.stdout
    assert json.loads((Path(released["paths.reports_dir"]) / "reindex" / "reindex.json")
                      .read_text())["outcome"] == "pinned"
