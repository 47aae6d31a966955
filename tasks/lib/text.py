"""Text normalisation shared by prepare, convert, training pairs and the index."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

# Characters that show nothing: soft hyphen, zero-width spaces/joiners, direction marks,
# word joiners, variation selectors, the byte-order mark, Hangul fillers. Text made only of
# these and whitespace is blank (README "Unicode rules").
INVISIBLE = ("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
             "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0")
VISIBLE = rf"[^\s{INVISIBLE}]"  # one character that shows something (GX regex too)
_VISIBLE = re.compile(VISIBLE)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def is_blank(text: str) -> bool:
    """True when the text has nothing visible: only whitespace and invisible characters."""
    return _VISIBLE.search(text) is None


def normalize_question(text: str) -> str:
    """Lowercase, NFKC-fold, drop punctuation and collapse whitespace (leakage and dedup key)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", folded)).strip()


def word_set(text: str) -> set[str]:
    """Lowercased word tokens of a text."""
    return set(_WORD.findall(text.lower()))


def best_chunk(question: str, answer: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The chunk sharing most words with the answer (then the question; then the earlier chunk):
    where a question's answer most likely comes from. `chunks` must not be empty."""
    want_answer, want_question = word_set(answer), word_set(question)

    def score(indexed: tuple[int, dict[str, Any]]) -> tuple[int, int, int]:
        i, chunk = indexed
        words = word_set(chunk["text"])
        return len(words & want_answer), len(words & want_question), -i

    return max(enumerate(chunks), key=score)[1]


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


URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::[^/@\s]*)?@",
                             re.IGNORECASE)


def mask_uri(text: str) -> str:
    """Text with the credentials of every `scheme://user:password@host` masked: the password
    (`https://bob:***@mlflow.internal`), or a lone user part, often a token (`https://***@…`)."""
    def mask(m: re.Match) -> str:
        has_password = ":" in m.group(0)[len(m["scheme"]):]
        return f"{m['scheme']}{m['user']}:***@" if has_password else f"{m['scheme']}***@"

    return URI_CREDENTIALS.sub(mask, text)
