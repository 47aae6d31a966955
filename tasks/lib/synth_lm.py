"""The generator writing question/answer pairs for the synthesize stage: an instruct model
(refused without a chat template), batched greedy generation, an estimate of the total time
before generation starts (from a short timed probe) and again after the first batch, and
questions/s and tokens/s per batch.

Usage:
    pairs, stats = generate_pairs(cfg.synthesize, cfg.models, Path(".models"), chunks)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.lib.synthesis import parse_pairs, synth_messages

log = logging.getLogger("tasks.synthesize")  # the stage's log: one place to read its progress
PROBE_TOKENS = 8  # new tokens of the timed probe behind the estimate printed before generating


def upper_estimate(probe_seconds: float, probe_tokens: int, max_new_tokens: int,
                   batches: int) -> float:
    """Seconds for `batches` batches if every answer runs to max_new_tokens, scaled from a probe
    of one batch generating probe_tokens (its prompt pass is scaled too: an upper bound)."""
    return probe_seconds * max(1.0, max_new_tokens / max(1, probe_tokens)) * batches


def open_generator(section: Any, models: Any, models_dir: Path) -> tuple[Any, Any, str]:
    """(model, tokenizer, id) of the synthesizing generator; refuse one without a chat template."""
    from tasks.lib.errors import ConfigError
    from tasks.lib.generator import load_generator
    from tasks.lib.resolve import load_tokenizer, resolve_model_dir

    model_id = section.generator_id or models.generator_id
    base = resolve_model_dir(model_id, models.allow_download, models_dir)
    if not getattr(load_tokenizer(base), "chat_template", None):  # before loading any weights
        raise ConfigError(f"synthesize.generator_id: {model_id} has no chat template, so it is not "
                          "an instruct/chat model and cannot follow the question-writing prompt; "
                          "name an instruct model (e.g. HuggingFaceTB/SmolLM2-135M-Instruct) or "
                          "use synthesize.method: ict")
    model, tokenizer = load_generator(base, device=section.device)
    return model, tokenizer, model_id


def generate_pairs(section: Any, models: Any, models_dir: Path, todo: list[dict[str, Any]],
                   on_batch: Callable[[dict[str, list[tuple[str, str]]]], None] | None = None
                   ) -> tuple[dict[str, list[tuple[str, str]]], dict[str, float]]:
    """Pairs per chunk from the generator in batches, logging an estimate before the first
    batch (an upper bound from a timed probe) and after it, and throughput after each;
    `on_batch` gets the pairs so far (the cache keeps them, so an interrupted run loses one
    batch, not all). Returns the pairs and generation stats."""
    from tasks.lib.generator import generate_answers, render_prompt

    model, tok, _ = open_generator(section, models, models_dir)
    n, size = section.questions_per_chunk, section.batch_size
    prompts = [render_prompt(tok, synth_messages(c["text"], n, c.get("title"))) for c in todo]
    batches = -(-len(prompts) // size)
    probe = time.perf_counter()
    generate_answers(model, tok, prompts[:size], PROBE_TOKENS, size)
    log.info("synthesize: %d chunks in %d batch(es) of %d, up to %d new tokens each: at most "
             "about %.0f s (timed on a %d-token probe of the first batch)", len(prompts), batches,
             size, section.max_new_tokens,
             upper_estimate(time.perf_counter() - probe, PROBE_TOKENS, section.max_new_tokens,
                            batches), PROBE_TOKENS)
    pairs, tokens, started = {}, 0, time.perf_counter()
    for start in range(0, len(prompts), size):
        out = generate_answers(model, tok, prompts[start:start + size], section.max_new_tokens, size)
        for chunk, result in zip(todo[start:start + size], out, strict=True):
            pairs[chunk["chunk_id"]] = parse_pairs(result["text"], n)
        tokens += sum(r["new_tokens"] for r in out)
        done, spent = min(start + size, len(prompts)), time.perf_counter() - started
        if start == 0:
            log.info("synthesize: first batch of %d chunks in %.1f s: about %.0f s for all %d",
                     done, spent, spent * len(prompts) / done, len(prompts))
        log.info("synthesize: %d/%d chunks, %.2f questions/s, %.1f tokens/s", done, len(prompts),
                 sum(map(len, pairs.values())) / spent, tokens / spent)
        if on_batch is not None:
            on_batch(pairs)
    seconds = time.perf_counter() - started
    return pairs, {"generated_tokens": tokens, "generate_seconds": round(seconds, 2),
                   "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0}
