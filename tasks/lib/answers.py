"""The answer half of evaluate: base, finetuned, rag and hybrid setups on held-out questions.

rag/hybrid get the top-k chunks of the retrieval method evaluate chose on the train questions
(tasks/lib/choice.py; the LoRA vector search when none was chosen); finetuned/hybrid use the
LoRA generator.
Every setup answers the same questions with batched greedy generation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.lib.config import GenerateConfig, IndexConfig
from tasks.lib.scoreboard import SETUPS

log = logging.getLogger(__name__)

# ---- pure: per-answer scores, costs ------------------------------------------------------------


def score_answer(prediction: str, reference: str, context: list[str] | None,
                 choices: list[str] | None = None) -> dict[str, Any]:
    """Token F1, ROUGE-L, exact match, groundedness (context setups), accuracy (short-answer
    questions: the same choice picked as the reference's; None without choices)."""
    from tasks.lib.answer_metrics import exact_match, groundedness, rouge_l, token_f1
    from tasks.lib.choices import choice_accuracy

    return {"token_f1": token_f1(prediction, reference), "rouge_l": rouge_l(prediction, reference),
            "exact_match": exact_match(prediction, reference),
            "groundedness": groundedness(prediction, context) if context else None,
            "accuracy": choice_accuracy(prediction, reference, choices)}


def option_costs(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """What each option cost to build, from the train/index stage reports."""
    gen, ret, idx = (reports.get(k, {}) for k in ("train_generator", "train_retriever", "index"))
    cand = idx.get("candidate", {})  # reports/index/metrics.json: timings per retriever role
    finetune = {"train_seconds": gen.get("train_seconds", 0.0), "index_seconds": 0.0,
                "adapter_bytes": gen.get("adapter_bytes", 0), "index_bytes": 0}
    embed = {"train_seconds": ret.get("train_seconds", 0.0),
             "index_seconds": cand.get("seconds", 0.0),
             "adapter_bytes": ret.get("adapter_bytes", 0), "index_bytes": cand.get("bytes", 0)}
    zero = dict.fromkeys(finetune, 0.0)
    return {"base": zero, "finetuned": finetune, "rag": embed,
            "hybrid": {k: finetune[k] + embed[k] for k in finetune}}


def speed_of(results: list[dict[str, Any]]) -> dict[str, float]:
    """Latency per answer (ms, batch wall time shared by its answers) and new tokens/s."""
    from tasks.lib.generator import generation_throughput

    through = generation_throughput(results)
    return {"latency_ms": 1000 * through["seconds"] / max(1, through["answers"]),
            "tokens_per_s": through["tokens_per_second"]}


# ---- effects: models and generation -------------------------------------------------------------


def question_contexts(generate: GenerateConfig, index: IndexConfig, questions: list[dict[str, Any]],
                      tables: dict[str, Any], models: dict[str, Any], method: str = "lora",
                      rrf_k: int = 60) -> list[list[dict[str, Any]]]:
    """Top-k chunk hits per eval question by a retrieval method (base vectors when the method's
    table was not indexed)."""
    from tasks.lib.retrieval_eval import METHODS
    from tasks.lib.search import method_contexts

    table_role, mode, model_role = METHODS[method]
    if table_role not in tables:  # a re-scored release has one table (same chunks): its own
        table_role = "candidate" if "candidate" in tables else "base"
        model_role = None if mode == "bm25" else table_role
    return method_contexts(tables[table_role], models.get(model_role),
                           [q["question"] for q in questions], generate.context_k, mode, rrf_k,
                           index)


def run_setups(generate: GenerateConfig, ctx: Any, questions: list[dict[str, Any]],
               contexts: list[list[str]], adapter: Path | None = None,
               setups: tuple[str, ...] = tuple(SETUPS)) -> dict[str, list[dict[str, Any]]]:
    """Generate answers for each of `setups` that can run; one generator load per adapter
    choice. `adapter`: the LoRA generator (default: the candidate's, <adapters_dir>/generator)."""
    from tasks.lib.generator import (
        build_prompt,
        generate_answers,
        generator_base_dir,
        load_generator,
        warm_up_generation,
    )

    base_dir = generator_base_dir(ctx.models, ctx.catalog.models_dir)
    adapter, g = adapter or ctx.catalog.generator_adapter_dir, generate
    outputs: dict[str, list[dict[str, Any]]] = {}
    for lora in (False, True):
        if (lora and not adapter.is_dir()) or not any(SETUPS[s][0] == lora for s in setups):
            continue
        model, tok = load_generator(base_dir, adapter if lora else None, g.device,
                                    ctx.models.generator_id, g.precision)
        warm_up_generation(model, tok)
        for setup, (uses_lora, uses_context) in SETUPS.items():
            if uses_lora != lora or setup not in setups:
                continue
            prompts = [build_prompt(tok, q["question"], ctx if uses_context else None,
                                    g.max_context_tokens, q.get("choices"))
                       for q, ctx in zip(questions, contexts, strict=True)]
            outputs[setup] = generate_answers(model, tok, prompts, g.max_new_tokens, g.batch_size)
            log.info("evaluate answers: %s done (%d answers)", setup, len(prompts))
    return outputs


def semantic_similarity(model: Any, predictions: list[str], references: list[str]) -> list[float]:
    """Cosine similarity of prediction and reference under a sentence-embedding model."""
    a = model.encode(predictions, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode(references, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in (a * b).sum(axis=1)]


def evaluate_answers(generate: GenerateConfig, index: IndexConfig, ctx: Any,
                     questions: list[dict[str, Any]], tables: dict[str, Any],
                     models: dict[str, Any], adapter: Path | None = None,
                     setups: tuple[str, ...] = tuple(SETUPS), method: str = "lora",
                     rrf_k: int = 60) -> dict[str, Any]:
    """Per-answer scores and speed for each setup (the scoreboard aggregates them); context from
    the retrieval `method`. Also re-scores a registered release: its generator `adapter`, its
    table and retriever as the "candidate" role, only the `setups` a gate needs."""
    hits = question_contexts(generate, index, questions, tables, models, method, rrf_k)
    contexts = [[h["text"] for h in hh] for hh in hits]
    outputs = run_setups(generate, ctx, questions, contexts, adapter, setups)
    judge = models["base"]  # semantic similarity under the base retriever, for every setup
    per_setup: dict[str, list[dict[str, Any]]] = {}
    for setup, results in outputs.items():
        uses_context = SETUPS[setup][1]
        texts = [r["text"] for r in results]
        sims = semantic_similarity(judge, texts, [q["answer"] for q in questions])
        per_setup[setup] = [
            {**score_answer(r["text"], q["answer"], ctx if uses_context else None,
                            q.get("choices")),
             "semantic_sim": sim, "qid": q["qid"], "answer": r["text"],
             "cited": [h["doc_id"] for h in hh] if uses_context else []}
            for r, q, ctx, hh, sim in zip(results, questions, contexts, hits, sims, strict=True)]
    return {"per_setup": per_setup, "speed": {s: speed_of(r) for s, r in outputs.items()}}


COST_STAGES = ("train_generator", "train_retriever", "index")  # whose metrics.json hold costs


def load_stage_reports(cat: Any) -> dict[str, dict[str, Any]]:
    """The train/index stage metrics, for the cost table (missing ones are empty)."""
    import json

    paths = {k: cat.stage_metrics_path(k) for k in COST_STAGES}
    return {k: json.loads(p.read_text()) if p.is_file() else {} for k, p in paths.items()}
