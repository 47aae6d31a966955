"""Two evaluate runs on the same eval questions, paired question by question.

Usage:
    .venv/bin/python bench/paired_runs.py reports/covidfaq reports/covidfaq-raft \\
        --setups hybrid finetuned --metrics token_f1 groundedness

Reads <reports_dir>/evaluate/per_question.json and answers.json of each run (A, then B) and
prints each run's verdict and setup means, then B − A per setup and metric over the questions
both answered, with the same BCa bootstrap interval evaluate uses. The way to tell whether a
config change (e.g. train_generator.context_source: raft) moved the answers beyond noise: run
the pipeline twice with the same seed (same split, same questions) and compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.lib.metrics import paired_diff_ci  # noqa: E402


def load(reports: Path, name: str) -> dict:
    path = reports / "evaluate" / name
    if not path.is_file():
        sys.exit(f"{path}: not found (run evaluate with paths.reports_dir={reports})")
    return json.loads(path.read_text())


def paired(a: dict, b: dict, setup: str, metric: str, resamples: int) -> str | None:
    """'setup metric: B − A = mean [lo, hi] on n questions', or None when nothing pairs."""
    qa, qb = a["answers"].get(setup, {}), b["answers"].get(setup, {})
    common = sorted(q for q in qa if q in qb and qa[q].get(metric) is not None
                    and qb[q].get(metric) is not None)
    if not common:
        return None
    diff = paired_diff_ci([qb[q][metric] for q in common], [qa[q][metric] for q in common],
                          resamples, seed=0)
    return (f"{setup} {metric}: B − A = {diff['mean']:+.3f} [{diff['lo']:+.3f}, "
            f"{diff['hi']:+.3f}] on {len(common)} questions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="reports_dir of run A (the baseline)")
    parser.add_argument("b", type=Path, help="reports_dir of run B (the change)")
    parser.add_argument("--setups", nargs="+", default=["hybrid", "finetuned", "rag", "base"])
    parser.add_argument("--metrics", nargs="+", default=["token_f1", "groundedness"])
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    for label, reports in (("A", args.a), ("B", args.b)):
        answers = load(reports, "answers.json")
        print(f"{label} {reports}: {answers['verdict']}")
        for setup, scores in answers["summary"].items():
            means = ", ".join(f"{m} {scores[m]['mean']:.3f}" for m in args.metrics
                              if isinstance(scores.get(m), dict)
                              and scores[m].get("mean") is not None)
            print(f"    {setup:9s} {means}")
    a, b = load(args.a, "per_question.json"), load(args.b, "per_question.json")
    for setup in args.setups:
        for metric in args.metrics:
            line = paired(a, b, setup, metric, args.resamples)
            if line:
                print(line)


if __name__ == "__main__":
    main()
