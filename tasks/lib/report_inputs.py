"""What the report page needs beyond the scores, gathered by evaluate from what it has open: chunk
and question vectors under each retriever (the embedding map), the training loss curves (MLflow),
and the per-question rows. Effects live here so that tasks/lib/report*.py stay pure."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAP_CHUNKS = 2000  # chunks drawn per map panel (an even sample beyond): keeps the SVG small
MAP_QUESTIONS = 500  # eval questions drawn per panel
ROLE_LABELS = {"base": "base retriever", "candidate": "LoRA retriever"}
LOSS_STAGES = ("train_retriever", "train_generator")


def spread(n: int, limit: int) -> np.ndarray:
    """Indices of an even sample of at most `limit` out of n (deterministic)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, limit)).astype(int)) if n else np.arange(0)


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def embedding_spaces(tables: dict[str, Any], models: dict[str, Any],
                     questions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per indexed role (base, candidate): its table's chunk vectors and the eval questions
    encoded by its retriever (the tables and models evaluate's open_indexed returns)."""
    spaces = {}
    picked = [questions[i] for i in spread(len(questions), MAP_QUESTIONS)]
    for role, table in tables.items():
        if role not in models or role not in ROLE_LABELS:  # per-source adapters: rows, not maps
            continue
        data = table.to_arrow().select(["vector", "doc_id"])
        data = data.take(spread(data.num_rows, MAP_CHUNKS))
        # fixed-size list column -> one flat numpy buffer (no per-float Python objects)
        flat = data.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = flat.reshape(data.num_rows, -1).astype(np.float32)
        encoded = models[role].encode([q["question"] for q in picked], batch_size=64,
                                      normalize_embeddings=True, convert_to_numpy=True)
        spaces[ROLE_LABELS.get(role, role)] = {
            "chunks": unit(vectors), "chunk_doc_ids": data.column("doc_id").to_pylist(),
            "questions": unit(np.asarray(encoded, dtype=np.float32)),
            "question_doc_ids": [q.get("doc_ids") or [] for q in picked]}
    return spaces


def loss_histories(experiment_id: str) -> dict[str, list[dict[str, float]]]:
    """The loss per step of the latest finished run of each training stage. The curves live only
    in MLflow (record_training logs `train_loss`); a run that reused an unchanged adapter logs no
    new run, so the latest one is the one that trained it. Missing curves are left out, with a
    warning: a plot is not worth failing evaluate for."""
    from mlflow import MlflowClient

    client, out = MlflowClient(), {}
    for stage in LOSS_STAGES:
        try:
            runs = client.search_runs(
                [experiment_id], f"tags.`tunedex.stage` = '{stage}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"], max_results=1)
            history = client.get_metric_history(runs[0].info.run_id, "train_loss") if runs else []
        except Exception as exc:  # noqa: BLE001 - any store error costs only the plot
            log.warning("report: no %s loss curve from MLflow (%s)", stage, exc)
            continue
        out[stage] = [{"step": m.step, "loss": m.value} for m in sorted(history, key=lambda m: m.step)]
    return out
