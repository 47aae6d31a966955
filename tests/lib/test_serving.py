"""Serving a release (tasks/lib/serving.py): what is served, the setup choice, the errors, and
queries on a real pinned LanceDB table and a real sqlite MLflow registry."""

from dataclasses import replace
from pathlib import Path

import pytest

from tasks.lib.catalog import Catalog
from tasks.lib.config import (
    EvaluateConfig,
    GenerateConfig,
    IndexConfig,
    LockConfig,
    ModelsConfig,
    PathsConfig,
    PromoteConfig,
    TrackingConfig,
)
from tasks.lib.errors import ConfigError, ServingError
from tasks.lib.registry import RegistryRef, Release
from tasks.lib.serving import (
    LoadedRelease,
    ServedRelease,
    ServingSections,
    check_choice,
    cited_sources,
    lora_adapter,
    resolve_served,
    served_from_index,
    served_from_release,
    setup_parts,
)

MODELS = ModelsConfig(retriever_id="ret/base", generator_id="gen/base")
SECTIONS = ServingSections(MODELS, GenerateConfig(), EvaluateConfig(), IndexConfig())
CHUNKS = [
    {"chunk_id": "plan-01#0", "doc_id": "plan-01", "text": "The Basic plan costs 4 euros a month."},
    {"chunk_id": "plan-01#1", "doc_id": "plan-01", "text": "The Pro plan includes chat support."},
    {"chunk_id": "pay-01#0", "doc_id": "pay-01", "text": "We accept Visa and Mastercard."},
    {"chunk_id": "sec-01#0", "doc_id": "sec-01", "text": "Sign-in codes expire after ten minutes."},
]


def catalog(root: Path) -> Catalog:
    return Catalog(PathsConfig(reports_dir=str(root / "reports"), adapters_dir=str(root / "adapters"),
                               models_dir=str(root / "model-cache"), index_uri=str(root / "lancedb")))


def index_info(root: Path, with_candidate: bool = True) -> dict:
    tables = {"base": {"table": "chunks_base", "version": 3, "adapter_dir": None}}
    if with_candidate:
        tables["candidate"] = {"table": "chunks_lora", "version": 5,
                               "adapter_dir": str(root / "adapters" / "retriever")}
    return {"index_uri": str(root / "lancedb"), "retriever_id": "ret/indexed", "tables": tables}


def served(root: Path, table: str = "chunks", version: int = 1) -> ServedRelease:
    return ServedRelease("test release", None, str(root / "lancedb"), table, version, "ret/base",
                         None, "gen/base", root / "adapters" / "generator")


# ---- pure: what is served ----------------------------------------------------------------------


def test_served_from_release_names_both_versions_and_pins_the_table():
    release = Release(4, 3, "s3://bucket/index", "chunks_abc", 7, "ret/base", "gen/base", {})
    out = served_from_release(release, "champion", "tunedex-retriever", Path("r/adapter"),
                              Path("g/adapter"))
    assert out == ServedRelease("release champion (tunedex-retriever v4, generator v3)", 4,
                                "s3://bucket/index", "chunks_abc", 7, "ret/base", Path("r/adapter"),
                                "gen/base", Path("g/adapter"))
    assert out.pinned == {"table": "chunks_abc", "version": 7}


def test_local_serves_the_candidate_table_and_the_adapters_on_disk(tmp_path):
    out = served_from_index(index_info(tmp_path), "candidate", MODELS, catalog(tmp_path))
    assert out == ServedRelease("candidate retriever (last index run)", None,
                                str(tmp_path / "lancedb"), "chunks_lora", 5, "ret/indexed",
                                tmp_path / "adapters" / "retriever", "gen/base",
                                tmp_path / "adapters" / "generator")


def test_local_falls_back_to_the_base_table_without_a_candidate(tmp_path):
    out = served_from_index(index_info(tmp_path, with_candidate=False), "candidate", MODELS,
                            catalog(tmp_path))
    assert (out.label, out.table, out.table_version, out.retriever_adapter) == (
        "base retriever (last index run)", "chunks_base", 3, None)
    base = served_from_index(index_info(tmp_path), "base", MODELS, catalog(tmp_path))
    assert (base.table, base.retriever_adapter) == ("chunks_base", None)


