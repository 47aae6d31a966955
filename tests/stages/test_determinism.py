"""Outputs are a function of inputs: each stage run twice on the same inputs writes byte-identical
outputs (what later stages and DVC hash); timings and sizes live only in metrics files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks.lib.context import StageContext
from tasks.lib.stages import BY_NAME, DVC_STAGES


def digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file under a directory (by relative name)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def outputs(stage: str, cat) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in BY_NAME[stage].outs(cat):
        assert path.exists(), f"{stage} did not write {path}"
        out |= digest(path)
    return out


def run(cfg, stage: str, ctx: StageContext) -> None:
    from flows.cli import run_one_stage

    run_one_stage(cfg, stage, ctx.parent_run_id)


@pytest.mark.slow
def test_each_stage_twice_writes_the_same_bytes(smoke_cfg):
    ctx = StageContext.of(smoke_cfg)
    stages = [s for s in DVC_STAGES if BY_NAME[s].outs(ctx.catalog)]
    assert stages == ["validate", "synthesize", "prepare", "train_retriever", "index",
                      "train_generator", "evaluate"]
    for stage in stages:
        run(smoke_cfg, stage, ctx)
        first = outputs(stage, ctx.catalog)
        run(smoke_cfg, stage, ctx)
        assert outputs(stage, ctx.catalog) == first, f"{stage}: outputs differ between two runs"


def test_no_timing_or_absolute_path_in_what_stages_read(smoke_cfg):
    """The stage table keeps timings in metrics files, which no stage lists as a dependency."""
    from tasks.lib.stages import STAGES

    cat = StageContext.of(smoke_cfg).catalog
    metrics = {p for s in STAGES for p in s.metrics(cat)}
    deps = {p for s in STAGES for p in s.deps(cat)}
    assert metrics and not metrics & deps
    reports = {p for s in STAGES for p in s.reports(cat)}
    assert not reports & deps
    plots = {p for s in STAGES for p in s.plots(cat)}  # loss curves, bars: DVC plots only
    assert len(plots) == 4 and not plots & deps


@pytest.mark.slow
def test_adapters_hold_no_model_card_or_machine_path(smoke_cfg):
    ctx = StageContext.of(smoke_cfg)
    for stage in ("validate", "prepare", "train_retriever"):
        run(smoke_cfg, stage, ctx)
    adapter = ctx.catalog.retriever_adapter_dir
    assert not (adapter / "README.md").exists()
    config = (adapter / "adapter_config.json").read_text()
    assert '"base_model_name_or_path": "tunedex/tiny-retriever"' in config
    assert str(Path.cwd()) not in "".join(p.read_text(errors="ignore") for p in adapter.rglob("*.json"))
