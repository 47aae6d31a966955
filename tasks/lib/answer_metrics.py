"""Answer metrics on plain strings (pure): exact match, token F1, ROUGE-L, groundedness.

Exact match and token F1 follow the SQuAD v1.1 evaluation script (SQuAD-normalised): lowercase,
drop punctuation and the articles a/an/the, collapse whitespace. ROUGE-L is the rouge-score
package's, on its own tokens, so it compares with published ROUGE-L. Semantic similarity needs
the retriever model and is computed in evaluate; accuracy on short-answer questions is
tasks/lib/choices.py's.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)

# Words that say nothing about where an answer came from (groundedness ignores them).
STOP_WORDS = frozenset(
    "a an the and or but if then so than of to in on at by for with from into about as is are was "
    "were be been being it its this that these those there their they them he she we you i do does "
    "did has have had can could will would should may might what which who whom how when where why "
    "not no yes".split())


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD normalisation)."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    """Normalised word tokens of an answer."""
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of token precision and recall (multiset overlap)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


@functools.cache
def _rouge_scorer() -> Any:
    """One rouge-score scorer per process (importing it pulls in nltk: done on first use)."""
    from rouge_score.rouge_scorer import RougeScorer

    # No stemming: plain rouge-score tokens, so the numbers match its default (and nltk's
    # stemmer never loads). No split_summaries: that needs NLTK data not installable offline.
    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure from rouge-score (its own tokens: lowercase [a-z0-9] runs).

    0.0 when either side has no such tokens (text in other scripts has none: see README).
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def content_tokens(text: str) -> list[str]:
    """Normalised tokens without stop words."""
    return [t for t in answer_tokens(text) if t not in STOP_WORDS]


def groundedness(answer: str, context: str | list[str] | None) -> float | None:
    """Share of the answer's content tokens found in the context; None without context or content."""
    if context is None or not context:
        return None
    context_text = context if isinstance(context, str) else "\n".join(context)
    words = content_tokens(answer)
    if not words:
        return None
    present = set(answer_tokens(context_text))
    return sum(w in present for w in words) / len(words)

