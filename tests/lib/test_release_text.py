"""The release description (tasks/lib/release_text.py): exact Markdown from tiny reports."""

from types import SimpleNamespace

from tasks.lib.release_text import (
    describe_release,
    evaluation_reports,
    failed_checks,
    interval_text,
    release_description,
)

ANSWERS = {"summary": {"base": {"token_f1": {"mean": 0.1, "lo": 0.05, "hi": 0.15},
                                "rouge_l": {"mean": 0.2, "lo": 0.1, "hi": 0.3}},
                       "rag": {"token_f1": {"mean": 0.25, "lo": 0.2, "hi": 0.3125}},
                       "other": {"rouge_l": {"mean": 0.2, "lo": 0.1, "hi": 0.3}}},
           "recommendation": {"summary": "Ship embeddings."}, "verdict": "older line"}
RETRIEVAL = {"methods": {"bm25": {"ndcg@10": {"mean": 0.7, "lo": 0.65, "hi": 0.75},
                                  "latency": {"p95_ms": 3.0}},
                         "lora": {"ndcg@10": {"mean": 0.8, "lo": 0.75, "hi": 0.85}}}}
RULES = [{"metric": "answers.rag.token_f1", "passed": False,
          "checks": [{"check": "floor", "passed": True, "text": "value 0.25 (floor >= 0.02)"},
                     {"check": "min_improvement", "passed": False,
                      "text": "improvement +0 (need >= 0.01)"}]},
         {"metric": "retrieval.lora.p95_ms", "passed": False,
          "checks": [{"check": "max_regression", "passed": False, "text": "regression 0.9"}]}]
REJECTED = {"promoted": False, "rules": RULES, "summary": "release v2 is challenger; ...",
            "candidate_version": {"retriever": 2, "generator": 2, "rag": 2}}
PROMOTED = {"promoted": True, "rules": [], "summary": "release v1 is the new champion (first "
            "release)", "candidate_version": {"retriever": 1, "generator": 1, "rag": 1}}


def test_interval_text_three_decimals():
    assert interval_text({"mean": 0.19425, "lo": 0.1428, "hi": 0.25}) == "0.194 [0.143, 0.250]"


def test_failed_checks_name_the_metric_and_only_the_failed_checks():
    assert failed_checks(REJECTED) == ["answers.rag.token_f1: improvement +0 (need >= 0.01)",
                                       "retrieval.lora.p95_ms: regression 0.9"]
    assert failed_checks(PROMOTED) == []


def test_a_rejected_release_lists_its_failed_checks_and_the_headline_numbers():
    assert release_description(REJECTED, ANSWERS, RETRIEVAL) == "\n".join([
        "Release retriever v2, generator v2, rag v2", "",
        "**Gate: not promoted, `@challenger`** — the champion is unchanged.", "",
        "Failed checks:",
        "- answers.rag.token_f1: improvement +0 (need >= 0.01)",
        "- retrieval.lora.p95_ms: regression 0.9", "",
        "**Recommendation:** Ship embeddings.", "",
        "| answer setup | token_f1 [95% interval] |", "|---|---:|",
        "| base | 0.100 [0.050, 0.150] |",
        "| rag | 0.250 [0.200, 0.312] |", "",
        "| retrieval method | ndcg@10 [95% interval] |", "|---|---:|",
        "| bm25 | 0.700 [0.650, 0.750] |",
        "| lora | 0.800 [0.750, 0.850] |", ""])


def test_a_promoted_release_says_so_and_missing_reports_leave_their_lines_out():
    assert release_description(PROMOTED, {"verdict": "Older verdict."}, {}) == "\n".join([
        "Release retriever v1, generator v1, rag v1", "",
        "**Gate: promoted to `@champion`** — release v1 is the new champion (first release)", "",
        "**Recommendation:** Older verdict.", ""])
    assert release_description(PROMOTED, {}, {}).count("\n") == 3


def test_describe_release_sets_one_text_on_every_version(tmp_path, monkeypatch):
    import json

    (tmp_path / "answers.json").write_text(json.dumps(ANSWERS))
    cat = SimpleNamespace(evaluate_dir=tmp_path)
    assert evaluation_reports(cat) == (ANSWERS, {})
    calls = []

    class Client:
        def update_model_version(self, name, version, description):
            calls.append((name, version, description))

    monkeypatch.setattr("tasks.lib.registry.client", lambda reg: Client())
    reg = SimpleNamespace(retriever_model="ret", generator_model="gen", rag_model="rag")
    text = describe_release(reg, REJECTED, cat)
    assert text == release_description(REJECTED, ANSWERS, {})
    assert calls == [("ret", "2", text), ("gen", "2", text), ("rag", "2", text)]
