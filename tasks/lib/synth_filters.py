"""Filters of synthetic questions, each counted: what a generator writes is checked before it
becomes training data (tasks/synthesize.py).

Order (a question is counted by the first filter it fails): unparsable output is counted while
parsing; then length, copy, support, duplicate, leak (against real questions), round trip
(the base retriever must find the question's chunk). Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tasks.lib.errors import DataError
from tasks.lib.text import normalize_question

FILTERS = ("too_short_chunk", "unparsable", "length", "copy", "unsupported", "duplicate",
           "leak", "roundtrip")
NGRAM = 4  # word n-gram of the copy check: 4 words in a row is copying, not shared vocabulary
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    """One generated pair before filtering, with the chunk it was written for."""

    chunk_id: str
    doc_id: str
    question: str
    answer: str


def words(text: str) -> list[str]:
    """Lowercased word tokens (NFKC-folded like normalize_question)."""
    return _WORD.findall(normalize_question(text))


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """The word n-grams of a token list."""
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copy_share(question: str, chunk: str, n: int = NGRAM) -> float:
    """Share of the question's word n-grams found in the chunk (0 for questions under n words)."""
    grams = ngrams(words(question), n)
    return len(grams & ngrams(words(chunk), n)) / len(grams) if grams else 0.0


# Words that carry no fact: an answer made of them and the question's own words says nothing.
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it "
    "its this that these those you your yours we our us i my me he she they them their there "
    "can could will would should may might must do does did done have has had not no yes so "
    "than then what which who whom when where why how all any some".split())


def answer_support(answer: str, chunk: str, question: str = "") -> float:
    """Share of the answer's new content words (not stopwords, not the question's own words)
    found in the chunk: an answer the chunk does not hold is the generator's own knowledge (or
    invention), and restating the question earns nothing. An answer with no new word: 0."""
    known = STOPWORDS | set(words(question))
    tokens = [t for t in words(answer) if t not in known]
    in_chunk = set(words(chunk))
    return sum(t in in_chunk for t in tokens) / len(tokens) if tokens else 0.0


def length_ok(question: str, section: Any) -> bool:
    """Question within the word and character bounds."""
    n = len(question.split())
    return (section.min_question_words <= n <= section.max_question_words
            and len(question) <= section.max_question_chars)


def first_failure(c: Candidate, chunk_text: str, section: Any, method: str) -> str | None:
    """The first per-question filter a candidate fails, or None (copy and support apply to the
    generator's questions: an inverse-cloze question is a copied sentence by design)."""
    if not length_ok(c.question, section):
        return "length"
    if method == "lm" and copy_share(c.question, chunk_text) > section.max_copy_share:
        return "copy"
    if method == "lm" and (answer_support(c.answer, chunk_text, c.question)
                           < section.min_answer_support):
        return "unsupported"
    return None


def filter_candidates(candidates: list[Candidate], chunk_texts: dict[str, str], section: Any,
                      method: str, real_questions: Iterable[str], seen_before: Iterable[str] = ()
                      ) -> tuple[list[Candidate], dict[str, int]]:
    """Candidates that pass length, copy, support, duplicate and leak checks, and the count each
    filter removed (the round trip needs the retriever: roundtrip_survivors). `seen_before`:
    questions that count as duplicates from the start (the prompt's worked example, which a
    small model sometimes repeats)."""
    removed = dict.fromkeys(FILTERS[2:-1], 0)
    leaked = {normalize_question(q) for q in real_questions}
    seen = {normalize_question(q) for q in seen_before}
    kept = []
    for c in candidates:
        reason = first_failure(c, chunk_texts[c.chunk_id], section, method)
        key = normalize_question(c.question)
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is None and key in leaked:
            reason = "leak"
        if reason is not None:
            removed[reason] += 1
            continue
        seen.add(key)
        kept.append(c)
    return kept, removed


def roundtrip_survivors(candidates: list[Candidate], ranks: list[int], k: int
                        ) -> tuple[list[Candidate], int]:
    """Candidates whose chunk the retriever ranked within the top k (rank 1 = best), and how
    many failed; k 0 keeps all."""
    if not k:
        return list(candidates), 0
    kept = [c for c, r in zip(candidates, ranks, strict=True) if r <= k]
    return kept, len(candidates) - len(kept)


def source_ranks(similarity: Any, source_index: list[int]) -> list[int]:
    """1-based rank of each question's source chunk in its row of a question x chunk
    similarity matrix (ties count against the source: a rank is never flattered)."""
    import numpy as np

    sim = np.asarray(similarity)
    if not len(source_index):
        return []
    own = sim[np.arange(len(source_index)), source_index]
    return [int(r) for r in (sim >= own[:, None]).sum(axis=1)]


def check_enough(kept: int, needed: int, counts: dict[str, int], candidates: int,
                 where: str) -> None:
    """Raise a DataError naming what each filter removed when too few questions survive."""
    if kept >= needed:
        return
    parts = ", ".join(f"{name} {counts[name]}" for name in FILTERS if counts.get(name))
    raise DataError(where, None, None,
                    f"only {kept} synthetic question(s) survived the filters, validate."
                    f"min_questions is {needed}; from {candidates} generated, removed: "
                    f"{parts or 'none'}. Raise synthesize.max_chunks or questions_per_chunk, "
                    "loosen the filter that removed most, or use a stronger "
                    "synthesize.generator_id")
