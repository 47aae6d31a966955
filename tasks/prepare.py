"""prepare: deterministic train/eval split, leakage check, token-based chunking of documents."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from tasks.config import Config, PrepareConfig
from tasks.errors import ConfigError, LeakageError, ValidationFailed
from tasks.runtime import IO_RETRIES

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")

# ---- pure functions -------------------------------------------------------------------------


def normalize_question(text: str) -> str:
    """Lowercase, NFKC-fold, drop punctuation and collapse whitespace (for leakage checks)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", folded)).strip()


def hash_split(qid: str, seed: int, eval_fraction: float) -> str:
    """Assign a split from a seeded hash of the qid: stable across runs, machines and row order."""
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def assign_splits(qa: pd.DataFrame, seed: int, eval_fraction: float) -> pd.DataFrame:
    """Return a copy of `qa` whose `split` is filled by hash where the data did not give one."""
    out = qa.copy()
    out["split"] = [
        split if isinstance(split, str) and split else hash_split(qid, seed, eval_fraction)
        for qid, split in zip(out["qid"], out["split"], strict=True)
    ]
    return out


def find_leaks(qa: pd.DataFrame) -> pd.DataFrame:
    """Return the eval rows whose normalised question also appears in the train split."""
    norm = qa["question"].map(normalize_question)
    train_norm = set(norm[qa["split"] == "train"])
    return qa[(qa["split"] == "eval") & norm.isin(train_norm)]


def describe_leaks(leaks: pd.DataFrame, qa_path: str, limit: int = 5) -> str:
    """Format a leakage error message naming qids and source lines."""
    shown = ", ".join(f"{r.qid} (line {r.line})" for r in leaks.head(limit).itertuples())
    more = f" and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return (f"{qa_path}: {len(leaks)} eval question(s) also appear in train after normalisation "
            f"(lowercase, no punctuation): {shown}{more}. Rephrase or remove them, or move them "
            "to one split.")


