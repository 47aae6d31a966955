"""synthesize: training questions written from the corpus alone, filtered, for prepare.

Reads the raw corpus (and paths.qa_path when it exists: its questions must not leak into the
synthetic ones) and reports/validation/summary.json; chunks documents exactly as prepare does (same
chunk ids). `method: lm` asks the profile's instruct generator for question + answer pairs per
chunk; `ict` takes one sentence of a chunk as the question (inverse cloze, no model). Every pair
passes length, copy, support, duplicate, leak and round-trip filters, each counted. Writes
data/prepared/synthetic.jsonl (QA-contract rows, `metadata.synthetic`), the reuse cache beside it,
reports/synthesize/summary.json (mode, method, what each filter removed) and metrics.json
(timings, reused vs generated). Mode off writes an empty file in a moment.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prefect import task

from tasks.lib.config import PiiConfig, PrepareConfig, SynthesizeConfig
from tasks.lib.context import StageContext
from tasks.lib.expectations import check_validated
from tasks.lib.runtime import IO_RETRIES
from tasks.lib.synth_filters import (
    FILTERS,
    Candidate,
    check_enough,
    filter_candidates,
    roundtrip_survivors,
    source_ranks,
)
from tasks.lib.synth_lm import generate_pairs
from tasks.lib.synthesis import (
    check_mode,
    example_questions,
    ict_pairs,
    mode_line,
    resolve_mode,
    reuse_key,
    sample_chunks,
    split_sentences,
    synthetic_row,
)

log = logging.getLogger(__name__)

# ---- pure ---------------------------------------------------------------------------------------


def chunk_plan(chunks: list[dict[str, Any]], section: SynthesizeConfig, seed: int
               ) -> tuple[list[dict[str, Any]], int]:
    """The chunks to question (long enough, then the seeded max_chunks sample) and how many
    were too short (ict also needs two sentences: one to ask, one to answer with)."""
    def enough(chunk: dict[str, Any]) -> bool:
        return (len(chunk["text"].split()) >= section.min_chunk_words
                and (section.method != "ict" or len(split_sentences(chunk["text"])) >= 2))

    long_enough = [c for c in chunks if enough(c)]
    return sample_chunks(long_enough, section.max_chunks, seed), len(chunks) - len(long_enough)


def pairs_asked(chunks: list[dict[str, Any]], section: SynthesizeConfig) -> int:
    """Pairs asked for: questions_per_chunk each (ict: at most one per sentence but one)."""
    n = section.questions_per_chunk
    if section.method == "ict":
        return sum(min(n, len(split_sentences(c["text"]))) for c in chunks)
    return n * len(chunks)


def candidates_of(chunks: list[dict[str, Any]], pairs: dict[str, list[tuple[str, str]]]
                  ) -> list[Candidate]:
    """Every generated pair, in chunk order, with its chunk."""
    return [Candidate(c["chunk_id"], c["doc_id"], q, a)
            for c in chunks for q, a in pairs.get(c["chunk_id"], [])]


def output_rows(kept: list[Candidate], chunks: dict[str, dict[str, Any]], method: str
                ) -> list[dict[str, Any]]:
    """The kept pairs as QA-contract rows, numbered by line."""
    return [synthetic_row(chunks[c.chunk_id], c.question, c.answer, method, line)
            for line, c in enumerate(kept, start=1)]


def summary_of(mode: str, resolved: str, section: SynthesizeConfig, generator: str | None,
               counts: dict[str, int], chunks: int, candidates: int, kept: int
               ) -> dict[str, Any]:
    """summary.json: what was asked, what each filter removed, what is left (no timings)."""
    return {"mode": mode, "resolved_mode": resolved, "method": section.method,
            "generator_id": generator if section.method == "lm" and resolved != "off" else None,
            "chunks_questioned": chunks, "candidates": candidates,
            "removed": {name: counts.get(name, 0) for name in FILTERS}, "questions": kept}


# ---- effects: corpus, chunks, cache ------------------------------------------------------------


def load_chunks(prepare: PrepareConfig, pii: PiiConfig, ctx: StageContext) -> list[dict[str, Any]]:
    """The corpus chunked as prepare chunks it (redacted first under pii.policy redact)."""
    from tasks.lib.chunking import chunk_corpus
    from tasks.lib.data import load_corpus
    from tasks.lib.models import retriever_base_dir
    from tasks.lib.pii import scan_frames
    from tasks.lib.resolve import load_tokenizer

    corpus = load_corpus(str(ctx.catalog.corpus_path))
    if pii.policy == "redact":
        corpus = scan_frames({"corpus": corpus}, pii)["corpus"].frame
    model_dir = retriever_base_dir(ctx.models, ctx.catalog.models_dir)
    return [c.__dict__ for c in chunk_corpus(corpus, load_tokenizer(model_dir), prepare)]


def real_questions(ctx: StageContext) -> list[str]:
    """The questions of the real QA file, if there is one (the leak filter's list)."""
    from tasks.lib.data import load_qa

    cat = ctx.catalog
    return load_qa(str(cat.qa_path))["question"].tolist() if cat.has_qa else []


def read_cache(ctx: StageContext) -> dict[str, list[tuple[str, str]]]:
    """Pairs generated before, by reuse key (an unreadable cache is ignored: it is only a cache)."""
    from tasks.lib.data import read_jsonl
    from tasks.lib.errors import DataError

    path = ctx.catalog.synthetic_cache_path
    try:
        rows = read_jsonl(path) if path.is_file() else []
    except DataError as err:
        log.warning("synthesize: ignoring the unreadable cache (%s)", err)
        rows = []
    return {r["key"]: [tuple(p) for p in r["pairs"]] for r in rows if "key" in r}


def pairs_for(section: SynthesizeConfig, ctx: StageContext, chunks: list[dict[str, Any]]
              ) -> tuple[dict[str, list[tuple[str, str]]], dict[str, Any]]:
    """Pairs for every chunk: ict computed, lm reused from the cache where the key matches."""
    if section.method == "ict":
        return ({c["chunk_id"]: ict_pairs(c["text"], section.questions_per_chunk,
                                          f"{ctx.seed}:{c['chunk_id']}", section.max_answer_words)
                 for c in chunks}, {"reused_chunks": 0, "generated_chunks": len(chunks)})
    gen_id = section.generator_id or ctx.models.generator_id
    keys = {c["chunk_id"]: reuse_key(c["text"], "lm", gen_id, section.questions_per_chunk)
            for c in chunks}
    cache = read_cache(ctx)
    todo = [c for c in chunks if keys[c["chunk_id"]] not in cache]
    current = {k: v for k, v in cache.items() if k in set(keys.values())}

    def keep(fresh: dict[str, list[tuple[str, str]]]) -> None:
        write_cache(ctx, {**current, **{keys[cid]: p for cid, p in fresh.items()}})

    fresh, stats = generate_pairs(section, ctx.models, ctx.catalog.models_dir, todo, keep) \
        if todo else ({}, {})
    pairs = {cid: fresh[cid] if cid in fresh else cache[key] for cid, key in keys.items()}
    keep(fresh)  # the cache holds the current chunks' pairs only
    return pairs, {"reused_chunks": len(chunks) - len(todo), "generated_chunks": len(todo), **stats}


def write_cache(ctx: StageContext, by_key: dict[str, list[tuple[str, str]]]) -> None:
    """Keep the pairs of the current chunks (by key) for the next run."""
    from tasks.lib.data import write_jsonl

    write_jsonl([{"key": k, "pairs": [list(p) for p in v]} for k, v in sorted(by_key.items())],
                ctx.catalog.synthetic_cache_path)


# ---- effects: round trip, expectations -----------------------------------------------------------


def roundtrip_ranks(ctx: StageContext, candidates: list[Candidate],
                    chunks: list[dict[str, Any]], device: str) -> list[int]:
    """Rank of each candidate's chunk among all chunks by the base retriever (cosine)."""
    from tasks.lib.models import load_retriever, retriever_base_dir
    from tasks.lib.text import passage_text

    if not candidates:
        return []
    model = load_retriever(retriever_base_dir(ctx.models, ctx.catalog.models_dir), device=device)
    chunk_vecs = model.encode([passage_text(c) for c in chunks], batch_size=64,
                              normalize_embeddings=True, convert_to_numpy=True)
    query_vecs = model.encode([c.question for c in candidates], batch_size=64,
                              normalize_embeddings=True, convert_to_numpy=True)
    position = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    sources = [position[c.chunk_id] for c in candidates]
    step = 256  # questions per similarity block: memory stays 256 x chunks, not questions x chunks
    return [rank for i in range(0, len(sources), step)
            for rank in source_ranks(query_vecs[i:i + step] @ chunk_vecs.T, sources[i:i + step])]


def check_rows(rows: list[dict[str, Any]], corpus_ids: list[str], min_questions: int,
               ctx: StageContext) -> None:
    """The synthetic set through the real QA suites (GX); a failure stops the stage."""
    import pandas as pd

    from tasks.lib.config import ValidateConfig
    from tasks.lib.errors import ValidationFailed
    from tasks.lib.expectations import (
        ValidationReport,
        failure_message,
        qa_expectations,
        qa_frame,
        reference_expectations,
        reference_frame,
        run_suites,
    )

    qa = pd.DataFrame(rows)  # with `line`: a failure names lines of synthetic.jsonl
    frames = {"synthetic": qa_frame(qa), "synthetic_references": reference_frame(qa)}
    suites = {"synthetic": qa_expectations(ValidateConfig(min_questions=min_questions)),
              "synthetic_references": reference_expectations(corpus_ids)}
    failures, checked = run_suites(frames, suites, ctx.catalog.synthesize_dir, 5)
    if failures:
        path = str(ctx.catalog.synthetic_path)
        report = ValidationReport(False, {k: len(v) for k, v in frames.items()}, checked, failures)
        raise ValidationFailed(failure_message(report, dict.fromkeys(frames, path)))


# ---- effects: the stage ----------------------------------------------------------------------------


def synthesize_questions(section: SynthesizeConfig, prepare: PrepareConfig, pii: PiiConfig,
                         ctx: StageContext, min_questions: int
                         ) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Chunk, write and filter: (rows, removed per filter, stats for metrics)."""
    all_chunks = load_chunks(prepare, pii, ctx)
    chunks, too_short = chunk_plan(all_chunks, section, ctx.seed)
    pairs, stats = pairs_for(section, ctx, chunks)
    asked = pairs_asked(chunks, section)
    candidates = candidates_of(chunks, pairs)
    by_id = {c["chunk_id"]: c for c in all_chunks}
    kept, removed = filter_candidates(candidates, {k: v["text"] for k, v in by_id.items()},
                                      section, section.method, real_questions(ctx),
                                      example_questions())
    ranks = roundtrip_ranks(ctx, kept, all_chunks, section.device) if section.roundtrip_k else []
    kept, failed_roundtrip = roundtrip_survivors(kept, ranks, section.roundtrip_k)
    counts = {"too_short_chunk": too_short, "unparsable": max(0, asked - len(candidates)),
              **removed, "roundtrip": failed_roundtrip}
    check_enough(len(kept), min_questions, counts, len(candidates), str(ctx.catalog.corpus_path))
    rows = output_rows(kept, by_id, section.method)
    check_rows(rows, sorted({c["doc_id"] for c in all_chunks}), min_questions, ctx)
    return rows, counts, {**stats, "chunks": len(all_chunks), "chunks_questioned": len(chunks),
                          "candidates": len(candidates), "questions": len(rows)}


def synthesize_stage(section: SynthesizeConfig, prepare: PrepareConfig, pii: PiiConfig,
                     validate: Any, ctx: StageContext) -> dict[str, Any]:
    """Run synthesize in its MLflow stage run: the one entry point for the flow, CLI and DVC."""
    import mlflow
    import pandas as pd

    from tasks.lib.data import write_jsonl
    from tasks.lib.files import write_json
    from tasks.lib.tracking import log_dataset, stage_run

    cat, started = ctx.catalog, time.perf_counter()
    qa_exists = cat.has_qa
    resolved = resolve_mode(section.mode, qa_exists)
    with stage_run(ctx, "synthesize", section, prepare, pii):
        log.info("%s", mode_line(section.mode, resolved, cat.qa_label, qa_exists))
        check_mode(resolved, qa_exists, cat.qa_label)
        if resolved == "off":
            rows, counts, stats = [], {}, {"questions": 0}
        else:
            check_validated(cat)  # questions from data that failed validation: never
            rows, counts, stats = synthesize_questions(section, prepare, pii, ctx,
                                                       validate.min_questions)
        generator = section.generator_id or ctx.models.generator_id
        summary = summary_of(section.mode, resolved, section, generator, counts,
                             stats.get("chunks_questioned", 0), stats.get("candidates", 0),
                             len(rows))
        write_jsonl(rows, cat.synthetic_path)
        write_json(cat.synthesize_summary_path, summary)
        metrics = {**{k: v for k, v in stats.items() if isinstance(v, int | float)},
                   **{f"removed.{k}": v for k, v in summary["removed"].items()},
                   "seconds": round(time.perf_counter() - started, 2)}
        write_json(cat.stage_metrics_path("synthesize"), metrics)
        mlflow.log_metrics({k.replace(".", "_"): v for k, v in metrics.items()})
        mlflow.log_artifact(str(cat.synthesize_summary_path), "synthesize")
        if rows:  # the questions as an MLflow dataset, with a digest, like prepare's splits
            log_dataset(pd.DataFrame(rows), str(cat.synthetic_path), "synthetic_qa", "synthetic")
        log.info("synthesize (%s, %s): %d questions -> %s; removed %s", resolved, section.method,
                 len(rows), cat.synthetic_path, json.dumps(summary["removed"]))
    return {**summary, "synthetic_path": str(cat.synthetic_path)}


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="synthesize", **IO_RETRIES)
def synthesize(section: SynthesizeConfig, prepare: PrepareConfig, pii: PiiConfig, validate: Any,
               ctx: StageContext, validated: dict[str, Any]) -> dict[str, Any]:
    """Write, filter and save synthetic questions (`validated`: validate's result)."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "synthesize",
                        lambda: synthesize_stage(section, prepare, pii, validate, ctx))
