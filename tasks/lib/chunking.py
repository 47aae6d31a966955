"""Chunking: cut documents into token windows (original characters kept), for prepare and reindex."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tasks.lib.config import PrepareConfig
from tasks.lib.errors import ConfigError
from tasks.lib.text import content_hash

# ---- pure -------------------------------------------------------------------------------------


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


# ---- effects: tokenizer ------------------------------------------------------------------------


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
