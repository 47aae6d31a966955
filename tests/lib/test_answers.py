"""The answer half of evaluate (tasks/lib/answers.py): per-answer scores, option costs, speed."""

import json

import pytest

from tasks.lib.answers import load_stage_reports, option_costs, score_answer, speed_of
from tasks.lib.catalog import Catalog
from tasks.lib.config import PathsConfig


def test_option_costs_add_up_for_hybrid():
    # reports/index/metrics.json holds the timings per retriever role ({"base": .., "candidate": ..})
    costs = option_costs({"train_generator": {"train_seconds": 10, "adapter_bytes": 5},
                          "train_retriever": {"train_seconds": 3, "adapter_bytes": 2},
                          "index": {"base": {"seconds": 50, "bytes": 70},
                                    "candidate": {"seconds": 1, "bytes": 7}}})
    assert costs["hybrid"] == {"train_seconds": 13, "index_seconds": 1, "adapter_bytes": 7,
                               "index_bytes": 7}
    assert costs["rag"] == {"train_seconds": 3, "index_seconds": 1, "adapter_bytes": 2,
                            "index_bytes": 7}
    assert costs["finetuned"] == {"train_seconds": 10, "index_seconds": 0.0, "adapter_bytes": 5,
                                  "index_bytes": 0}
    assert costs["base"] == dict.fromkeys(costs["base"], 0.0) and costs["base"]["train_seconds"] == 0


def test_option_costs_without_reports_are_zero():
    assert set(option_costs({})) == {"base", "finetuned", "rag", "hybrid"}
    assert all(v == 0 for row in option_costs({}).values() for v in row.values())


def test_stage_reports_are_read_from_the_stage_metrics(tmp_path):
    cat = Catalog(PathsConfig(reports_dir=str(tmp_path)))
    cat.stage_metrics_path("index").parent.mkdir(parents=True)
    cat.stage_metrics_path("index").write_text(json.dumps({"candidate": {"seconds": 2.5}}))
    assert load_stage_reports(cat) == {"train_generator": {}, "train_retriever": {},
                                       "index": {"candidate": {"seconds": 2.5}}}
    assert option_costs(load_stage_reports(cat))["rag"]["index_seconds"] == 2.5


def test_score_answer_grounding_and_accuracy():
    ynm = ["yes", "no", "maybe"]
    row = score_answer("Yes, the fee is 30 pounds.", "Yes, 30 pounds.", ["The exit fee is 30 pounds."],
                       ynm)
    assert row["accuracy"] == 1.0 and row["groundedness"] > 0.5 and row["token_f1"] > 0.5
    assert score_answer("x", "y", None, None)["groundedness"] is None
    assert score_answer("x", "y", None, None)["accuracy"] is None  # no choices: not scored
    assert score_answer("No.", "Yes. It helps.", None, ynm)["accuracy"] == 0.0
    assert score_answer("Unclear.", "Maybe.", None, ynm)["accuracy"] == 0.0  # picked none


def test_score_answer_exact_values():
    assert score_answer("200 GB", "200 GB.", ["Pro has 200 GB."], None) == {
        "token_f1": 1.0, "rouge_l": 1.0, "exact_match": 1.0, "groundedness": 1.0, "accuracy": None}


def test_speed_shares_a_batch_between_its_answers():
    results = [{"batch": 0, "seconds": 0.4, "new_tokens": 4},
               {"batch": 0, "seconds": 0.4, "new_tokens": 4}]
    assert speed_of(results) == {"latency_ms": pytest.approx(200.0), "tokens_per_s": 20.0}
