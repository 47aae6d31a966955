"""What a stage receives besides its section (tasks/lib/context.py)."""

import pytest

from tasks.lib.catalog import Catalog
from tasks.lib.config import load_config
from tasks.lib.context import StageContext
from tests.conftest import SMOKE


@pytest.fixture
def cfg(tmp_path):
    return load_config(SMOKE, {"project.seed": 7, "paths.reports_dir": str(tmp_path / "r"),
                               "lock.path": str(tmp_path / "lock")})


def test_of_takes_the_whole_config_apart(cfg):
    ctx = StageContext.of(cfg)
    assert ctx.project is cfg.project and ctx.models is cfg.models
    assert ctx.tracking is cfg.tracking and ctx.lock is cfg.lock
    assert ctx.catalog == Catalog(cfg.paths)
    assert ctx.catalog.stage_dir("index") == Catalog(cfg.paths).stage_dir("index")
    assert (ctx.parent_run_id, ctx.incremental) == (None, None)  # top-level, nothing reused
    assert ctx.seed == 7
    assert StageContext.of(cfg, "run-1").parent_run_id == "run-1"


def test_under_returns_a_new_context(cfg):
    ctx = StageContext.of(cfg)
    plan = object()
    inner = ctx.under("parent", plan)
    assert (inner.parent_run_id, inner.incremental) == ("parent", plan)
    assert (ctx.parent_run_id, ctx.incremental) == (None, None)  # the original is unchanged
    assert inner.catalog == ctx.catalog and inner.project is ctx.project
    assert ctx.under(None).incremental is None


def test_a_context_is_frozen_and_has_no_whole_config(cfg):
    ctx = StageContext.of(cfg)
    with pytest.raises(AttributeError):
        ctx.parent_run_id = "x"
    for section in ("prepare", "index", "train_retriever", "promote", "paths", "validate_"):
        assert not hasattr(ctx, section)
