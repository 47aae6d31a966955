"""train_retriever: LoRA on the sentence-transformers retriever, in-batch-negatives contrastive loss.

Reads data/prepared (train questions, chunks); writes the adapter only (plus the config section
it was trained with and the base model it belongs to) to <adapters_dir>/retriever, its costs to
reports/train_retriever/metrics.json and its loss per step to loss.json (for `dvc plots`), and
logs it with its loss curve to MLflow.

When the train questions are both real and synthetic (synthesize.mode add) and
train_retriever.compare_sources is on, it also trains one adapter on each source alone, same
config and seed, into <adapters_dir>/retriever_sources/{real,synthetic}: index embeds them and
evaluate scores them as the rows lora_real / lora_synthetic. sources.json there says what was
trained, or why nothing was.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefect import task

from tasks.lib.config import TrainRetrieverConfig
from tasks.lib.context import StageContext
from tasks.lib.errors import DataError
from tasks.lib.text import best_chunk, passage_text

log = logging.getLogger(__name__)

# ---- pure: training pairs ---------------------------------------------------------------------


def training_pairs(train_qa: list[dict[str, Any]], chunks: list[dict[str, Any]],
                   qa_path: str) -> list[dict[str, Any]]:
    """(question, relevant chunk) pairs: one per supporting document of each train question."""
    if not chunks:
        raise DataError(qa_path, None, None, "the corpus has no chunks to train on")
    by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in chunks:
        by_doc[chunk["doc_id"]].append(chunk)
    pairs = []
    for row in train_qa:
        for doc_id in row["doc_ids"]:
            if not by_doc.get(doc_id):
                raise DataError(qa_path, row.get("line"), "doc_ids",
                                f"question {row['qid']}: document '{doc_id}' has no chunk after "
                                "chunking")
            chunk = best_chunk(row["question"], row["answer"], by_doc[doc_id])
            pairs.append({"anchor": row["question"], "positive": passage_text(chunk),
                          "doc_id": doc_id})
    return pairs


def source_rows(train_qa: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The train questions by source: {"real": [...], "synthetic": [...]} (metadata.synthetic)."""
    from tasks.lib.provenance import is_synthetic

    return {"real": [r for r in train_qa if not is_synthetic(r)],
            "synthetic": [r for r in train_qa if is_synthetic(r)]}


def sources_plan(by_source: dict[str, list[dict[str, Any]]], enabled: bool) -> dict[str, Any]:
    """Whether to train an adapter per source, and why: both sources, each with 2+ questions
    (in-batch negatives need a second pair), and train_retriever.compare_sources on."""
    counts = {s: len(rows) for s, rows in by_source.items()}
    if not enabled:
        why = "train_retriever.compare_sources is off"
    elif not all(counts.values()):
        why = f"the train questions come from one source only ({counts})"
    elif min(counts.values()) < 2:
        why = f"a source has under 2 train questions ({counts})"
    else:
        return {"compared": True, "questions": counts,
                "why": f"real and synthetic train questions ({counts}): one adapter on each alone"}
    return {"compared": False, "questions": counts, "why": why}


def pick_negatives(ranked: list[list[int]], pair_docs: list[str], chunk_docs: list[str],
                   n: int) -> list[list[int]]:
    """For each pair, the first `n` ranked chunks that belong to another document."""
    return [[i for i in order if chunk_docs[i] != doc][:n] for order, doc in zip(ranked, pair_docs,
                                                                               strict=True)]


# ---- effects: models, training, files --------------------------------------------------------


def mine_hard_negatives(model: Any, pairs: list[dict[str, Any]], chunks: list[dict[str, Any]],
                        n: int, batch_size: int) -> list[dict[str, Any]]:
    """Add `negative_i` columns: top base-model chunks from other documents."""
    import numpy as np

    texts = [passage_text(c) for c in chunks]
    chunk_vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=True)
    query_vecs = model.encode([p["anchor"] for p in pairs], batch_size=batch_size,
                              normalize_embeddings=True, convert_to_numpy=True)
    ranked = np.argsort(-(query_vecs @ chunk_vecs.T), axis=1)[:, : 10 * n + 10].tolist()
    chosen = pick_negatives(ranked, [p["doc_id"] for p in pairs], [c["doc_id"] for c in chunks], n)
    return [{**p, **{f"negative_{j}": texts[i] for j, i in enumerate(idx)}}
            for p, idx in zip(pairs, chosen, strict=True) if len(idx) == n]


