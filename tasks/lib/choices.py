"""Short-answer questions (pure): a qa.jsonl row's optional `choices`, e.g. ["yes", "no", "maybe"].

The rule, used alike by the data contract, the prompt and the score: text is compared after
normalisation (lowercase; every run of characters that are not letters or digits becomes one
space; ends stripped). An answer *picks* a choice when its normalised text equals the choice or
starts with the choice followed by a space ("Yes, because ..." picks "yes"; "Nothing ..." picks
no "no"). Where two choices match ("no", "no change"), the longer one is picked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MIN_CHOICES, MAX_CHOICES = 2, 20
_NOT_WORD = re.compile(r"[\W_]+")


def normalize_choice(text: str) -> str:
    """Lowercase, non-alphanumeric runs to one space, ends stripped ("Yes." -> "yes")."""
    return _NOT_WORD.sub(" ", text.lower()).strip()


def choice_of(answer: str, choices: Sequence[str]) -> str | None:
    """The choice the answer starts with (the longest where several do), else None."""
    text = normalize_choice(answer)
    picked = [c for c in choices if (n := normalize_choice(c))
              and (text == n or text.startswith(n + " "))]
    return max(picked, key=lambda c: len(normalize_choice(c)), default=None)


def choice_accuracy(prediction: str, reference: str, choices: Sequence[str] | None) -> float | None:
    """1.0 when prediction and reference pick the same choice, 0.0 otherwise; None without choices."""
    if not choices:
        return None
    picked = choice_of(prediction, choices)
    return float(picked is not None and picked == choice_of(reference, choices))


def choices_problem(choices: list[str]) -> str | None:
    """Why a `choices` list breaks the contract (2..20 distinct strings, each with a letter or
    digit, distinct after normalisation), or None when it is fine."""
    if not all(isinstance(c, str) for c in choices):
        return "expected a list of strings"
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        return f"expected {MIN_CHOICES} to {MAX_CHOICES} choices, got {len(choices)}"
    seen: dict[str, int] = {}
    for number, choice in enumerate(choices, start=1):
        key = normalize_choice(choice)
        if not key:
            return f"choice {number} ({choice!r}) has no letter or digit"
        if key in seen:
            return (f"choices {seen[key]} and {number} ({choices[seen[key] - 1]!r}, {choice!r}) "
                    "are the same once case and punctuation are ignored")
        seen[key] = number
    return None


def answer_problem(answer: str, choices: list[str]) -> str | None:
    """Why a reference answer does not pick one of its choices, or None when it does."""
    if choice_of(answer, choices) is not None:
        return None
    return (f"must start with one of the choices {choices} (case and punctuation ignored), "
            f"got {answer[:40]!r}")


def choices_instruction(choices: Sequence[str]) -> str:
    """The line a prompt adds for a short-answer question."""
    return f"Answer with exactly one of: {', '.join(choices)}; then one sentence why."
