"""The reindex flow (flows/reindex.py) on a released smoke run: documents added, changed and
deleted; the new table version pinned only when the retrieval rules hold."""

import json
from pathlib import Path

import pytest

from tests.conftest import SMOKE, TINY_DOCS, sets, tunedex, write_jsonl_lines


@pytest.mark.slow
def test_a_gate_without_retrieval_rules_is_refused_before_any_work(prefect_harness, tmp_path):
    from flows.reindex import reindex
    from tasks.lib.errors import ConfigError

    overrides = {"tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "lock.path": str(tmp_path / "lock"), "paths.reports_dir": str(tmp_path / "r"),
                 "promote.gate": [{"metric": "answers.hybrid.token_f1", "floor": 0.0}]}
    with pytest.raises(ConfigError, match="promote.gate has no rule on retrieval.bm25|lora|hybrid "
                                          "metrics"):
        reindex(config_path=str(SMOKE), overrides=overrides)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_reindex_reflects_added_changed_and_deleted_documents(released, tmp_path):
    """Changes the champion's table and index tags of the session's released run (the pipeline
    tests that share it read neither)."""
    from flows.reindex import reindex
    from tasks.lib.config import load_config
    from tasks.lib.registry import client, registry_ref, resolve_release

    reg = registry_ref(load_config(SMOKE, released))
    before = resolve_release(reg)
    changed = {**TINY_DOCS[1], "text": TINY_DOCS[1]["text"] + " We also accept American Express."}
    added = {"doc_id": "ref-01", "title": "Refunds",
             "text": "Refunds for an annual plan are paid back to the card within 14 days."}
    corpus = write_jsonl_lines(tmp_path / "corpus.jsonl", [TINY_DOCS[0], changed, added])  # sec-01 gone
    overrides = {**released, "paths.corpus_path": str(corpus)}

    strict = {**overrides, "promote.gate": [{"metric": "retrieval.fusion.ndcg@10", "floor": 1.01}]}
    kept = reindex(config_path=str(SMOKE), overrides=strict)
    assert kept["pin"]["outcome"] == "kept" and "keeps serving" in kept["pin"]["summary"]
    assert resolve_release(reg).table_version == before.table_version  # champion untouched
    assert kept["index"]["embedded"] >= 2 and kept["index"]["deleted"] >= 1

    lenient = {**overrides, "promote.gate": [{"metric": "retrieval.fusion.ndcg@10", "floor": 0.0}]}
    pinned = reindex(config_path=str(SMOKE), overrides=lenient)  # nothing new to embed, but the
    assert pinned["index"]["embedded"] == 0  # kept version is newer than the pin: pin it now
    assert pinned["pin"]["outcome"] == "pinned" and pinned["metrics"]["questions"] >= 1
    after = resolve_release(reg)
    assert after.retriever_version == before.retriever_version
    assert after.table_version == kept["index"]["version"] > before.table_version
    tags = client(reg).get_model_version("tunedex-retriever", str(after.retriever_version)).tags
    assert tags["index.previous_version"] == str(before.table_version)
    rag = client(reg).get_model_version_by_alias(reg.rag_model, "champion")  # the portable model
    assert tags["release.rag_version"] == str(rag.version)  # was re-registered with the new pin
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{reg.rag_model}@champion"))
    pyfunc = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert pyfunc["config"]["table_version"] == after.table_version

    done = tunedex("search", "refund card accept American Express code", "-k", "10", "--mode",
                   "bm25", "-c", str(SMOKE), *sets(lenient), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    docs = [line.split()[1] for line in done.stdout.splitlines()[1:]]
    assert {"ref-01", "pay-01"} <= set(docs) and "sec-01" not in docs
    assert "American Express" in done.stdout
    assert json.loads((Path(released["paths.reports_dir"]) / "reindex" / "reindex.json")
                      .read_text())["outcome"] == "pinned"
