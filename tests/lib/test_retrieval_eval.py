"""Retrieval evaluation (tasks/lib/retrieval_eval.py): aggregation, comparisons, the report."""

import pytest

from tasks.lib.config import EvaluateConfig
from tasks.lib.retrieval_eval import METRICS, compare, fmt, retrieval_markdown, summarize_method

CFG = EvaluateConfig(bootstrap=200)


def scores(value: float, n: int = 20) -> list[dict[str, float]]:
    return [dict.fromkeys(METRICS, value) for _ in range(n)]


def test_summarize_method_means_and_latency():
    out = summarize_method(scores(0.5) + scores(1.0), [0.001] * 40, CFG, seed=1)
    assert set(out) == {*METRICS, "latency"}
    assert out["ndcg@10"]["mean"] == 0.75 and out["ndcg@10"]["lo"] < 0.75 < out["ndcg@10"]["hi"]
    assert out["latency"]["p50_ms"] == pytest.approx(1.0)


def test_compare_only_pairs_that_were_run():
    per_method = {"base": scores(0.4), "lora": scores(0.6), "bm25": scores(0.4)}
    out = compare(per_method, CFG, seed=1)
    assert sorted(out) == ["base_vs_bm25", "lora_vs_base"]  # no hybrid: its pairs are skipped
    assert out["lora_vs_base"]["ndcg@10"]["mean"] == pytest.approx(0.2)
    assert out["lora_vs_base"]["verdict"] == 1 and out["base_vs_bm25"]["verdict"] == 0


def test_markdown_rows_and_verdicts():
    row = {**{m: {"mean": 0.5, "lo": 0.25, "hi": 0.75} for m in METRICS},
           "latency": {"p50_ms": 1.04, "p95_ms": 2.96}}
    report = {"questions": 3, "methods": {"bm25": row},
              "comparisons": {"lora_vs_base": {"ndcg@10": {"mean": -0.1, "lo": -0.2, "hi": -0.05},
                                               "verdict": -1}}}
    md = retrieval_markdown(report)
    assert md.startswith("## Retrieval (3 eval questions, document level)\n")
    assert "| bm25 | " + " | ".join(["0.500 [0.250, 0.750]"] * 5) + " | 1.0 | 3.0 |" in md
    assert "- lora − base: -0.100 [-0.200, -0.050] → lora worse" in md
    assert fmt({"mean": 1, "lo": 0, "hi": 1}) == "1.000 [0.000, 1.000]"
