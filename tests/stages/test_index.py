"""index (tasks/index.py): what later stages read (the tables' state, no run stats) and what goes
to the metrics file, and which retrievers are indexed."""

import json

import pytest

from tasks.index import RUN_STATS, index_stage, missing_tables, retrievers, split_run_stats
from tasks.lib.context import StageContext

STATS = {"table": "chunks_ab", "version": 3, "rows": 10, "embedded": 4, "deleted": 1,
         "unchanged": 6, "seconds": 1.25, "encode_seconds": 1.0, "chunks_per_second": 3.2,
         "bytes": 4096}


def test_run_stats_stay_out_of_index_json():
    info, run = split_run_stats(STATS)
    assert info == {"table": "chunks_ab", "version": 3, "rows": 10}  # the table's state only
    assert run == {"embedded": 4, "deleted": 1, "unchanged": 6, "seconds": 1.25,
                   "encode_seconds": 1.0, "chunks_per_second": 3.2, "bytes": 4096}
    assert set(run) == set(RUN_STATS)
    assert STATS["seconds"] == 1.25 and len(STATS) == 10  # not mutated


def test_without_an_adapter_only_the_base_retriever_is_indexed(smoke_cfg):
    ctx = StageContext.of(smoke_cfg)
    [base] = retrievers(ctx)
    assert (base.role, base.adapter_dir) == ("base", None)
    assert len(base.fingerprint) == 12


def test_missing_index_info_is_a_reason_to_rerun(smoke_cfg):
    reason = missing_tables(StageContext.of(smoke_cfg).catalog)
    assert reason.endswith("index.json not found: run `tunedex stage index` (or the pipeline) first")


@pytest.mark.slow
def test_index_stage_writes_tables_and_timings_apart(smoke_cfg):
    """Base retriever only (no adapter trained): index.json names the table, metrics.json holds
    what the run did."""
    from tests.conftest import run_stages

    run_stages(smoke_cfg, ("validate", "prepare"))
    ctx = StageContext.of(smoke_cfg)
    result = index_stage(smoke_cfg.index, ctx)
    cat = ctx.catalog
    info = json.loads(cat.index_info_path.read_text())
    assert set(info) == {"index_uri", "retriever_id", "tables"} and set(info["tables"]) == {"base"}
    assert not set(RUN_STATS) & set(info["tables"]["base"])  # outputs are a function of inputs
    assert result["tables"] == info["tables"]
    metrics = json.loads(cat.stage_metrics_path("index").read_text())
    assert set(metrics) == {"base"} and set(metrics["base"]) == set(RUN_STATS)
    assert metrics["base"]["embedded"] == info["tables"]["base"]["rows"] > 0
    assert missing_tables(cat) is None  # every table it names opens
    before = cat.index_info_path.read_bytes()
    index_stage(smoke_cfg.index, ctx)
    assert json.loads(cat.stage_metrics_path("index").read_text())["base"]["embedded"] == 0
    assert cat.index_info_path.read_bytes() == before  # nothing changed: the same bytes
