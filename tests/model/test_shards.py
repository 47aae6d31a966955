"""Sharded embedding: the same vectors as one encode call, on threads and on a local Dask cluster."""

import numpy as np
import pytest

from tests.conftest import SMOKE


def test_split_keeps_order_and_sizes():
    from tasks.lib.shards import split

    parts = split(list(range(10)), 3)
    assert parts == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert split([1, 2], 5) == [[1], [2]]  # never an empty shard


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_sharded_index_task_matches_single_encode(runner, prefect_harness, smoke_overrides):
    """The index task inside a flow, shards mapped over the task runner (dask: a local
    LocalCluster with 2 worker processes); vectors equal a plain index run's."""
    from prefect import flow

    from flows.cli import stage_functions
    from tasks.lib.config import load_config
    from tasks.index import index
    from tasks.lib.search import connect

    if runner == "dask":  # the dev extra installs it; a bare install may lack it
        pytest.importorskip("prefect_dask", reason="prefect-dask (extra `scale`) not installed")
    cfg = load_config(SMOKE, smoke_overrides)
    functions = {s.value: fn for s, fn in stage_functions().items()}
    functions["validate"](cfg)
    functions["prepare"](cfg)

    sharded = load_config(SMOKE, {**smoke_overrides, "index.shards": 2, "index.task_runner": runner,
                                  "paths.index_uri": smoke_overrides["paths.index_uri"] + "-sharded"})

    @flow
    def index_flow(c):
        return index(c, None)

    plain = index_flow(cfg)["tables"]["base"]
    split_run = index_flow(sharded)["tables"]["base"]
    assert split_run["embedded"] == plain["embedded"] > 2

    def vectors(uri, name):
        rows = connect(uri).open_table(name).to_arrow().to_pylist()
        return {r["chunk_id"]: np.asarray(r["vector"]) for r in rows}

    a = vectors(cfg.paths.index_uri, plain["table"])
    b = vectors(sharded.paths.index_uri, split_run["table"])
    assert a.keys() == b.keys()
    assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a)