def test_local_errors_name_the_role_choices_and_the_index_record(tmp_path):
    cat = catalog(tmp_path)
    with pytest.raises(ConfigError, match="unknown retriever role 'lora': expected one of "
                                          "candidate, base"):
        served_from_index(index_info(tmp_path), "lora", MODELS, cat)
    with pytest.raises(ServingError, match="index.json records no table: re-run the index stage"):
        served_from_index({"index_uri": "x", "tables": {}}, "candidate", MODELS, cat)


# ---- pure: setups, adapters, sources -------------------------------------------------------------


@pytest.mark.parametrize(("setup", "parts"), [("base", (False, False)), ("finetuned", (True, False)),
                                              ("rag", (False, True)), ("hybrid", (True, True))])
def test_setup_parts_say_lora_and_context(setup, parts):
    assert setup_parts(setup) == parts


def test_unknown_setup_and_mode_name_the_choices():
    with pytest.raises(ConfigError, match="unknown setup 'both': expected one of base, finetuned, "
                                          "rag, hybrid"):
        setup_parts("both")
    assert check_choice("bm25", ("vector", "bm25"), "search mode") == "bm25"
    with pytest.raises(ConfigError, match="unknown search mode 'dense': expected one of vector, bm25"):
        check_choice("dense", ("vector", "bm25"), "search mode")


def test_lora_adapter_only_for_lora_setups_and_named_when_missing(tmp_path):
    release = served(tmp_path)
    assert lora_adapter(release, uses_lora=False) is None
    with pytest.raises(ServingError) as err:
        lora_adapter(release, uses_lora=True)
    assert str(err.value) == (f"{tmp_path / 'adapters' / 'generator'} not found: run "
                              "`tunedex stage train_generator` first")
    (tmp_path / "adapters" / "generator").mkdir(parents=True)
    assert lora_adapter(release, uses_lora=True) == tmp_path / "adapters" / "generator"


def test_cited_sources_keep_rank_order_once_each():
    hits = [{"doc_id": "b"}, {"doc_id": "a"}, {"doc_id": "b"}, {"doc_id": "c"}]
    assert cited_sources(hits) == ("b", "a", "c")
    assert cited_sources([]) == ()


# ---- effects: resolving a release ----------------------------------------------------------------


def test_resolve_local_reads_the_last_index_run(tmp_path):
    import json

    cat = catalog(tmp_path)
    with pytest.raises(ConfigError) as err:  # no index run yet: the error names the stage
        resolve_served(None, cat, MODELS, "local")
    assert str(err.value) == (f"{cat.index_info_path} not found: run `tunedex stage index` "
                              "(or the pipeline) first")
    cat.index_info_path.parent.mkdir(parents=True)
    cat.index_info_path.write_text(json.dumps(index_info(tmp_path)))
    assert resolve_served(None, cat, MODELS, "local", "base").table == "chunks_base"
    assert resolve_served(None, cat, MODELS, "local").table == "chunks_lora"


def test_a_registered_release_serves_its_own_retriever(tmp_path):
    with pytest.raises(ConfigError, match="retriever role 'base' applies to --release local only"):
        resolve_served(None, catalog(tmp_path), MODELS, "champion", "base")


def registry(tmp_path: Path) -> RegistryRef:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return RegistryRef.of(TrackingConfig(tracking_uri=uri), PromoteConfig(), catalog(tmp_path),
                          LockConfig(path=str(tmp_path / "lock")))


def register_release(reg: RegistryRef, root: Path) -> None:
    """Retriever v1 + generator v1 as promote records them, champion on both (no training)."""
    from tasks.lib.registry import client

    model = root / "logged"
    (model / "artifacts" / "adapter").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors:\n  python_function:\n    artifacts:\n      adapter:\n"
                                   "        path: artifacts/adapter\n")
    c = client(reg)
    tags = {"release.generator_version": "1", "index.uri": str(root / "lancedb"),
            "index.table": "chunks_abc", "index.version": "2", "retriever.base_model": "ret/v1",
            "generator.base_model": "gen/v1"}
    for name in (reg.retriever_model, reg.generator_model):
        c.create_registered_model(name)
        c.create_model_version(name, str(model), tags=tags if name == reg.retriever_model else {})
        c.set_registered_model_alias(name, "champion", "1")


