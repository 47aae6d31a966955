"""train_generator: LoRA supervised fine-tuning of the causal LM on (question [+ context]) -> answer.

Reads data/prepared/train_qa.jsonl and the candidate retriever's table (context for a seeded
share of examples); writes the adapter only (plus base-model sidecar and resolved config) to
<adapters_dir>/generator and reports/train_generator/metrics.json; logs the loss curve to MLflow.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import Config
from tasks.errors import DataError

log = logging.getLogger(__name__)


def sample_rows(rows: list[dict[str, Any]], cap: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of at most `cap` rows (all when cap is 0), in their original order."""
    if not cap or cap >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def generator_adapter_dir(cfg: Config) -> Path:
    """Where the candidate generator adapter lives."""
    return Path(cfg.paths.adapters_dir) / "generator"


def generator_base_dir(cfg: Config) -> Path:
    """The configured generator's base model directory (resolved offline first)."""
    from tasks.generator import resolve_generator_dir

    return resolve_generator_dir(cfg.models.generator_id, cfg.models.allow_download,
                                 cfg.paths.models_dir)


def training_contexts(cfg: Config, rows: list[dict[str, Any]]) -> list[list[str] | None]:
    """Retrieved chunk texts for the seeded context share of rows (None for the others)."""
    from tasks.search import load_index_info, open_retriever, retrieve_contexts
    from tasks.sft import context_mask

    tcfg = cfg.train_generator
    mask = context_mask(len(rows), tcfg.context_share, cfg.project.seed)
    chosen = [r["question"] for r, m in zip(rows, mask, strict=True) if m]
    if not chosen:
        return [None] * len(rows)
    info = load_index_info(cfg)
    role = "candidate" if "candidate" in info["tables"] else "base"
    table, model = open_retriever(cfg, info, role)
    hits = iter(retrieve_contexts(table, model, chosen, tcfg.context_k, cfg.index))
    return [[h["text"] for h in next(hits)] if m else None for m in mask]


def train_generator_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train the generator adapter in its MLflow stage run (entry point for flow, CLI and DVC)."""

    from tasks.data import read_jsonl
    from tasks.generator import load_generator, save_adapter
    from tasks.models import pick_device
    from tasks.sft import build_sft_examples, train_lora_generator
    from tasks.tracking import record_training, stage_run
    from tasks.train_retriever import dir_bytes, peak_rss_mb, trainable_parameters

    tcfg = cfg.train_generator
    with stage_run(cfg, "train_generator", parent_run_id):
        train_path = Path(cfg.paths.prepared_dir) / "train_qa.jsonl"
        rows = sample_rows(read_jsonl(train_path), tcfg.max_examples, cfg.project.seed)
        if not rows:
            raise DataError(str(train_path), None, None, "no train questions for the generator")
        contexts = training_contexts(cfg, rows)
        base_dir = generator_base_dir(cfg)
        device = pick_device(tcfg.device)
        model, tokenizer = load_generator(base_dir, None, device)
        examples, counts = build_sft_examples(tokenizer, rows, contexts, tcfg.max_seq_length)
        if not examples:
            raise DataError(str(train_path), None, None, "every example is longer than "
                            f"train_generator.max_seq_length ({tcfg.max_seq_length})")
        log.info("train_generator: %d examples (%d with context, %d context cut, %d answers cut) "
                 "on %s", counts["examples"], counts["with_context"], counts["truncated_context"],
                 counts["truncated_answer"], device)
        started = time.perf_counter()
        peft_model, history = train_lora_generator(model, tokenizer, examples, tcfg,
                                                   cfg.project.seed, device)
        seconds = time.perf_counter() - started
        trainable, total = trainable_parameters(peft_model)
        out_dir = save_adapter(peft_model, generator_adapter_dir(cfg), cfg.models.generator_id,
                               base_dir, {"config": cfg.to_dict()["train_generator"]})
        (out_dir / "resolved_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        tokens = sum(h["tokens"] for h in history)
        stats = {**counts, "steps": len(history), "train_seconds": round(seconds, 2),
                 "train_tokens": tokens, "tokens_per_second": round(tokens / seconds, 1),
                 "trainable_parameters": trainable, "total_parameters": total,
                 "adapter_bytes": dir_bytes(out_dir), "peak_rss_mb": round(peak_rss_mb(), 1),
                 "final_loss": history[-1]["loss"]}
        record_training(cfg, "train_generator", history, stats, out_dir, "generator_adapter")
        log.info("train_generator: %d steps in %.0f s (%.0f tokens/s), %d trainable params, "
                 "adapter %.1f MB -> %s", len(history), seconds, stats["tokens_per_second"],
                 trainable, stats["adapter_bytes"] / 1e6, out_dir)
    return stats


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="train_generator")
def train_generator(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train the LoRA generator adapter (not retried: training is not an idempotent I/O step)."""
    return train_generator_stage(cfg, parent_run_id)
