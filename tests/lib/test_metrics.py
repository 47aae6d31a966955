import math

import pytest

from tasks.lib.metrics import (
    bootstrap_ci,
    latency_summary,
    mrr_at_k,
    ndcg_at_k,
    paired_diff_ci,
    recall_at_k,
    retrieval_scores,
    separated,
)


def test_recall_mrr_ndcg_exact_values():
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, {"b", "z"}, 1) == 0.0
    assert recall_at_k(ranked, {"b", "z"}, 5) == 0.5
    assert mrr_at_k(ranked, {"c"}, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, {"c"}, 2) == 0.0
    assert ndcg_at_k(ranked, {"a"}, 10) == 1.0
    assert ndcg_at_k(ranked, {"b"}, 10) == pytest.approx(1 / math.log2(3))
    # two relevant at ranks 2 and 3: DCG = 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, {"b", "c"}, 10) == pytest.approx(
        (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)))


def test_retrieval_scores_keys():
    assert retrieval_scores(["a"], {"a"}) == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0,
                                             "mrr@10": 1.0, "ndcg@10": 1.0}


def test_bootstrap_interval_brackets_mean_and_is_seeded():
    values = [0.0, 1.0] * 50
    ci = bootstrap_ci(values, 500, seed=1)
    assert ci["mean"] == 0.5 and ci["lo"] < 0.5 < ci["hi"]
    assert ci == bootstrap_ci(values, 500, seed=1)
    assert bootstrap_ci([0.7] * 10)["lo"] == pytest.approx(0.7)


def test_paired_difference_detects_consistent_gain():
    base = [0.2, 0.5, 0.9, 0.4] * 25
    better = [b + 0.05 for b in base]
    diff = paired_diff_ci(better, base, 500)
    assert diff["lo"] == pytest.approx(0.05) and separated(diff) == 1
    assert separated(paired_diff_ci(base, base, 500)) == 0
    with pytest.raises(ValueError, match="differ in length"):
        paired_diff_ci([1.0], [1.0, 2.0])


def test_latency_summary_in_ms():
    out = latency_summary([0.001] * 19 + [0.1])
    assert out["p50_ms"] == pytest.approx(1.0)
    assert out["p95_ms"] > 1.0
