"""train_generator: LoRA supervised fine-tuning of the causal LM on (question [+ context]) -> answer.

Reads data/prepared/train_qa.jsonl and reports/index/index.json (the candidate retriever's table:
context for a seeded share of examples; with `context_source: raft` also data/prepared/chunks.jsonl
for each question's oracle chunk); writes the adapter only (plus base-model sidecar and the
config it was trained with) to <adapters_dir>/generator and reports/train_generator/metrics.json
and loss.json (the loss per step, for `dvc plots`); logs the loss curve to MLflow.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from prefect import task

from tasks.lib.config import IndexConfig, TrainGeneratorConfig
from tasks.lib.context import StageContext
from tasks.lib.errors import DataError

log = logging.getLogger(__name__)

# ---- pure ---------------------------------------------------------------------------------------


def sample_rows(rows: list[dict[str, Any]], cap: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of at most `cap` rows (all when cap is 0), in their original order."""
    if not cap or cap >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def context_role(info: dict[str, Any]) -> str:
    """Which indexed retriever gives training context: the candidate (LoRA) when indexed."""
    return "candidate" if "candidate" in info["tables"] else "base"


# ---- effects ------------------------------------------------------------------------------------


RAFT_DEPTH = 5  # retrieved hits beyond context_k, so that distractors remain without own docs


def training_contexts(section: TrainGeneratorConfig, index_section: IndexConfig, ctx: StageContext,
                      rows: list[dict[str, Any]]) -> tuple[list[list[str] | None], dict[str, int]]:
    """Chunk texts for the seeded context share of rows (None for the others), and counts of
    what RAFT gave (empty for `retrieved`): the top context_k hits, or RAFT's oracle/distractors."""
    from tasks.lib.data import read_jsonl
    from tasks.lib.models import retriever_base_dir
    from tasks.lib.raft import raft_contexts
    from tasks.lib.search import load_index_info, open_retriever, retrieve_contexts
    from tasks.lib.sft import context_mask

    mask = context_mask(len(rows), section.context_share, ctx.seed)
    chosen = [r for r, m in zip(rows, mask, strict=True) if m]
    if not chosen:
        return [None] * len(rows), {}
    info = load_index_info(ctx.catalog)
    table, model = open_retriever(info, context_role(info),
                                  retriever_base_dir(ctx.models, ctx.catalog.models_dir),
                                  index_section.device, index_section.precision)
    raft = section.context_source == "raft"
    k = section.context_k + (RAFT_DEPTH if raft else 0)
    hits = retrieve_contexts(table, model, [r["question"] for r in chosen], k, index_section)
    if raft:
        texts, counts = raft_contexts(chosen, hits, read_jsonl(ctx.catalog.chunks_path),
                                      section.context_k, section.raft_oracle_share, ctx.seed)
    else:
        texts, counts = [[h["text"] for h in row_hits] for row_hits in hits], {}
    picked = iter(texts)
    return [next(picked) if m else None for m in mask], counts


def train_generator_stage(section: TrainGeneratorConfig, index_section: IndexConfig,
                          ctx: StageContext) -> dict[str, Any]:
    """Train the generator adapter in its MLflow stage run (entry point for flow, CLI and DVC)."""
    from tasks.lib.costs import dir_bytes, peak_rss_mb, trainable_parameters
    from tasks.lib.data import read_jsonl
    from tasks.lib.generator import generator_base_dir, load_generator, save_adapter
    from tasks.lib.models import pick_device
    from tasks.lib.sft import build_sft_examples, train_lora_generator
    from tasks.lib.tracking import record_training, section_dict, stage_run

    cat = ctx.catalog
    with stage_run(ctx, "train_generator", section, index_section):
        rows = sample_rows(read_jsonl(cat.train_qa_path), section.max_examples, ctx.seed)
        if not rows:
            raise DataError(str(cat.train_qa_path), None, None, "no train questions for the generator")
        contexts, raft_counts = training_contexts(section, index_section, ctx, rows)
        base_dir = generator_base_dir(ctx.models, cat.models_dir)
        device = pick_device(section.device)
        model, tokenizer = load_generator(base_dir, None, device)
        examples, counts = build_sft_examples(tokenizer, rows, contexts, section.max_seq_length,
                                              even_cut=section.context_source == "raft")
        counts.update(raft_counts)
        if not examples:
            raise DataError(str(cat.train_qa_path), None, None, "every example is longer than "
                            f"train_generator.max_seq_length ({section.max_seq_length})")
        log.info("train_generator: %d examples (%d with context, %d context cut, %d answers cut) "
                 "on %s", counts["examples"], counts["with_context"], counts["truncated_context"],
                 counts["truncated_answer"], device)
        if raft_counts:
            log.info("train_generator: RAFT context (p=%.2f): %d with the oracle chunk, %d "
                     "distractors only, %d without an oracle (retrieved hits)",
                     section.raft_oracle_share, raft_counts["raft_oracle"],
                     raft_counts["raft_distractors"], raft_counts["raft_no_oracle"])
        started = time.perf_counter()
        peft_model, history = train_lora_generator(model, tokenizer, examples, section, ctx.seed,
                                                   device)
        seconds = time.perf_counter() - started
        trainable, total = trainable_parameters(peft_model)
        trained_with = {"train_generator": section_dict(section), "index": section_dict(index_section),
                        "models": section_dict(ctx.models), "seed": ctx.seed}
        out_dir = save_adapter(peft_model, cat.generator_adapter_dir, ctx.models.generator_id,
                               base_dir, {"config": trained_with})
        tokens = sum(h["tokens"] for h in history)
        slots = sum(h["slots"] for h in history)
        stats = {**counts, "steps": len(history), "train_seconds": round(seconds, 2),
                 "train_tokens": tokens, "tokens_per_second": round(tokens / seconds, 1),
                 "padding_share": round(1 - tokens / slots, 3),
                 "trainable_parameters": trainable, "total_parameters": total,
                 "adapter_bytes": dir_bytes(out_dir), "peak_rss_mb": round(peak_rss_mb(), 1),
                 "final_loss": history[-1]["loss"]}
        record_training(cat, "train_generator", history, stats, out_dir, "generator_adapter")
        log.info("train_generator: %d steps in %.0f s (%.0f tokens/s, %.0f%% of the batches "
                 "padding), %d trainable params, adapter %.1f MB -> %s", len(history), seconds,
                 stats["tokens_per_second"], 100 * stats["padding_share"], trainable,
                 stats["adapter_bytes"] / 1e6, out_dir)
    return {**stats, "adapter_dir": str(out_dir)}


# ---- Prefect task -------------------------------------------------------------------------------


@task(name="train_generator")
def train_generator(section: TrainGeneratorConfig, index_section: IndexConfig, ctx: StageContext,
                    prepared: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any]:
    """Train the LoRA generator adapter on `prepared`, with context from `tables` (index's
    result). Not retried: training is not an idempotent I/O step."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "train_generator",
                        lambda: train_generator_stage(section, index_section, ctx))
