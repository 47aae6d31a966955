"""Sharded embedding (tasks/lib/shards.py): the same vectors as one encode call, on threads and
on a local Dask cluster."""

import json

import numpy as np
import pytest

from tasks.lib.config import IndexConfig
from tasks.lib.errors import ConfigError
from tests.conftest import SMOKE, run_stages


def test_split_keeps_order_and_sizes():
    from tasks.lib.shards import split

    parts = split(list(range(10)), 3)
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split([1, 2], 5) == [[1], [2]]  # never an empty shard
    assert split([1, 2, 3], 1) == [[1, 2, 3]] and split([1, 2, 3], 0) == [[1, 2, 3]]


def test_one_shard_is_the_plain_encode():
    from tasks.lib.shards import sharded_encoder

    assert sharded_encoder("base", None, IndexConfig(shards=1)) is None
    assert callable(sharded_encoder("base", None, IndexConfig(shards=2)))


def test_task_runner_follows_the_config():
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks.lib.shards import task_runner

    runner = task_runner(IndexConfig(shards=3, task_runner="thread"))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    try:
        import prefect_dask  # noqa: F401
    except ImportError:  # a bare install: the error says which extra to add
        with pytest.raises(ConfigError, match="index.task_runner: dask needs prefect-dask"):
            task_runner(IndexConfig(shards=2, task_runner="dask"))
        return
    local = task_runner(IndexConfig(shards=2, task_runner="dask"))
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                    "dashboard_address": None}
    remote = task_runner(IndexConfig(shards=2, task_runner="dask", dask_address="tcp://s:8786"))
    assert remote.address == "tcp://s:8786"


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_sharded_index_task_matches_single_encode(runner, prefect_harness, smoke_overrides):
    """The index task inside a flow, shards mapped over the task runner (dask: a local
    LocalCluster with 2 worker processes); vectors equal a plain index run's."""
    from prefect import flow

    from tasks.index import index
    from tasks.lib.config import load_config
    from tasks.lib.context import StageContext
    from tasks.lib.search import connect

    if runner == "dask":  # the dev extra installs it; a bare install may lack it
        pytest.importorskip("prefect_dask", reason="prefect-dask (extra `scale`) not installed")
    cfg = load_config(SMOKE, smoke_overrides)
    run_stages(cfg, ("validate", "prepare"))

    sharded = load_config(SMOKE, {**smoke_overrides, "index.shards": 2, "index.task_runner": runner,
                                  "paths.index_uri": smoke_overrides["paths.index_uri"] + "-sharded"})

    @flow
    def index_flow(c):
        return index(c.index, StageContext.of(c), None)

    def embedded(c) -> int:  # what the last index run did (reports/index/metrics.json)
        return json.loads(StageContext.of(c).catalog.stage_metrics_path("index").read_text())[
            "base"]["embedded"]

    plain = index_flow(cfg)["tables"]["base"]
    plain_embedded = embedded(cfg)
    split_run = index_flow(sharded)["tables"]["base"]
    assert embedded(sharded) == plain_embedded > 2
    assert split_run["rows"] == plain["rows"] == plain_embedded

    def vectors(uri, name):
        rows = connect(uri).open_table(name).to_arrow().to_pylist()
        return {r["chunk_id"]: np.asarray(r["vector"]) for r in rows}

    a = vectors(cfg.paths.index_uri, plain["table"])
    b = vectors(sharded.paths.index_uri, split_run["table"])
    assert a.keys() == b.keys()
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
