"""evaluate's plot files for `dvc plots show` / `dvc plots diff`: lists of records DVC draws.

One row per retrieval method and one per answer setup, means taken from evaluate's metrics
(names as the data has them). No latencies: the files are a function of the inputs, so a diff
between two commits shows what changed in quality, not in the machine's load. The stage table
(tasks/lib/stages.py) declares them, with the charts; the training stages' loss curves are
written by record_training (tasks/lib/tracking.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RETRIEVAL_PLOTTED = ("ndcg@10", "recall@10")  # bars per method
ANSWERS_PLOTTED = ("token_f1", "rouge_l")  # bars per setup


def method_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"method", "ndcg@10", "recall@10"}] from evaluate's metrics, in the metrics' order."""
    return [{"method": method, **{m: row.get(m) for m in RETRIEVAL_PLOTTED}}
            for method, row in metrics.get("retrieval", {}).items()]


def setup_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"setup", "token_f1", "rouge_l"}] from evaluate's metrics, in the metrics' order."""
    return [{"setup": setup, **{m: row.get(m) for m in ANSWERS_PLOTTED}}
            for setup, row in metrics.get("answers", {}).items()]


def write_evaluate_plots(cat: Any, metrics: dict[str, Any]) -> tuple[Path, Path]:
    """Write reports/evaluate/plots/{retrieval,answers}.json."""
    from tasks.lib.files import write_json

    return (write_json(cat.retrieval_plot_path, method_rows(metrics)),
            write_json(cat.answers_plot_path, setup_rows(metrics)))