@pytest.mark.slow
def test_resolve_champion_from_a_real_registry(tmp_path):
    reg = registry(tmp_path)
    with pytest.raises(ServingError, match="no release 'champion' in registered model "
                                           "tunedex-retriever at sqlite:///"):
        resolve_served(reg, reg.catalog, MODELS)
    register_release(reg, tmp_path)
    out = resolve_served(reg, reg.catalog, MODELS)
    assert (out.label, out.release, out.table, out.table_version) == (
        "release champion (tunedex-retriever v1, generator v1)", 1, "chunks_abc", 2)
    assert (out.retriever_base, out.generator_base) == ("ret/v1", "gen/v1")
    for adapter, name in ((out.retriever_adapter, "tunedex-retriever"),
                          (out.generator_adapter, "tunedex-generator")):
        assert adapter.is_dir() and adapter.parts[-2:] == ("artifacts", "adapter")
        assert adapter.parents[1].name.startswith(f"{name}-v1-")
        assert adapter.parents[2] == reg.catalog.registry_cache_dir
    by_number = replace(out, label="release 1 (tunedex-retriever v1, generator v1)")
    assert resolve_served(reg, reg.catalog, MODELS, "1") == by_number


# ---- effects: queries on a real pinned table -----------------------------------------------------


@pytest.fixture
def pinned_table(tmp_path) -> ServedRelease:
    """A chunk table with a full-text index; pinned at that version, then a row added after."""
    from lancedb.index import FTS

    from tasks.lib.search import connect

    table = connect(str(tmp_path / "lancedb")).create_table("chunks", data=CHUNKS)
    table.create_index("text", config=FTS(), replace=True)
    pinned = table.version
    table.add([{"chunk_id": "new-01#0", "doc_id": "new-01", "text": "Refunds take five days."}])
    return served(tmp_path, "chunks", pinned)


def test_bm25_search_returns_the_best_chunk_per_document(pinned_table, tmp_path):
    release = LoadedRelease(pinned_table, SECTIONS, catalog(tmp_path))
    assert [h["doc_id"] for h in release.search("plan", "bm25", k=5)] == ["plan-01"]
    hits = release.search("Visa Mastercard", "bm25", k=5)
    assert [(h["chunk_id"], h["doc_id"]) for h in hits] == [("pay-01#0", "pay-01")]
    assert hits[0]["text"] == "We accept Visa and Mastercard." and hits[0]["score"] > 0


def test_search_reads_the_pinned_version_not_the_newest(pinned_table, tmp_path):
    release = LoadedRelease(pinned_table, SECTIONS, catalog(tmp_path))
    assert release.search("Refunds", "bm25", k=5) == []


def test_search_errors_name_the_mode_k_and_the_missing_table(pinned_table, tmp_path):
    release = LoadedRelease(pinned_table, SECTIONS, catalog(tmp_path))
    with pytest.raises(ConfigError, match="unknown search mode 'dense': expected one of vector, "
                                          "bm25, fusion, fusion_native"):
        release.search("plan", "dense")
    with pytest.raises(ConfigError, match="k must be at least 1, got 0"):
        release.search("plan", "bm25", k=0)
    gone = LoadedRelease(served(tmp_path, "chunks_gone", 1), SECTIONS, catalog(tmp_path))
    with pytest.raises(ServingError, match="LanceDB table chunks_gone is missing from"):
        gone.search("plan", "bm25")


def test_ask_with_a_missing_adapter_fails_before_retrieving(tmp_path):
    nowhere = ServedRelease("x", None, str(tmp_path / "no-index"), "chunks", 1, "ret/base", None,
                            "gen/base", tmp_path / "no-adapter")
    release = LoadedRelease(nowhere, SECTIONS, catalog(tmp_path))
    for setup in ("finetuned", "hybrid"):  # the index is missing too: the adapter is named first
        with pytest.raises(ServingError, match="no-adapter not found: run `tunedex stage "
                                               "train_generator` first"):
            release.ask("Which cards do you take?", setup)
    with pytest.raises(ConfigError, match="unknown setup 'both'"):
        release.ask("Which cards do you take?", "both")
