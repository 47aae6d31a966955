"""What every stage receives besides its own config section: the catalog and the run settings.

A stage function is `<stage>_stage(section, ctx)` (plus the other sections it reads, by name):
it never sees the whole config. The resolved config is logged whole once, by the parent run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tasks.lib.catalog import Catalog
from tasks.lib.config import LockConfig, ModelsConfig, ProjectConfig, TrackingConfig


@dataclass(frozen=True)
class StageContext:
    project: ProjectConfig  # seed, experiment name, profile
    models: ModelsConfig  # base model ids (what every model-touching stage reads)
    tracking: TrackingConfig  # where MLflow runs go
    lock: LockConfig  # the write lock every stage run holds
    catalog: Catalog  # every artifact path
    parent_run_id: str | None = None  # the pipeline's MLflow run; None: the stage's run is top-level
    incremental: Any = None  # tasks.lib.incremental.Incremental: the flow may reuse stages (DVC)

    @classmethod
    def of(cls, cfg: Any, parent_run_id: str | None = None) -> StageContext:
        """The context of one config (the only place a whole config is taken apart)."""
        return cls(cfg.project, cfg.models, cfg.tracking, cfg.lock, Catalog(cfg.paths),
                   parent_run_id)

    def under(self, parent_run_id: str | None, incremental: Any = None) -> StageContext:
        """The same context inside another parent run (and incremental plan)."""
        return replace(self, parent_run_id=parent_run_id, incremental=incremental)

    @property
    def seed(self) -> int:
        return self.project.seed
