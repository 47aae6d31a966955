"""Synthetic training questions from the corpus alone: modes, prompts, parsing, inverse cloze,
reuse keys, QA-contract rows and the split of documents for a synthetic eval set.

Pure functions (a tokenizer is the only object some take); the synthesize stage
(tasks/synthesize.py) runs the generator and the retriever, prepare (tasks/prepare.py) merges the
rows with the real QA. Filters: tasks/lib/synth_filters.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from tasks.lib.text import content_hash

METHODS = ("lm", "ict")
PROMPT_VERSION = "qa-v1"  # bump when the prompt changes: cached questions are then rewritten

# ---- pure: modes --------------------------------------------------------------------------------


def resolve_mode(mode: str, qa_exists: bool) -> str:
    """The mode that applies: auto is `off` with a real QA file and `only` without one."""
    if mode != "auto":
        return mode
    return "off" if qa_exists else "only"


def check_mode(resolved: str, qa_exists: bool, qa_path: str) -> None:
    """Mode off needs a real QA file: without one nothing would be left to train on."""
    from tasks.lib.errors import DataError

    if resolved == "off" and not qa_exists:
        raise DataError(qa_path, None, None, "file not found and synthesize.mode is off: there "
                        "are no questions to train on. Bring a QA file, or set synthesize.mode "
                        "to auto or only to write questions from the corpus")


def mode_line(mode: str, resolved: str, qa_path: str, qa_exists: bool) -> str:
    """The log line saying which mode applies and why (auto decides on the QA file)."""
    if mode == "auto":
        why = "exists" if qa_exists else "does not exist"
        return (f"synthesize.mode auto -> {resolved}: {qa_path} {why}"
                + ("" if qa_exists else "; questions are written from the corpus alone"))
    return f"synthesize.mode {resolved} (set in the config)"


# ---- pure: the prompt and its output -----------------------------------------------------------

SYSTEM = ("You write training data for a search engine. Given a passage, write questions a user "
          "would type that the passage answers, each followed by its answer taken from the "
          "passage. Use your own words for the question; copy or shorten the answer from the "
          "passage. Write only lines of the form:\nQuestion: ...\nAnswer: ...")
# A generic example, unrelated to any user's domain: it shows the format, not the content.
EXAMPLE_PASSAGE = ("The city library opens at 9 am on weekdays and at 10 am on Saturdays. It is "
                   "closed on Sundays. Books can be borrowed for three weeks and renewed online "
                   "twice.")
EXAMPLE_OUTPUT = ("Question: When does the library open on Saturday?\nAnswer: At 10 am.\n"
                  "Question: How long can I keep a borrowed book?\nAnswer: Three weeks, and it "
                  "can be renewed online twice.")


def example_questions() -> list[str]:
    """The worked example's questions: a copy of one is a duplicate, not a question (filters)."""
    return [q for q, _ in parse_pairs(EXAMPLE_OUTPUT, 10)]


def synth_messages(passage: str, n: int, title: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking for `n` question/answer pairs about one passage (one-shot example)."""
    def ask(text: str, count: int) -> str:
        return f"Passage:\n{text}\n\nWrite {count} question{'s' if count > 1 else ''} with answers."

    passage = f"{title}\n{passage}" if title else passage
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": ask(EXAMPLE_PASSAGE, 2)},
            {"role": "assistant", "content": EXAMPLE_OUTPUT},
            {"role": "user", "content": ask(passage, n)}]


_PAIR = re.compile(r"^[ \t]*(?:\d+[.)][ \t]*)?\**question\**[ \t]*\d*[ \t]*[:：][ \t]*\**[ \t]*"
                   r"(?P<q>\S.*?)[ \t]*\n[ \t]*\**answer\**[ \t]*\d*[ \t]*[:：][ \t]*\**[ \t]*"
                   r"(?P<a>\S.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def parse_pairs(text: str, limit: int) -> list[tuple[str, str]]:
    """The (question, answer) pairs of a generation in the strict "Question: ..\\nAnswer: .."
    format, at most `limit`; anything else (prose, a question without its answer) is discarded."""
    pairs = []
    for m in _PAIR.finditer(text):
        question, answer = m["q"].strip(), m["a"].strip()
        if question and answer:
            pairs.append((question, answer))
    return pairs[:limit]


# ---- pure: inverse cloze (no model) ------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Sentences at . ! ? followed by whitespace (good enough for prose; no NLP model)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def seeded_order(items: Iterable[str], seed: int | str) -> list[str]:
    """Items ordered by a seeded hash: a stable sample that a new item does not reshuffle."""
    return sorted(items, key=lambda x: hashlib.sha256(f"{seed}:{x}".encode()).hexdigest())


def ict_pairs(text: str, n: int, key: str, max_answer_words: int) -> list[tuple[str, str]]:
    """Inverse-cloze pairs: a sentence of the chunk is the question, the rest of the chunk (cut
    to `max_answer_words`) its answer. Sentences are picked by a hash of `key` (stable); a chunk
    of one sentence gives nothing (no rest to answer with)."""
    sentences = split_sentences(text)
    if len(sentences) < 2:
        return []
    picked = seeded_order([str(i) for i in range(len(sentences))], key)[:n]
    pairs = []
    for i in sorted(int(p) for p in picked):
        rest = " ".join(sentences[:i] + sentences[i + 1:]).split()
        pairs.append((sentences[i], " ".join(rest[:max_answer_words])))
    return pairs


# ---- pure: reuse keys, ids, rows ----------------------------------------------------------------


def reuse_key(chunk_text: str, method: str, generator_id: str | None, n: int) -> str:
    """What a chunk's generated pairs depend on: text, method, generator, prompt version, count.
    A corpus change rewrites only the chunks whose key changed."""
    return content_hash(chunk_text, method, generator_id or "-", PROMPT_VERSION, str(n))


def synthetic_qid(chunk_id: str, question: str) -> str:
    """A stable id from the content: the same question of the same chunk keeps its id."""
    return f"syn-{content_hash(chunk_id, question)}"


def synthetic_row(chunk: dict[str, Any], question: str, answer: str, method: str,
                  line: int) -> dict[str, Any]:
    """One row in the QA contract, marked synthetic (prepare splits it, training reads it)."""
    return {"qid": synthetic_qid(chunk["chunk_id"], question), "question": question,
            "answer": answer, "doc_ids": [chunk["doc_id"]], "split": "train",
            "metadata": {"synthetic": True, "chunk_id": chunk["chunk_id"], "method": method},
            "line": line}


def sample_chunks(chunks: list[dict[str, Any]], limit: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of `limit` chunks (0: all), in corpus order."""
    if not limit or limit >= len(chunks):
        return list(chunks)
    keep = set(seeded_order([c["chunk_id"] for c in chunks], seed)[:limit])
    return [c for c in chunks if c["chunk_id"] in keep]


# ---- pure: a synthetic eval set -----------------------------------------------------------------


def eval_documents(doc_ids: Iterable[str], seed: int, fraction: float) -> set[str]:
    """Documents whose synthetic questions form the eval set, by a seeded hash of the doc id:
    about `fraction` of them, at least one, never all (something must remain to train on)."""
    docs = sorted(set(doc_ids))
    if len(docs) < 2:
        return set()
    ordered = seeded_order(docs, f"eval-docs:{seed}")
    count = min(len(docs) - 1, max(1, round(fraction * len(docs))))
    return set(ordered[:count])