def training_args(cfg: TrainRetrieverConfig, seed: int, out_dir: Path, device: str,
                  bf16: bool = False):
    """SentenceTransformerTrainingArguments for LoRA training on CPU or CUDA (bf16: autocast)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear", weight_decay=0.0,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate in-batch would be a false negative
        use_cpu=device == "cpu", bf16=bf16, seed=seed, data_seed=seed,
        logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0,
        disable_tqdm=False)


def same_document_masked_loss(model: Any):
    """MultipleNegativesRankingLoss whose in-batch negatives skip the anchor's own document.

    Two questions about one document often pick different chunks of it; plain MNRL would push
    the anchor away from its own document's other chunk (a false negative). The `label` column
    carries a document index, and same-document columns are masked out of the softmax.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    class SameDocumentMaskedMNRL(MultipleNegativesRankingLoss):
        def compute_loss_from_embeddings(self, embeddings, labels):
            queries, candidates = embeddings[0], torch.cat(embeddings[1:])
            scores = self.similarity_fct(queries, candidates) * self.scale
            n = queries.size(0)
            if labels is not None:
                same = labels[:, None] == labels[None, :]
                same.fill_diagonal_(False)
                scores[:, :n] = scores[:, :n].masked_fill(same, -torch.inf)
            return torch.nn.functional.cross_entropy(scores, torch.arange(n, device=scores.device))

    return SameDocumentMaskedMNRL(model)


def train_lora(model: Any, pairs: list[dict[str, Any]], cfg: TrainRetrieverConfig, seed: int,
               work_dir: Path, device: str) -> list[dict[str, float]]:
    """Add a LoRA adapter to `model` and train it with in-batch negatives; return the logs."""
    from datasets import Dataset
    from peft import LoraConfig, TaskType
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

    from tasks.lib.precision import autocast_dtype

    bf16 = autocast_dtype(cfg.precision, device, "train_retriever") is not None
    set_seed(seed)  # the LoRA A matrices are drawn here, before the trainer seeds anything
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=cfg.lora_r,
                                 lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=list(cfg.target_modules)))
    columns = ["anchor", "positive"] + sorted(k for k in pairs[0] if k.startswith("negative_"))
    doc_index = {d: i for i, d in enumerate(sorted({p["doc_id"] for p in pairs}))}
    dataset = Dataset.from_list([{**{c: p[c] for c in columns}, "label": doc_index[p["doc_id"]]}
                                 for p in pairs])
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args(cfg, seed, work_dir, device, bf16), train_dataset=dataset,
        loss=same_document_masked_loss(model))
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def pairs_per_second(pairs: int, steps: int, section: TrainRetrieverConfig, seconds: float) -> float:
    """Training throughput: pairs seen per second (steps x batch when max_steps caps the run)."""
    seen = pairs * section.epochs if section.max_steps < 0 else steps * section.batch_size
    return round(seen / seconds, 2)


def train_retriever_stage(section: TrainRetrieverConfig, ctx: StageContext) -> dict[str, Any]:
    """Train the retriever adapter in its MLflow stage run (entry point for flow, CLI and DVC)."""
    from tasks.lib.costs import dir_bytes, peak_rss_mb, trainable_parameters
    from tasks.lib.data import read_jsonl
    from tasks.lib.files import publish_dir
    from tasks.lib.models import retriever_base_dir
    from tasks.lib.tracking import record_training, stage_run

    cat = ctx.catalog
    with stage_run(ctx, "train_retriever", section):
        chunks, train_qa = read_jsonl(cat.chunks_path), read_jsonl(cat.train_qa_path)
        base_dir = retriever_base_dir(ctx.models, cat.models_dir)
        model, history, pairs, seconds = fit(section, ctx, train_qa, chunks, "all questions",
                                             base_dir)
        trainable, total = trainable_parameters(model)
        out_dir = publish_dir(cat.retriever_adapter_dir,  # readers never see half of one
                              lambda tmp: save_adapter(model, tmp, section, ctx, base_dir),
                              what="the retriever adapter", key="paths.adapters_dir")
        stats = {"pairs": len(pairs), "steps": len(history), "train_seconds": round(seconds, 2),
                 "pairs_per_second": pairs_per_second(len(pairs), len(history), section, seconds),
                 "trainable_parameters": trainable, "total_parameters": total,
                 "adapter_bytes": dir_bytes(out_dir), "peak_rss_mb": round(peak_rss_mb(), 1),
                 "final_loss": history[-1]["loss"] if history else float("nan")}
        log.info("train_retriever: %d steps in %.0f s, %d trainable params (%.2f%%), adapter %.1f MB"
                 " -> %s", len(history), seconds, trainable, 100 * trainable / total,
                 stats["adapter_bytes"] / 1e6, out_dir)
        sources = train_sources(section, ctx, train_qa, chunks, base_dir)
        stats |= {f"{s}_{k}": v for s, r in sources.get("adapters", {}).items()
                  for k, v in r.items() if k in ("pairs", "steps", "train_seconds")}
        record_training(cat, "train_retriever", history, stats, out_dir, "retriever_adapter")
    return {**stats, "adapter_dir": str(out_dir), "sources": sources}


