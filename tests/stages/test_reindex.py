"""The reindex steps (tasks/reindex.py), pure parts: which gate rules a refresh must hold, the
chunking settings it must keep, the eval questions it can still ask. The flow: tests/flows."""

import pytest

from tasks.lib.config import DEFAULT_GATE, GateRule, PrepareConfig
from tasks.lib.errors import ConfigError
from tasks.reindex import REINDEX_METHODS, answerable, check_release_settings, retrieval_rules


def test_retrieval_rules_keep_the_methods_reindex_measures_without_min_improvement():
    rules = (GateRule(metric="answers.hybrid.token_f1", min_improvement=0.01, floor=0.02),
             GateRule(metric="retrieval.fusion.ndcg@10", min_improvement=0.01, max_regression=0.01),
             GateRule(metric="retrieval.base.ndcg@10", floor=0.1),  # base: not re-measured
             GateRule(metric="retrieval.bm25.recall@10", floor=0.3),
             GateRule(metric="retrieval.lora.p95_ms", higher_is_better=False, max_regression=0.5,
                      relative=True))
    kept = retrieval_rules(rules)
    assert [r.metric for r in kept] == ["retrieval.fusion.ndcg@10", "retrieval.bm25.recall@10",
                                        "retrieval.lora.p95_ms"]
    assert [r.min_improvement for r in kept] == [None, None, None]  # hold, not improve
    assert kept[0].max_regression == 0.01 and kept[1].floor == 0.3 and kept[2].relative
    assert rules[1].min_improvement == 0.01  # the config's rules are not changed
    assert REINDEX_METHODS == {"bm25": "bm25", "lora": "vector", "fusion": "fusion",
                               "fusion_native": "fusion_native"}


def test_the_default_gate_leaves_two_retrieval_rules():
    # retrieval.chosen: pin_release resolves it to the champion's method (tag retrieval.method)
    assert [r.metric for r in retrieval_rules(DEFAULT_GATE)] == ["retrieval.chosen.ndcg@10",
                                                                 "retrieval.chosen.p95_ms"]
    assert retrieval_rules((GateRule(metric="answers.hybrid.token_f1", floor=0.0),)) == ()


def test_a_rule_left_with_nothing_to_check_still_applies_its_floor():
    [rule] = retrieval_rules((GateRule(metric="retrieval.fusion.ndcg@10", min_improvement=0.0,
                                       floor=0.5),))
    assert (rule.min_improvement, rule.floor) == (None, 0.5)


def test_check_release_settings_names_the_key():
    prepare = PrepareConfig(chunk_tokens=64, chunk_overlap=8)
    check_release_settings({"prepare.chunk_tokens": "64", "prepare.chunk_overlap": "8"}, prepare)
    check_release_settings({}, prepare)  # an older release without the tags: nothing to compare
    with pytest.raises(ConfigError) as err:
        check_release_settings({"prepare.chunk_tokens": "64", "prepare.chunk_overlap": "16"}, prepare)
    assert str(err.value) == ("prepare.chunk_overlap is 8 but the champion release was indexed with "
                              "16: reindex with the release's settings, or retrain (the pipeline) "
                              "to change them")
    with pytest.raises(ConfigError, match="^prepare.chunk_tokens is 64 but the champion release "
                                          "was indexed with 128"):
        check_release_settings({"prepare.chunk_tokens": "128"}, prepare)


def test_answerable_drops_questions_about_deleted_documents():
    questions = [{"qid": "a", "doc_ids": ["d1"]}, {"qid": "b", "doc_ids": ["d1", "gone"]},
                 {"qid": "c", "doc_ids": ["d2", "d1"]}, {"qid": "d", "doc_ids": ["gone"]}]
    assert [q["qid"] for q in answerable(questions, {"d1", "d2"})] == ["a", "c"]
    assert answerable(questions, set()) == []
    assert answerable([], {"d1"}) == []


@pytest.mark.parametrize("policy", ["redact", "warn"])
def test_the_refreshed_corpus_is_redacted_as_prepare_would(policy):
    import pandas as pd

    from tasks.lib.config import PiiConfig
    from tasks.reindex import corpus_to_index
    from tests.conftest import PII_DOC

    corpus = pd.DataFrame([PII_DOC]).assign(line=[1])
    out = corpus_to_index(corpus, PiiConfig(policy=policy))
    if policy == "warn":
        assert out is corpus
        return
    assert out["text"][0] == ("Refunds go to [IBAN] within five days. Questions? Write to [EMAIL] "
                              "or call [PHONE].")
    assert corpus["text"][0] == PII_DOC["text"]


@pytest.mark.parametrize("policy", ["warn", "redact", "fail"])
def test_the_corpus_check_applies_the_pii_gate(smoke_cfg, policy, caplog):
    """reindex's corpus check counts personal data as validate does; `fail` stops it naming the
    line, field and kind (never the value)."""
    from tasks.lib.context import StageContext
    from tasks.lib.errors import ValidationFailed
    from tasks.reindex import validate_corpus_step
    from tests.conftest import PII_VALUES, write_pii_data

    write_pii_data(smoke_cfg.paths.corpus_path, smoke_cfg.paths.qa_path)
    pii = smoke_cfg.pii.model_copy(update={"policy": policy})
    ctx = StageContext.of(smoke_cfg)
    if policy == "fail":
        with pytest.raises(ValidationFailed, match=r"corpus.jsonl line 4, field 'text': ") as err:
            validate_corpus_step(smoke_cfg.validate_, pii, ctx)
        assert not any(value in str(err.value) for value in PII_VALUES)
        return
    result = validate_corpus_step(smoke_cfg.validate_, pii, ctx)
    assert sum(result["pii"]["corpus.text"].values()) >= 3  # the PII document's e-mail, phone, IBAN
    warned = [r.message for r in caplog.records if "pii.policy: warn" in r.message]
    assert bool(warned) == (policy == "warn")
