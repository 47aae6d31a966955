"""Shared fixtures: tiny contract-conforming data, a smoke config in a temp dir, one Prefect harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.env import set_offline_env

set_offline_env()  # before anything imports prefect/mlflow

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"

TINY_DOCS = [
    {"doc_id": "plan-01", "title": "Choosing a plan",
     "text": "The Basic plan costs 4 euros a month and includes 10 GB of storage. The Pro plan "
             "costs 9 euros a month, includes 200 GB of storage and priority support by chat.",
     "metadata": {"topic": "plans"}},
    {"doc_id": "pay-01", "title": "Paying by card",
     "text": "We accept Visa and Mastercard. Cards are charged on the first working day of each "
             "month. A failed payment is retried twice, three days apart, before the account is "
             "paused."},
    {"doc_id": "sec-01", "title": "Two-step sign-in",
     "text": "Two-step sign-in sends a six-digit code by text message. Codes expire after ten "
             "minutes. Lost your phone? Use one of the eight backup codes printed at set-up."},
]
TINY_QA = [
    {"qid": "q1", "question": "How much is the Basic plan?", "answer": "4 euros a month.",
     "doc_ids": ["plan-01"], "split": "train"},
    {"qid": "q2", "question": "How much storage comes with Pro?", "answer": "200 GB.",
     "doc_ids": ["plan-01"], "split": "train"},
    {"qid": "q3", "question": "Which cards do you take?", "answer": "Visa and Mastercard.",
     "doc_ids": ["pay-01"], "split": "train"},
    {"qid": "q4", "question": "When is my card charged?",
     "answer": "On the first working day of each month.", "doc_ids": ["pay-01"], "split": "train"},
    {"qid": "q5", "question": "How long does a sign-in code last?", "answer": "Ten minutes.",
     "doc_ids": ["sec-01"], "split": "train"},
    {"qid": "q6", "question": "my payment bounced, what happens now?",
     "answer": "It is retried twice, three days apart, then the account is paused.",
     "doc_ids": ["pay-01"], "split": "eval"},
    {"qid": "q7", "question": "phone gone, how do I get into my account?",
     "answer": "Use one of the eight backup codes.", "doc_ids": ["sec-01"], "split": "eval"},
    {"qid": "q8", "question": "Is chat support part of the cheap plan?",
     "answer": "No, priority chat support comes with Pro.", "doc_ids": ["plan-01"]},
]


def write_jsonl_lines(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written as-is) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    """A valid three-document corpus and eight-question QA file in tmp_path/raw."""
    return {"corpus": write_jsonl_lines(tmp_path / "raw" / "corpus.jsonl", TINY_DOCS),
            "qa": write_jsonl_lines(tmp_path / "raw" / "qa.jsonl", TINY_QA)}


def isolated_overrides(root: Path, corpus: Path, qa: Path) -> dict[str, str]:
    """Config overrides putting every output (and the MLflow store, artifacts, lock) under root."""
    return {"paths.corpus_path": str(corpus), "paths.qa_path": str(qa),
            "paths.prepared_dir": str(root / "prepared"),
            "paths.reports_dir": str(root / "reports"),
            "paths.models_dir": str(root / "model-cache"),
            "paths.adapters_dir": str(root / "adapters"),
            "paths.index_uri": str(root / "lancedb"),
            "tracking.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "tracking.artifact_location": str(root / "artifacts"),
            "lock.path": str(root / "tunedex.lock")}


def tiny_release_dir(root: Path) -> dict[str, str]:
    """Tiny raw data written under root, and isolated overrides for a module-scoped run."""
    return isolated_overrides(root, write_jsonl_lines(root / "raw" / "corpus.jsonl", TINY_DOCS),
                              write_jsonl_lines(root / "raw" / "qa.jsonl", TINY_QA))


@pytest.fixture
def smoke_overrides(tmp_path: Path, tiny_data: dict[str, Path], monkeypatch) -> dict[str, str]:
    """Config overrides pointing every path and the MLflow store into tmp_path (also the cwd)."""
    monkeypatch.chdir(tmp_path)
    overrides = isolated_overrides(tmp_path, tiny_data["corpus"], tiny_data["qa"])
    del overrides["tracking.artifact_location"]  # the default: ./mlruns in the cwd (tmp_path)
    return overrides


@pytest.fixture
def smoke_cfg(smoke_overrides):
    """The smoke profile with all paths in a temp dir."""
    from tasks.lib.config import load_config

    return load_config(SMOKE, smoke_overrides)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (a fresh DB takes ~15 s to migrate)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
