"""synthesize (tasks/synthesize.py), the real stage on the tiny data: mode off writes an empty
file, a corpus alone goes through validate -> synthesize -> prepare with a synthetic eval set held
out by document, the tiny (random-weight) generator's junk is refused with every filter's count,
cached questions are reused for unchanged chunks only, and a model without a chat template is
refused. The corpus-only pipeline through evaluate is the slow test at the end."""

import json
import shutil
from pathlib import Path

import pytest

from tasks.lib.config import load_config
from tasks.lib.context import StageContext
from tasks.lib.data import read_jsonl, write_jsonl
from tasks.lib.errors import ConfigError, DataError, ValidationFailed
from tasks.lib.provenance import SYNTHETIC_EVAL_WARNING
from tasks.lib.synthesis import reuse_key
from tasks.synthesize import synthesize_stage
from tests.conftest import SMOKE, TINY_DOCS, run_stages, write_jsonl_lines


@pytest.fixture
def corpus_only(smoke_overrides, tmp_path) -> dict[str, str]:
    """The smoke overrides with the QA file gone: a team with documents alone."""
    Path(smoke_overrides["paths.qa_path"]).unlink()
    return smoke_overrides


def validated(cfg):
    """The config, after validate passed on its data (synthesize refuses unvalidated data)."""
    run_stages(cfg, ("validate",))
    return cfg


def synthesize_once(cfg):
    return synthesize_stage(cfg.synthesize, cfg.prepare, cfg.pii, cfg.validate_,
                            StageContext.of(cfg))


def test_mode_off_writes_an_empty_file_and_loads_no_model(smoke_cfg):
    result = synthesize_once(smoke_cfg)  # tiny data has qa.jsonl: auto -> off
    cat = StageContext.of(smoke_cfg).catalog
    assert result["resolved_mode"] == "off" and result["questions"] == 0
    assert cat.synthetic_path.read_text() == ""
    assert json.loads(cat.synthesize_summary_path.read_text())["removed"]["roundtrip"] == 0
    assert not cat.models_dir.exists()  # nothing was loaded, not even a tokenizer


def test_unvalidated_data_is_refused(corpus_only):
    cfg = load_config(SMOKE, {**corpus_only, "synthesize.method": "ict"})
    with pytest.raises(ValidationFailed, match="summary.json not found: run the validate stage"):
        synthesize_once(cfg)


def test_mode_off_without_a_qa_file_is_refused(corpus_only):
    cfg = load_config(SMOKE, {**corpus_only, "synthesize.mode": "off"})
    with pytest.raises(DataError, match="file not found and synthesize.mode is off"):
        synthesize_once(cfg)


def test_a_corpus_alone_gives_contract_rows_and_a_held_out_synthetic_eval_set(corpus_only):
    cfg = load_config(SMOKE, {**corpus_only, "synthesize.method": "ict"})
    out = run_stages(cfg, ("validate", "synthesize", "prepare"))
    cat = StageContext.of(cfg).catalog
    summary, rows = out["synthesize"], read_jsonl(cat.synthetic_path)
    assert summary["resolved_mode"] == "only" and summary["questions"] == len(rows) > 0
    removed_after_parsing = sum(v for k, v in summary["removed"].items()
                                if k not in ("too_short_chunk", "unparsable"))
    assert summary["candidates"] - removed_after_parsing == len(rows)
    docs = {d["doc_id"] for d in TINY_DOCS}
    for row in rows:
        assert row["qid"].startswith("syn-") and row["doc_ids"][0] in docs
        assert row["metadata"]["synthetic"] and row["metadata"]["method"] == "ict"
        assert row["metadata"]["chunk_id"].startswith(row["doc_ids"][0] + "#")
    assert len({r["qid"] for r in rows}) == len(rows)
    # prepare: an eval set of synthetic questions whose documents produced no train question
    prepared = out["prepare"]
    assert prepared["eval_synthetic"] == 1 and prepared["synthetic_eval_questions"] > 0
    train = {r["doc_ids"][0] for r in read_jsonl(cat.train_qa_path)}
    held = {r["doc_ids"][0] for r in read_jsonl(cat.eval_qa_path)}
    assert train and held and not train & held
    before = cat.synthetic_path.read_bytes()
    synthesize_once(cfg)  # the same inputs write the same file
    assert cat.synthetic_path.read_bytes() == before


def test_an_unset_qa_path_is_a_corpus_only_project(smoke_overrides):
    """paths.qa_path: null (no QA file named at all) is the corpus-only case, like a missing one."""
    unset = {**smoke_overrides, "paths.qa_path": None, "synthesize.method": "ict"}
    out = run_stages(load_config(SMOKE, unset), ("validate", "synthesize", "prepare"))
    assert out["synthesize"]["resolved_mode"] == "only" and out["synthesize"]["questions"] > 0
    assert out["prepare"]["eval_synthetic"] == 1
    with pytest.raises(DataError, match=r"^paths.qa_path \(unset\): file not found and synthesize"):
        synthesize_once(load_config(SMOKE, {**unset, "synthesize.mode": "off"}))


def test_the_tiny_generators_junk_is_refused_naming_each_filter(corpus_only, caplog):
    cfg = validated(load_config(SMOKE, {**corpus_only, "synthesize.method": "lm",
                              "validate.min_questions": 3}))
    with caplog.at_level("INFO", logger="tasks.synthesize"), pytest.raises(DataError) as err:
        synthesize_once(cfg)
    progress = [r.getMessage() for r in caplog.records if r.name == "tasks.synthesize"]
    estimate = next(i for i, m in enumerate(progress) if "at most about" in m)
    assert estimate < next(i for i, m in enumerate(progress) if "first batch of" in m)
    message = str(err.value)
    assert "synthetic question(s) survived the filters, validate.min_questions is 3" in message
    assert "removed: " in message and "unparsable" in message
    cache = read_jsonl(StageContext.of(cfg).catalog.synthetic_cache_path)
    assert len(cache) == 6  # one entry per chunk questioned, kept although the stage failed


