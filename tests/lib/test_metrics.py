import math

import numpy as np
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


def test_bootstrap_is_bca_seeded_with_exact_values_on_tiny_input():
    # 4 values: every resampled mean is a multiple of 0.025, so the bounds are grid points
    assert bootstrap_ci([0.2, 0.5, 0.9, 0.4], 1000, seed=0) == {
        "mean": 0.5, "lo": pytest.approx(0.3), "hi": pytest.approx(0.8), "method": "BCa"}
    values = [0.0, 1.0] * 50
    ci = bootstrap_ci(values, 500, seed=1)
    assert ci["mean"] == 0.5 and ci["lo"] < 0.5 < ci["hi"] and ci["method"] == "BCa"
    assert ci == bootstrap_ci(values, 500, seed=1)
    assert ci != bootstrap_ci(values, 500, seed=2)


def test_degenerate_samples_give_the_value_itself_without_scipy(monkeypatch):
    import scipy.stats

    monkeypatch.setattr(scipy.stats, "bootstrap", lambda *a, **k: pytest.fail("scipy called"))
    assert bootstrap_ci([0.7] * 10) == {"mean": 0.7, "lo": 0.7, "hi": 0.7, "method": "degenerate"}
    assert bootstrap_ci([3.0]) == {"mean": 3.0, "lo": 3.0, "hi": 3.0, "method": "degenerate"}
    assert paired_diff_ci([0.4, 0.9], [0.4, 0.9])["method"] == "degenerate"  # a retrain, same answers
    empty = bootstrap_ci([])
    assert empty["method"] == "empty" and math.isnan(empty["mean"]) and math.isnan(empty["lo"])


def test_bca_nan_on_near_constant_data_falls_back_to_percentile():
    # spread of one ulp: not all equal, but BCa's acceleration divides by zero (NaN bounds)
    ci = bootstrap_ci([1.0] * 9 + [1.0 + 2**-52], 200, seed=0)
    assert ci == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "method": "percentile"}


def test_paired_difference_detects_consistent_gain():
    base = [0.2, 0.5, 0.9, 0.4] * 25
    better = [b + 0.05 for b in base]
    diff = paired_diff_ci(better, base, 500)
    assert diff["lo"] == pytest.approx(0.05) and separated(diff) == 1
    assert separated(paired_diff_ci(base, base, 500)) == 0
    with pytest.raises(ValueError, match="differ in length"):
        paired_diff_ci([1.0], [1.0, 2.0])


def test_paired_interval_is_scipys_paired_bootstrap_and_narrower_than_unpaired():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    champion = rng.random(60)  # question difficulty dominates both systems' scores
    candidate = champion + rng.normal(0.03, 0.02, 60)
    paired = paired_diff_ci(candidate, champion, 1000, seed=0)

    def diff(x, y, axis):
        return x.mean(axis=axis) - y.mean(axis=axis)

    def scipy_ci(is_paired):
        return bootstrap((candidate, champion), diff, paired=is_paired, n_resamples=1000,
                         method="BCa", rng=np.random.default_rng(0)).confidence_interval

    assert (paired["lo"], paired["hi"]) == pytest.approx(tuple(scipy_ci(True)))
    unpaired = scipy_ci(False)
    assert paired["lo"] > 0 and separated(paired) == 1  # the gain is seen when paired ...
    assert unpaired.low < 0 < unpaired.high  # ... and lost in question-to-question spread
    assert paired["hi"] - paired["lo"] < (unpaired.high - unpaired.low) / 10


def test_latency_summary_in_ms():
    out = latency_summary([0.001] * 19 + [0.1])
    assert out["p50_ms"] == pytest.approx(1.0)
    assert out["p95_ms"] > 1.0
