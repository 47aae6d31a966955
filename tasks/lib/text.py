"""Text normalisation shared by prepare, convert, training pairs and the index."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize_question(text: str) -> str:
    """Lowercase, NFKC-fold, drop punctuation and collapse whitespace (leakage and dedup key)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", folded)).strip()


def word_set(text: str) -> set[str]:
    """Lowercased word tokens of a text."""
    return set(_WORD.findall(text.lower()))


def content_hash(*parts: str | None) -> str:
    """Hash text parts into a short stable id for change detection."""
    h = hashlib.sha256()
    for part in parts:
        h.update((part or "").encode())
        h.update(b"\x1f")
    return h.hexdigest()[:16]


def passage_text(chunk: dict[str, Any]) -> str:
    """The text a retriever embeds and BM25 indexes for a chunk: title line + chunk text."""
    title = chunk.get("title")
    return f"{title}\n{chunk['text']}" if title else chunk["text"]