def chunk_spans(offsets: Sequence[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Group token character offsets into windows of `size` tokens sharing `overlap` tokens."""
    if not offsets:
        return []
    step = size - overlap
    spans = []
    for start in range(0, len(offsets), step):
        window = offsets[start:start + size]
        spans.append((window[0][0], window[-1][1]))
        if start + size >= len(offsets):
            break
    return spans


def content_hash(*parts: str | None) -> str:
    """Hash text parts into a short stable id for change detection."""
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode())
        h.update(b"\x1f")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    chunk_index: int
    title: str | None
    text: str
    content_hash: str


def chunk_document(doc_id: str, title: str | None, text: str,
                   offsets: Sequence[tuple[int, int]], size: int, overlap: int) -> list[Chunk]:
    """Cut one document into chunks by token offsets; each chunk keeps the original characters."""
    spans = chunk_spans(offsets, size, overlap) or [(0, len(text))]
    chunks = []
    for i, (start, end) in enumerate(spans):
        piece = text[start:end].strip()
        chunks.append(Chunk(f"{doc_id}#{i}", doc_id, i, title, piece, content_hash(title, piece)))
    return chunks


def split_counts(qa: pd.DataFrame) -> dict[str, int]:
    """Count rows per split."""
    return {s: int((qa["split"] == s).sum()) for s in SPLITS}


# ---- effects: tokenizer, files --------------------------------------------------------------


def token_offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Character offsets of each text's tokens (no special tokens), from a fast tokenizer."""
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                    truncation=False, verbose=False)
    return [[tuple(o) for o in offs] for offs in enc["offset_mapping"]]


def check_chunk_fits(cfg: PrepareConfig, max_seq_length: int, model_id: str) -> None:
    """Fail early when a chunk (plus [CLS]/[SEP]) would be truncated by the retriever."""
    if cfg.chunk_tokens + 2 > max_seq_length:
        raise ConfigError(
            f"prepare.chunk_tokens={cfg.chunk_tokens} does not fit the retriever {model_id}: "
            f"its max_seq_length is {max_seq_length} (2 go to special tokens)")


def chunk_corpus(corpus: pd.DataFrame, tokenizer: Any, cfg: PrepareConfig) -> list[Chunk]:
    """Chunk every document of the corpus."""
    texts = corpus["text"].tolist()
    offsets = token_offsets(tokenizer, texts)
    chunks: list[Chunk] = []
    for row, offs in zip(corpus.itertuples(), offsets, strict=True):
        title = row.title if isinstance(row.title, str) else None
        chunks.extend(chunk_document(row.doc_id, title, row.text, offs,
                                     cfg.chunk_tokens, cfg.chunk_overlap))
    return chunks


def qa_records(qa: pd.DataFrame) -> list[dict[str, Any]]:
    """QA rows as records for JSON Lines (source line kept for traceability)."""
    cols = ["qid", "question", "answer", "doc_ids", "split", "metadata", "line"]

    def plain(col: str, value: Any) -> Any:
        if col == "line":
            return int(value)
        return value if isinstance(value, list | dict | str) else None  # NaN/None -> null

    return [{c: plain(c, r[c]) for c in cols} for r in qa.to_dict("records")]


def write_prepared(out_dir: Path, chunks: list[Chunk], qa: pd.DataFrame, stats: dict[str, Any],
                   stats_path: Path) -> dict[str, Path]:
    """Write chunks and train/eval QA under `out_dir` (each file atomically), stats to `stats_path`."""
    from tasks.data import write_jsonl

    paths = {
        "chunks": write_jsonl([c.__dict__ for c in chunks], out_dir / "chunks.jsonl"),
        "train_qa": write_jsonl(qa_records(qa[qa["split"] == "train"]), out_dir / "train_qa.jsonl"),
        "eval_qa": write_jsonl(qa_records(qa[qa["split"] == "eval"]), out_dir / "eval_qa.jsonl"),
    }
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    paths["stats"] = stats_path
    return paths


def check_validated(cfg: Config) -> None:
    """Refuse to prepare data that has not passed validation in its current version."""
    from tasks.validate import data_md5s, validation_dir

    summary_path = validation_dir(cfg) / "summary.json"
    if not summary_path.is_file():
        raise ValidationFailed(f"{summary_path} not found: run the validate stage first")
    summary = json.loads(summary_path.read_text())
    if not summary.get("success"):
        raise ValidationFailed(f"{summary_path}: the last validation failed; fix the data and "
                               "run validate again")
    if summary.get("data_md5") != data_md5s(cfg):
        raise ValidationFailed(f"{summary_path}: the raw data changed since it was validated; "
                               "run the validate stage again")


def prepare_data(cfg: Config) -> tuple[list[Chunk], pd.DataFrame, dict[str, Any]]:
    """Split, leakage-check and chunk the validated raw data (no files written)."""
    from tasks.data import load_corpus, load_qa
    from tasks.models import load_tokenizer, retriever_base_dir, retriever_max_seq_length

    corpus = load_corpus(cfg.paths.corpus_path)
    raw_qa = load_qa(cfg.paths.qa_path)
    qa = assign_splits(raw_qa, cfg.project.seed, cfg.prepare.eval_fraction)
    leaks = find_leaks(qa)
    if len(leaks):
        raise LeakageError(describe_leaks(leaks, cfg.paths.qa_path))
    model_dir = retriever_base_dir(cfg)
    check_chunk_fits(cfg.prepare, retriever_max_seq_length(model_dir), cfg.models.retriever_id)
    chunks = chunk_corpus(corpus, load_tokenizer(model_dir), cfg.prepare)
    per_doc = pd.Series([c.doc_id for c in chunks]).value_counts()
    stats = {"documents": len(corpus), "chunks": len(chunks),
             "max_chunks_per_document": int(per_doc.max()),
             "long_documents": int((per_doc > 1).sum()),
             "questions": len(qa), **{f"{k}_questions": v for k, v in split_counts(qa).items()},
             "split_from_data": int(raw_qa["split"].notna().sum())}
    return chunks, qa, stats


def prepare_stage(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Run prepare in its MLflow stage run: the one entry point for the flow, CLI and DVC."""
    import mlflow

    from tasks.tracking import log_dataset, stage_run

    with stage_run(cfg, "prepare", parent_run_id):
        check_validated(cfg)
        chunks, qa, stats = prepare_data(cfg)
        out_dir = Path(cfg.paths.prepared_dir)
        paths = write_prepared(out_dir, chunks, qa, stats,
                               Path(cfg.paths.reports_dir) / "prepare" / "metrics.json")
        mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
        mlflow.log_artifact(str(paths["stats"]), "prepare")
        log_dataset(pd.DataFrame([c.__dict__ for c in chunks]), str(paths["chunks"]),
                    "chunks", "prepared")
        for split in SPLITS:
            log_dataset(qa[qa["split"] == split], str(paths[f"{split}_qa"]), f"{split}_qa", split)
        log.info("prepare: %d documents -> %d chunks; %d train / %d eval questions -> %s",
                 stats["documents"], stats["chunks"], stats["train_questions"],
                 stats["eval_questions"], out_dir)
    return stats


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="prepare", **IO_RETRIES)
def prepare(cfg: Config, parent_run_id: str | None = None) -> dict[str, Any]:
    """Split, leakage-check and chunk the validated data into data/prepared/."""
    return prepare_stage(cfg, parent_run_id)


def passage_text(chunk: dict[str, Any]) -> str:
    """The text a retriever embeds and BM25 indexes for a chunk: title line + chunk text."""
    title = chunk.get("title")
    return f"{title}\n{chunk['text']}" if title else chunk["text"]
