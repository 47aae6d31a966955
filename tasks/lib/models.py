"""The retriever side and adapters: which base an adapter belongs to, portable on disk; loading
the sentence-transformers retriever (resolution of base models: tasks/lib/resolve.py)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from tasks.lib.errors import ConfigError

log = logging.getLogger(__name__)


def retriever_max_seq_length(model_dir: Path) -> int:
    """The sentence-transformers max_seq_length of a model directory (512 when not stated)."""
    cfg = model_dir / "sentence_bert_config.json"
    if cfg.is_file():
        return int(json.loads(cfg.read_text()).get("max_seq_length", 512))
    return 512


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
    # peft keeps target_modules as a set: its order follows the process's string hashing, so
    # two runs on the same inputs would write different bytes (and DVC would see a change).
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))  # as peft writes it


def load_retriever(base_dir: Path, adapter_dir: Path | None = None, device: str = "auto",
                   max_seq_length: int | None = None, precision: str = "fp32"):
    """Load a SentenceTransformer from a local directory, its LoRA adapter merged when given, at
    `precision` (index.precision: fp32 | bf16 | auto; training loads fp32)."""
    from sentence_transformers import SentenceTransformer

    from tasks.lib.precision import apply_precision, resolve_precision

    device = pick_device(device)
    model = SentenceTransformer(str(base_dir), device=device, local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = min(max_seq_length, model.max_seq_length)
    if adapter_dir is not None:
        from peft import PeftModel

        # Merged weights encode ~1.4x faster than adapter layers on the side; same vectors.
        model[0].model = PeftModel.from_pretrained(model[0].model, str(adapter_dir)).merge_and_unload()
    resolved = resolve_precision(precision, device)
    if resolved != "fp32":
        log.info("retriever %s%s: %s inference on %s (index.precision %s)", Path(base_dir).name,
                 " + adapter" if adapter_dir else "", resolved, device, precision)
    return apply_precision(model, resolved)


def cached_retriever(base_dir: str, adapter_dir: str | None, device: str = "auto",
                     precision: str = "fp32"):
    """load_retriever, once per process for the same directories, adapter weights and precision
    (a retrained adapter in the same directory loads afresh); for read-only use."""
    digest = weights_digest(Path(adapter_dir)) if adapter_dir else None
    return _cached_retriever(base_dir, adapter_dir, device, precision, digest)


@functools.lru_cache(maxsize=6)  # base, candidate, the two per-source adapters, spare
def _cached_retriever(base_dir: str, adapter_dir: str | None, device: str, precision: str,
                      _digest: str | None):
    return load_retriever(Path(base_dir), Path(adapter_dir) if adapter_dir else None, device,
                          precision=precision)


def retriever_base_dir(models: Any, cache_dir: str | Path) -> Path:
    """The configured retriever's base model directory (the `models` section; offline first)."""
    from tasks.lib.resolve import resolve_model_dir

    return resolve_model_dir(models.retriever_id, models.allow_download, cache_dir)
