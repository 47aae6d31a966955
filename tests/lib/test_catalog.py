"""The artifact catalog (tasks/lib/catalog.py): every path derived from one `paths` section."""

from pathlib import Path

import pytest

from tasks.lib.catalog import DATA_DOCS_INDEX, Catalog
from tasks.lib.config import PathsConfig

PATHS = PathsConfig(corpus_path="raw/c.jsonl", qa_path="raw/q.jsonl", prepared_dir="prep",
                    reports_dir="out", models_dir="cache", adapters_dir="ad",
                    index_uri="s3://bucket/db")


def test_paths_follow_the_paths_section():
    cat = Catalog(PATHS)
    assert (cat.corpus_path, cat.qa_path) == (Path("raw/c.jsonl"), Path("raw/q.jsonl"))
    assert (cat.chunks_path, cat.train_qa_path, cat.eval_qa_path) == (
        Path("prep/chunks.jsonl"), Path("prep/train_qa.jsonl"), Path("prep/eval_qa.jsonl"))
    assert (cat.models_dir, cat.registry_cache_dir) == (Path("cache"), Path("cache/registry"))
    assert (cat.retriever_adapter_dir, cat.generator_adapter_dir) == (Path("ad/retriever"),
                                                                      Path("ad/generator"))
    assert cat.index_uri == "s3://bucket/db"  # a URI stays a string


def test_an_unset_or_missing_qa_file_is_no_qa(tmp_path):
    unset = Catalog(PATHS.model_copy(update={"qa_path": None}))
    assert unset.qa_path is None and not unset.has_qa and unset.qa_label == "paths.qa_path (unset)"
    missing = Catalog(PATHS.model_copy(update={"qa_path": str(tmp_path / "q.jsonl")}))
    assert not missing.has_qa and missing.qa_label == str(tmp_path / "q.jsonl")
    (tmp_path / "q.jsonl").write_text("")
    assert missing.has_qa


def test_reports_are_one_folder_per_stage():
    cat = Catalog(PATHS)
    assert cat.reports_dir == Path("out")
    assert cat.stage_dir("index") == Path("out/index")
    assert cat.stage_metrics_path("index") == Path("out/index/metrics.json")
    assert cat.index_info_path == Path("out/index/index.json")  # no timings: those are metrics
    assert (cat.validation_dir, cat.validation_summary_path, cat.validation_metrics_path) == (
        Path("out/validation"), Path("out/validation/summary.json"),
        Path("out/validation/metrics.json"))
    assert cat.data_docs_path == Path("out/validation") / DATA_DOCS_INDEX
    assert (cat.evaluate_dir, cat.evaluate_metrics_path) == (Path("out/evaluate"),
                                                             Path("out/evaluate/metrics.json"))
    assert (cat.promote_dir, cat.reindex_dir) == (Path("out/promote"), Path("out/reindex"))
    assert cat.stage_loss_path("train_generator") == Path("out/train_generator/loss.json")
    assert (cat.retrieval_plot_path, cat.answers_plot_path) == (
        Path("out/evaluate/plots/retrieval.json"), Path("out/evaluate/plots/answers.json"))


def test_defaults_are_the_repository_layout():
    cat = Catalog(PathsConfig())
    assert cat.corpus_path == Path("data/demo/corpus.jsonl")
    assert cat.chunks_path == Path("data/prepared/chunks.jsonl")
    assert cat.retriever_adapter_dir == Path("models/retriever")
    assert cat.index_info_path == Path("reports/index/index.json")
    assert cat.index_uri == "lancedb"


def test_a_catalog_is_a_frozen_value():
    assert Catalog(PATHS) == Catalog(PATHS.model_copy())
    assert Catalog(PATHS) != Catalog(PathsConfig())
    with pytest.raises(AttributeError):
        Catalog(PATHS).paths = PathsConfig()
