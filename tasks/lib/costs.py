"""What a stage cost: trainable parameters, bytes on disk, peak memory (the scoreboard's cost columns)."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts of a torch module."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def dir_bytes(path: Path) -> int:
    """Total size of the files in a directory."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
