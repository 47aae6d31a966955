"""The retrieval method the release uses: chosen on a validation slice of the train questions.

evaluate measures every retrieval method on a seeded slice of data/prepared/train_qa.jsonl
(never the eval questions, which stay for the scoreboard and the gate) and picks the best nDCG@10
mean; a method whose paired interval against the best covers 0 is a tie, and ties go to the
cheaper method (COST_ORDER; measured p95 latency only for methods it does not name). The
answer setups rag/hybrid take their context from it, serving searches with it by default
(release tag `retrieval.method`) and gate rules on `retrieval.chosen.<metric>` judge it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.lib.config import GateRule
from tasks.lib.metrics import bootstrap_ci, paired_diff_ci

log = logging.getLogger(__name__)

COST_ORDER = ("bm25", "base", "lora", "fusion", "fusion_native")  # cheapest first, unmeasured
CHOSEN = "chosen"  # the alias in gate metrics: retrieval.chosen.<metric>
# method -> search mode on a release's own table (serving: one table, the release's retriever)
METHOD_MODES = {"bm25": "bm25", "base": "vector", "lora": "vector", "fusion": "fusion",
                "fusion_native": "fusion_native"}
METHOD_TAG = "retrieval.method"  # the release tag promote writes, serving reads

# ---- pure ---------------------------------------------------------------------------------------


def choice_slice(train_qa: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of `n` train questions (all when n is 0 or exceeds them), in qid order."""
    rows = sorted(train_qa, key=lambda q: q["qid"])
    if n == 0 or n >= len(rows):
        return rows
    return sorted(random.Random(seed).sample(rows, n), key=lambda q: q["qid"])


def cost_rank(method: str, p95_ms: dict[str, float] | None) -> tuple[int, float]:
    """Sort key, cheapest first: COST_ORDER, then measured p95 latency. The order is by
    construction (fusion runs BM25 and a vector search, so it never costs less than either);
    a p95 measured on a few dozen questions is noise there and would make retrieval.json depend
    on the machine's load, so it only orders methods COST_ORDER does not name."""
    order = COST_ORDER.index(method) if method in COST_ORDER else len(COST_ORDER)
    return (order, (p95_ms or {}).get(method, float("inf")))


def choose_method(scores: dict[str, Sequence[float]], resamples: int, seed: int,
                  p95_ms: dict[str, float] | None = None) -> dict[str, Any]:
    """The method to use from per-question nDCG@10 of each method (same questions, same order):
    the best mean, or the cheapest method whose paired interval against it covers 0."""
    if not scores:
        raise ValueError("choose_method: no retrieval method was measured")
    validation = {m: {k: v for k, v in bootstrap_ci(s, resamples, seed).items()
                      if k in ("mean", "lo", "hi")} for m, s in scores.items()}
    best = max(scores, key=lambda m: (validation[m]["mean"], -COST_ORDER.index(m)
                                      if m in COST_ORDER else 0))
    ties = [m for m in scores if m != best and covers_zero(
        paired_diff_ci(scores[best], scores[m], resamples, seed))]
    chosen = min([best, *ties], key=lambda m: cost_rank(m, p95_ms))
    return {"method": chosen, "why": explain(best, chosen, ties, validation),
            "validation": validation, "questions": len(next(iter(scores.values())))}


def covers_zero(diff: dict[str, float]) -> bool:
    return diff["lo"] <= 0 <= diff["hi"]


def explain(best: str, chosen: str, ties: list[str], validation: dict[str, Any]) -> str:
    """One line saying why `chosen` was picked."""
    mean = validation[best]["mean"]
    if chosen == best:
        rest = f"; tied with {', '.join(ties)} but cheapest" if ties else ", separated from the rest"
        return f"{best}: best nDCG@10 on the validation slice ({mean:.3f}){rest}"
    return (f"{chosen}: tied with the best ({best}, nDCG@10 {mean:.3f} vs "
            f"{validation[chosen]['mean']:.3f}; paired interval covers 0) and cheaper")


def chosen_metrics(methods: dict[str, dict[str, float]], chosen: str | None) -> dict[str, Any]:
    """metrics.json's retrieval section plus `chosen`: a copy of the chosen method's numbers."""
    return {**methods, CHOSEN: dict(methods[chosen])} if chosen in methods else dict(methods)


def release_mode(tags: dict[str, str], default: str) -> str:
    """The search mode of the method a release was promoted with; `default` for a release from
    before the choice (or a local run)."""
    return METHOD_MODES.get(tags.get(METHOD_TAG, ""), default)


def resolve_chosen(rules: Sequence[GateRule], method: str | None) -> tuple[GateRule, ...]:
    """Gate rules with retrieval.chosen.<m> renamed to retrieval.<method>.<m>: the candidate's
    chosen method, for the candidate and the champion alike (paired per-question rows are keyed
    by method). Without a recorded choice the alias stays (and is judged as logged)."""
    if method is None:
        return tuple(rules)
    prefix = f"retrieval.{CHOSEN}."
    return tuple(r.model_copy(update={"metric": f"retrieval.{method}.{r.metric[len(prefix):]}"})
                 if r.metric.startswith(prefix) else r for r in rules)


def with_current_names(metrics: dict[str, float]) -> dict[str, float]:
    """Logged metrics with retrieval.hybrid.* (the fusion's old name) also as retrieval.fusion.*:
    a champion from before the rename is still compared."""
    old = "retrieval.hybrid."
    renamed = {"retrieval.fusion." + k[len(old):]: v for k, v in metrics.items()
               if k.startswith(old)}
    return {**renamed, **metrics}


# ---- effects ------------------------------------------------------------------------------------


def read_chosen(retrieval_path: Path) -> str | None:
    """The chosen method recorded in evaluate's retrieval.json; None before choices existed."""
    import json

    if not retrieval_path.is_file():
        return None
    chosen = json.loads(retrieval_path.read_text(encoding="utf-8")).get("chosen")
    return chosen["method"] if chosen else None
