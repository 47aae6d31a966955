"""The retriever side (tasks/lib/models.py): adapters tied to their base, fingerprints, loading;
one slow minimum-functionality test of the real default retriever."""

import json
from pathlib import Path

import pytest

from tasks.lib.config import IndexConfig
from tasks.lib.errors import ConfigError
from tasks.lib.models import (
    ADAPTER_META,
    check_adapter_base,
    load_retriever,
    make_adapter_portable,
    pick_device,
    retriever_fingerprint,
    retriever_max_seq_length,
)
from tasks.lib.resolve import resolve_model_dir
from tasks.lib.search import connect, search
from tasks.lib.tables import update_table
from tests.conftest import RETRIEVER_CHUNKS as CHUNKS

RETRIEVER = "sentence-transformers/all-MiniLM-L6-v2"


def test_max_seq_length_from_the_model_dir(tmp_path):
    assert retriever_max_seq_length(tmp_path) == 512  # not stated: the BERT default
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert retriever_max_seq_length(tmp_path) == 128
    assert retriever_max_seq_length(resolve_model_dir(RETRIEVER)) == 256


def test_pick_device_keeps_an_explicit_choice():
    assert pick_device("cpu") == "cpu" and pick_device("cuda") == "cuda"
    assert pick_device("auto") in ("cpu", "cuda")


def test_make_adapter_portable_names_the_base_by_id(tmp_path):
    (tmp_path / "README.md").write_text("local paths")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path":
                                                              "/home/me/.models/base"}))
    make_adapter_portable(tmp_path, "owner/base")
    assert not (tmp_path / "README.md").exists()
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": "owner/base", "r": 8}


def test_adapter_for_another_base_is_refused(tiny_retriever, tmp_path):
    model_dir, _ = tiny_retriever
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / ADAPTER_META).write_text(json.dumps({"base_model_id": "other/model",
                                                    "base_weights": "x"}))
    with pytest.raises(ConfigError, match="trained on base model 'other/model' but is being "
                                          "loaded onto 'tunedex/tiny-retriever'.*retrain"):
        check_adapter_base(adapter, model_dir, "tunedex/tiny-retriever")
    with pytest.raises(ConfigError, match="not a LoRA adapter"):
        check_adapter_base(tmp_path, model_dir, "tunedex/tiny-retriever")


def test_fingerprint_changes_with_adapter(tiny_retriever, tmp_path):
    model_dir, _ = tiny_retriever
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"1")
    base = retriever_fingerprint("x", model_dir, None)
    with_adapter = retriever_fingerprint("x", model_dir, adapter)
    assert base != with_adapter and base == retriever_fingerprint("x", model_dir, None)
    (adapter / "adapter_model.safetensors").write_bytes(b"2")
    assert retriever_fingerprint("x", model_dir, adapter) != with_adapter


@pytest.mark.slow
def test_pretrained_minilm_finds_the_obvious_document(tmp_path):
    """Minimum functionality of the real default retriever (bundled offline copy)."""
    model = load_retriever(resolve_model_dir(RETRIEVER), device="cpu")
    db = connect(str(tmp_path / "db"))
    update_table(db, "t", model, CHUNKS, IndexConfig(batch_size=8))
    table = db.open_table("t")
    for query, doc in [("my battery shows E07", "battery"), ("cheap overnight electricity", "tariff"),
                       ("when do I send my meter reading", "meter")]:
        for mode in ("vector", "fusion"):
            assert search(table, query, mode, 3, model)[0]["doc_id"] == doc, (query, mode)
    assert Path(tmp_path / "db").is_dir()


def test_make_adapter_portable_writes_target_modules_in_one_order(tmp_path):
    """peft keeps target_modules as a set: its order differs between processes (string hashing);
    found when a second `make pipeline` saw the retriever adapter as changed."""
    import json

    for order, folder in ((["value", "query", "dense", "key"], "a"),
                          (["key", "dense", "value", "query"], "b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": "/abs/path", "target_modules": order}))
        make_adapter_portable(tmp_path / folder, "owner/base")
    assert (tmp_path / "a" / "adapter_config.json").read_bytes() == \
        (tmp_path / "b" / "adapter_config.json").read_bytes()