def prefill_cache(cfg, chunks: list[dict]) -> None:
    """A cache as a previous run would leave it: two good pairs per chunk."""
    rows = [{"key": reuse_key(c["text"], "lm", cfg.models.generator_id, 2),
             "pairs": [[f"What is said in part {c['chunk_id']}?", " ".join(c["text"].split()[:4])],
                       [f"Tell me about section {c['chunk_id']} please",
                        " ".join(c["text"].split()[-4:])]]} for c in chunks]
    write_jsonl(rows, StageContext.of(cfg).catalog.synthetic_cache_path)


def test_cached_questions_are_reused_and_only_changed_chunks_are_generated(corpus_only):
    from tasks.synthesize import load_chunks

    cfg = validated(load_config(SMOKE, {**corpus_only, "synthesize.method": "lm",
                              "synthesize.roundtrip_k": 0}))
    chunks = load_chunks(cfg.prepare, cfg.pii, StageContext.of(cfg))
    prefill_cache(cfg, chunks)
    result = synthesize_once(cfg)  # nothing to generate: the generator is never loaded
    metrics = json.loads(StageContext.of(cfg).catalog.stage_metrics_path("synthesize").read_text())
    assert (metrics["reused_chunks"], metrics["generated_chunks"]) == (len(chunks), 0)
    assert result["questions"] == 2 * len(chunks)
    # one document edited: its chunks are generated again (junk, refused), the others reused
    docs = [{**TINY_DOCS[0], "text": TINY_DOCS[0]["text"] + " Prices include VAT."}, *TINY_DOCS[1:]]
    write_jsonl_lines(Path(corpus_only["paths.corpus_path"]), docs)
    synthesize_once(validated(cfg))
    metrics = json.loads(StageContext.of(cfg).catalog.stage_metrics_path("synthesize").read_text())
    now = load_chunks(cfg.prepare, cfg.pii, StageContext.of(cfg))
    changed = [c["chunk_id"] for c in now if c["text"] not in {o["text"] for o in chunks}]
    assert changed == ["plan-01#1"]  # the document's first chunk is unchanged: reused
    assert (metrics["reused_chunks"], metrics["generated_chunks"]) == (len(now) - 1, 1)


def test_a_generator_without_a_chat_template_is_refused(corpus_only, tiny_generator_dir, tmp_path):
    plain = shutil.copytree(tiny_generator_dir, tmp_path / "no-template")
    (plain / "chat_template.jinja").unlink()
    cfg = validated(load_config(SMOKE, {**corpus_only, "synthesize.method": "lm",
                              "synthesize.generator_id": str(plain)}))
    with pytest.raises(ConfigError, match=r"has no chat template, so it is not an instruct/chat"):
        synthesize_once(cfg)


@pytest.mark.slow
def test_a_corpus_alone_runs_through_evaluate_with_the_synthetic_eval_flag(corpus_only):
    cfg = load_config(SMOKE, {**corpus_only, "synthesize.method": "ict"})
    run_stages(cfg)
    out = StageContext.of(cfg).catalog.evaluate_dir
    answers = json.loads((out / "answers.json").read_text())
    assert answers["provenance"]["eval_synthetic"] is True
    assert answers["provenance"]["train_source"] == "synthetic"
    assert answers["warning"] == SYNTHETIC_EVAL_WARNING
    board = (out / "scoreboard.md").read_text()
    assert f"> **Warning: {SYNTHETIC_EVAL_WARNING}**" in board
    assert "Training questions: synthetic (0 real, " in board
    html = (out / "report.html").read_text()
    assert "id=synthetic-eval" in html and html.index("synthetic-eval") < html.index(
        "id=recommendation")


@pytest.mark.slow
def test_mode_add_scores_lora_trained_on_each_source_alone(smoke_overrides):
    """Real and synthetic train questions: evaluate scores LoRA on real only and on synthetic
    only beside LoRA on both (deliverable 5), and never chooses them for answers."""
    cfg = load_config(SMOKE, {**smoke_overrides, "synthesize.mode": "add",
                              "synthesize.method": "ict"})
    out = run_stages(cfg)
    cat = StageContext.of(cfg).catalog
    plan = json.loads((cat.retriever_sources_dir / "sources.json").read_text())
    assert plan["compared"] and set(plan["adapters"]) == {"real", "synthetic"}
    assert plan["adapters"]["real"]["questions"] + plan["adapters"]["synthetic"]["questions"] \
        == len(read_jsonl(cat.train_qa_path))
    assert {"candidate_real", "candidate_synthetic"} <= set(out["index"]["tables"])
    retrieval = json.loads((cat.evaluate_dir / "retrieval.json").read_text())
    assert {"lora", "lora_real", "lora_synthetic"} <= set(retrieval["methods"])
    assert {"lora_synthetic_vs_lora_real", "lora_vs_lora_real"} <= set(retrieval["comparisons"])
    assert retrieval["chosen"]["method"] not in ("lora_real", "lora_synthetic")
    assert "| lora_synthetic |" in (cat.evaluate_dir / "scoreboard.md").read_text()
    html = (cat.evaluate_dir / "report.html").read_text()
    assert "lora_real / lora_synthetic: LoRA trained on" in html