def fit(section: TrainRetrieverConfig, ctx: StageContext, train_qa: list[dict[str, Any]],
        chunks: list[dict[str, Any]], what: str, base_dir: Path
        ) -> tuple[Any, list[dict[str, float]], list[dict[str, Any]], float]:
    """A fresh base retriever (from `base_dir`) trained with LoRA on `train_qa`: (model, loss log,
    pairs, seconds)."""
    from tasks.lib.models import load_retriever, pick_device

    pairs = training_pairs(train_qa, chunks, ctx.catalog.qa_label)
    device = pick_device(section.device)
    model = load_retriever(base_dir, device=device, max_seq_length=section.max_seq_length)
    if section.hard_negatives:
        pairs = mine_hard_negatives(model, pairs, chunks, section.hard_negatives,
                                    section.batch_size)
    log.info("train_retriever (%s): %d pairs, batch %d, %s epochs (max_steps %d) on %s", what,
             len(pairs), section.batch_size, section.epochs, section.max_steps, device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        history = train_lora(model, pairs, section, ctx.seed, Path(work_dir), device)
    return model, history, pairs, time.perf_counter() - started


def save_adapter(model: Any, out: Path, section: TrainRetrieverConfig, ctx: StageContext,
                 base_dir: Path, source: str | None = None) -> None:
    """The adapter, portable (no local base path), with the config it was trained with."""
    from tasks.lib.models import make_adapter_portable, write_adapter_meta
    from tasks.lib.tracking import section_dict

    model.save_pretrained(str(out))
    make_adapter_portable(out, ctx.models.retriever_id)
    config = {"train_retriever": section_dict(section), "models": section_dict(ctx.models),
              "seed": ctx.seed}
    write_adapter_meta(out, ctx.models.retriever_id, base_dir,
                       {"config": config, **({"source": source} if source else {})})


def train_sources(section: TrainRetrieverConfig, ctx: StageContext,
                  train_qa: list[dict[str, Any]], chunks: list[dict[str, Any]],
                  base_dir: Path) -> dict[str, Any]:
    """<adapters_dir>/retriever_sources: an adapter per question source when both exist (see
    sources_plan), always with sources.json saying what was trained or why not."""
    from tasks.lib.files import publish_dir, write_json

    by_source = source_rows(train_qa)
    plan = sources_plan(by_source, section.compare_sources)
    log.info("train_retriever: per-source adapters: %s", plan["why"])

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        if plan["compared"]:
            plan["adapters"] = {}
            for source, rows in by_source.items():
                model, history, pairs, seconds = fit(section, ctx, rows, chunks, f"{source} only",
                                                     base_dir)
                save_adapter(model, tmp / source, section, ctx, base_dir, source)
                plan["adapters"][source] = {"questions": len(rows), "pairs": len(pairs),
                                            "steps": len(history),
                                            "train_seconds": round(seconds, 2)}
        write_json(tmp / "sources.json", plan)

    publish_dir(ctx.catalog.retriever_sources_dir, build, what="the per-source retriever adapters",
                key="paths.adapters_dir")
    return plan


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="train_retriever")
def train_retriever(section: TrainRetrieverConfig, ctx: StageContext,
                    prepared: dict[str, Any]) -> dict[str, Any]:
    """Train the LoRA retriever adapter on `prepared` (not retried: training is not idempotent I/O)."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "train_retriever", lambda: train_retriever_stage(section, ctx))
