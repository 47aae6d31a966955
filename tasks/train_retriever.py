"""train_retriever: LoRA on the sentence-transformers retriever, in-batch-negatives contrastive loss.

Reads data/prepared (train questions, chunks); writes the adapter only (plus resolved config and
the base model it belongs to) to <adapters_dir>/retriever, and logs it with its loss curve to MLflow.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefect import task

from tasks.config import Config, TrainRetrieverConfig
from tasks.errors import DataError

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\w+")

# ---- pure: training pairs ---------------------------------------------------------------------


def tokens(text: str) -> set[str]:
    """Lowercased word tokens of a text."""
    return set(_TOKEN.findall(text.lower()))


def best_chunk(question: str, answer: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The chunk of a document sharing most words with the answer (question breaks ties)."""
    want_answer, want_question = tokens(answer), tokens(question)

    def score(chunk: dict[str, Any]) -> tuple[int, int, int]:
        words = tokens(chunk["text"])
        return len(words & want_answer), len(words & want_question), -chunk["chunk_index"]

    return max(chunks, key=score)


def training_pairs(train_qa: list[dict[str, Any]], chunks: list[dict[str, Any]],
                   qa_path: str) -> list[dict[str, Any]]:
    """(question, relevant chunk) pairs: one per supporting document of each train question."""
    from tasks.prepare import passage_text

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


def pick_negatives(ranked: list[list[int]], pair_docs: list[str], chunk_docs: list[str],
                   n: int) -> list[list[int]]:
    """For each pair, the first `n` ranked chunks that belong to another document."""
    return [[i for i in order if chunk_docs[i] != doc][:n] for order, doc in zip(ranked, pair_docs,
                                                                               strict=True)]


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts of a torch module."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def dir_bytes(path: Path) -> int:
    """Total size of the files in a directory."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- effects: models, training, files --------------------------------------------------------


def mine_hard_negatives(model: Any, pairs: list[dict[str, Any]], chunks: list[dict[str, Any]],
                        n: int, batch_size: int) -> list[dict[str, Any]]:
    """Add `negative_i` columns: top base-model chunks from other documents."""
    import numpy as np

    from tasks.prepare import passage_text

    texts = [passage_text(c) for c in chunks]
    chunk_vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=True)
    query_vecs = model.encode([p["anchor"] for p in pairs], batch_size=batch_size,
                              normalize_embeddings=True, convert_to_numpy=True)
    ranked = np.argsort(-(query_vecs @ chunk_vecs.T), axis=1)[:, : 10 * n + 10].tolist()
    chosen = pick_negatives(ranked, [p["doc_id"] for p in pairs], [c["doc_id"] for c in chunks], n)
    return [{**p, **{f"negative_{j}": texts[i] for j, i in enumerate(idx)}}
            for p, idx in zip(pairs, chosen, strict=True) if len(idx) == n]


def training_args(cfg: TrainRetrieverConfig, seed: int, out_dir: Path, device: str):
    """SentenceTransformerTrainingArguments for LoRA training on CPU or CUDA."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear", weight_decay=0.0,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate in-batch would be a false negative
        use_cpu=device == "cpu", bf16=cfg.bf16 and device == "cuda", seed=seed, data_seed=seed,
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

    set_seed(seed)  # the LoRA A matrices are drawn here, before the trainer seeds anything
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=cfg.lora_r,
                                 lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=list(cfg.target_modules)))
    columns = ["anchor", "positive"] + sorted(k for k in pairs[0] if k.startswith("negative_"))
    doc_index = {d: i for i, d in enumerate(sorted({p["doc_id"] for p in pairs}))}
    dataset = Dataset.from_list([{**{c: p[c] for c in columns}, "label": doc_index[p["doc_id"]]}
                                 for p in pairs])
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args(cfg, seed, work_dir, device), train_dataset=dataset,
        loss=same_document_masked_loss(model))
    trainer.train()
    return [h for h in trainer.state.log_history if "loss" in h]


def adapter_dir(cfg: Config) -> Path:
    """Where the candidate retriever adapter lives."""
    return Path(cfg.paths.adapters_dir) / "retriever"


def train_retriever_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train the retriever adapter in its MLflow stage run (entry point for flow, CLI and DVC)."""

    from tasks.data import read_jsonl
    from tasks.models import load_retriever, pick_device, retriever_base_dir, write_adapter_meta
    from tasks.tracking import record_training, stage_run

    tcfg = cfg.train_retriever
    prepared = Path(cfg.paths.prepared_dir)
    with stage_run(cfg, "train_retriever", parent_run_id):
        chunks = read_jsonl(prepared / "chunks.jsonl")
        pairs = training_pairs(read_jsonl(prepared / "train_qa.jsonl"), chunks, cfg.paths.qa_path)
        base_dir = retriever_base_dir(cfg)
        device = pick_device(tcfg.device)
        model = load_retriever(base_dir, device=device, max_seq_length=tcfg.max_seq_length)
        if tcfg.hard_negatives:
            pairs = mine_hard_negatives(model, pairs, chunks,
                                        tcfg.hard_negatives, tcfg.batch_size)
        out_dir = adapter_dir(cfg)
        work_dir = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(work_dir, ignore_errors=True)
        log.info("train_retriever: %d pairs, batch %d, %s epochs (max_steps %d) on %s",
                 len(pairs), tcfg.batch_size, tcfg.epochs, tcfg.max_steps, device)
        started = time.perf_counter()
        history = train_lora(model, pairs, tcfg, cfg.project.seed, work_dir / "trainer", device)
        seconds = time.perf_counter() - started
        trainable, total = trainable_parameters(model)
        model.save_pretrained(str(work_dir / "adapter"))
        adapter_path = work_dir / "adapter"
        write_adapter_meta(adapter_path, cfg.models.retriever_id, base_dir,
                           {"config": cfg.to_dict()["train_retriever"]})
        (adapter_path / "resolved_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        adapter_path.rename(out_dir)  # swap in only a complete adapter
        shutil.rmtree(work_dir, ignore_errors=True)
        stats = {"pairs": len(pairs), "steps": len(history), "train_seconds": round(seconds, 2),
                 "pairs_per_second": round(len(pairs) * tcfg.epochs / seconds, 2)
                 if tcfg.max_steps < 0 else round(len(history) * tcfg.batch_size / seconds, 2),
                 "trainable_parameters": trainable, "total_parameters": total,
                 "adapter_bytes": dir_bytes(out_dir), "peak_rss_mb": round(peak_rss_mb(), 1),
                 "final_loss": history[-1]["loss"] if history else float("nan")}
        record_training(cfg, "train_retriever", history, stats, out_dir, "retriever_adapter")
        log.info("train_retriever: %d steps in %.0f s, %d trainable params (%.2f%%), adapter %.1f MB"
                 " -> %s", len(history), seconds, trainable, 100 * trainable / total,
                 stats["adapter_bytes"] / 1e6, out_dir)
    return stats


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="train_retriever")
def train_retriever(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Train the LoRA retriever adapter (not retried: training is not an idempotent I/O step)."""
    return train_retriever_stage(cfg, parent_run_id)
