"""The causal-LM side: prompts, adapters, generation (GGUF conversion: tasks/lib/resolve.py).

Usage:
    base_dir = resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct")  # tasks.lib.resolve
    model, tokenizer = load_generator(base_dir, adapter_dir=None, device="cpu")
    prompts = [render_prompt(tokenizer, build_messages(q, chunks)) for q, chunks in items]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens=48, batch_size=8)

Pure functions (prompts) need only a tokenizer; nothing heavy is imported at module import.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tasks.lib.choices import choices_instruction
from tasks.lib.files import publish_dir
from tasks.lib.models import check_adapter_base, make_adapter_portable, pick_device, write_adapter_meta
from tasks.lib.resolve import resolve_model_dir

log = logging.getLogger(__name__)


# ---- pure: prompts ---------------------------------------------------------------------------

SYSTEM_WITH_CONTEXT = ("Answer the question briefly, in one or two sentences, using the context. "
                       "If the context does not answer it, say so.")
SYSTEM_NO_CONTEXT = "Answer the question briefly, in one or two sentences."
_NO_TEMPLATE_LOGGED: set[str] = set()


def build_messages(question: str, context_chunks: list[str] | None = None,
                   choices: list[str] | None = None) -> list[dict[str, str]]:
    """Chat messages for one question, with numbered context chunks when given; a short-answer
    question (choices) adds a line asking for one of them first."""
    asked = f"Question: {question}" + (f"\n{choices_instruction(choices)}" if choices else "")
    if context_chunks:
        context = "\n\n".join(f"[{i}] {chunk}" for i, chunk in enumerate(context_chunks, 1))
        return [{"role": "system", "content": SYSTEM_WITH_CONTEXT},
                {"role": "user", "content": f"Context:\n{context}\n\n{asked}"}]
    return [{"role": "system", "content": SYSTEM_NO_CONTEXT},
            {"role": "user", "content": asked}]


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


def cut_chunks(tokenizer: Any, chunks: list[str], keep_tokens: int) -> list[str]:
    """The first `keep_tokens` context tokens, in rank order: later chunks go first, then tails."""
    kept: list[str] = []
    for chunk in chunks:
        if keep_tokens <= 0:
            break
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        kept.append(chunk if len(ids) <= keep_tokens else tokenizer.decode(ids[:keep_tokens]))
        keep_tokens -= len(ids)
    return kept


def build_prompt(tokenizer: Any, question: str, context_chunks: list[str] | None = None,
                 max_context_tokens: int | None = None, choices: list[str] | None = None) -> str:
    """The one prompt of every setup (evaluate, serving, the registered models): the question,
    with context chunks cut to `max_context_tokens` when given, and its choices when it has them."""
    if context_chunks and max_context_tokens is not None:
        context_chunks = cut_chunks(tokenizer, context_chunks, max_context_tokens)
    return render_prompt(tokenizer, build_messages(question, context_chunks or None, choices))


# ---- effects: base model directory, GGUF conversion, tiny model --------------------------------


def generator_base_dir(models: Any, cache_dir: str | Path) -> Path:
    """The configured generator's base model directory (the `models` section; offline first)."""
    return resolve_model_dir(models.generator_id, models.allow_download, cache_dir)


# ---- effects: adapters -------------------------------------------------------------------------


def save_adapter(peft_model: Any, out_dir: Path, base_id: str, base_dir: Path,
                 extra: dict[str, Any]) -> Path:
    """Write the LoRA adapter only (portable) plus the sidecar naming its base; swap in a whole dir."""
    def write(tmp: Path) -> None:
        peft_model.save_pretrained(str(tmp))
        make_adapter_portable(tmp, base_id)
        write_adapter_meta(tmp, base_id, base_dir, extra)

    return publish_dir(Path(out_dir), write, replace=True,  # a retrained adapter replaces the old
                       what="the generator adapter", key="paths.adapters_dir")


def load_generator(base_dir: Path, adapter_dir: Path | None = None, device: str = "auto",
                   base_id: str | None = None, precision: str = "fp32"):
    """(model, tokenizer) from local dirs, the adapter merged (in fp32, then cast to `precision`:
    fp32 | bf16 | mixed | auto, see tasks/lib/precision.py); the tokenizer pads left for
    generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.lib.precision import bf16_matmuls, resolve_generation_precision

    if adapter_dir is not None:
        check_adapter_base(adapter_dir, base_dir, base_id)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32,
                                                 local_files_only=True)
    if adapter_dir is not None:
        from peft import PeftModel

        # Merged weights generate as fast as the base; the adapter on the side costs every token.
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    device = pick_device(device)
    resolved = resolve_generation_precision(precision, device)
    if resolved != "fp32":
        log.info("generator %s: %s inference on %s (precision %s)", Path(base_dir).name,
                 "bf16" if resolved == "bf16" else "mixed (bf16 matrix products, fp32 activations)",
                 device, precision)
    if resolved == "bf16":
        model = model.to(torch.bfloat16)
    elif resolved == "mixed":
        model = bf16_matmuls(model)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


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
    """Greedy answers in left-padded batches: text, new_tokens, seconds (its batch's wall time),
    in the order of `prompts`. Prompts of similar length share a batch (sorted by tokens), so a
    short question is not padded to a long context's length."""
    import torch

    if not prompts:  # the tokenizer refuses an empty batch
        return []
    config = _greedy_config(model, tokenizer, max_new_tokens)
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        # Left padding: right padding would put pads between a prompt and its answer.
        enc = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt",
                            padding_side="left").to(model.device)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        seconds = time.perf_counter() - started
        for i, row in zip(rows, out[:, enc["input_ids"].shape[1]:].tolist(), strict=True):
            n = _answer_length(row, config.eos_token_id)
            results[i] = {"text": tokenizer.decode(row[:n], skip_special_tokens=True).strip(),
                          "new_tokens": n, "seconds": seconds, "batch": start // batch_size}
    return results  # type: ignore[return-value]


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
