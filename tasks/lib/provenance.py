"""Where the questions came from: real (qa.jsonl) or synthetic (the synthesize stage), and the
warning a synthetic eval set carries on the scoreboard (tasks/lib/scoreboard.py, report.py).

Apart from tasks/lib/synthesis.py, so a change to the prompt does not rerun evaluate.
"""

from __future__ import annotations

from typing import Any

# index role -> question source of the adapter behind it (train_retriever's retriever_sources)
SOURCE_ROLES = {"candidate_real": "real", "candidate_synthetic": "synthetic"}


def is_synthetic(row: dict[str, Any]) -> bool:
    """True for a row synthesize wrote."""
    meta = row.get("metadata")
    return isinstance(meta, dict) and bool(meta.get("synthetic"))


def provenance(train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]]
               ) -> dict[str, Any]:
    """Where the train questions came from (real / synthetic / both, with counts) and whether
    the eval set is synthetic: what the scoreboard shows next to the verdict."""
    synthetic = sum(is_synthetic(r) for r in train_rows)
    real = len(train_rows) - synthetic
    source = "both" if synthetic and real else "synthetic" if synthetic else "real"
    eval_synthetic = sum(is_synthetic(r) for r in eval_rows)
    return {"train_source": source, "train_real": real, "train_synthetic": synthetic,
            "eval_synthetic": bool(eval_rows) and eval_synthetic == len(eval_rows),
            "eval_synthetic_questions": eval_synthetic}


SYNTHETIC_EVAL_WARNING = ("eval set is synthetic — its questions were written from the corpus "
                          "by the pipeline, not asked by users; scores measure agreement with "
                          "generated questions and flatter methods that match their wording. "
                          "Add a qa.jsonl of real questions before trusting the verdict.")


def provenance_line(prov: dict[str, Any]) -> str:
    """One line for scoreboard.md and report.html: the train questions' source with counts."""
    return (f"Training questions: {prov['train_source']} ({prov['train_real']} real, "
            f"{prov['train_synthetic']} synthetic).")
