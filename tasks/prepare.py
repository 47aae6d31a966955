"""prepare: deterministic train/eval split, leakage check, token-based chunking of documents.

Reads the raw corpus and QA and reports/validation/summary.json (data must be the validated
version) and data/prepared/synthetic.jsonl (synthesize): by `synthesize.mode` synthetic questions
join the real train questions (add) or replace them (only; real eval questions stay); without a QA
file the eval questions are those synthesized from a seeded share of documents held out.
Writes data/prepared/{chunks,train_qa,eval_qa}.jsonl and reports/prepare/metrics.json.
Under `pii.policy: redact` personal data in titles, texts, questions and answers is replaced
first, so nothing after this (index, training, evaluation) sees it; metrics count it by field.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pandas as pd
from prefect import task

from tasks.lib.chunking import Chunk
from tasks.lib.config import PiiConfig, PrepareConfig, SynthesizeConfig
from tasks.lib.context import StageContext
from tasks.lib.errors import DataError, LeakageError
from tasks.lib.expectations import check_validated
from tasks.lib.pii import field_counts, pii_metrics, scan_frames
from tasks.lib.runtime import IO_RETRIES
from tasks.lib.text import normalize_question

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")

# ---- pure functions -------------------------------------------------------------------------


def hash_split(qid: str, seed: int, eval_fraction: float) -> str:
    """Assign a split from a seeded hash of the qid: stable across runs, machines and row order."""
    digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


def assign_splits(qa: pd.DataFrame, seed: int, eval_fraction: float) -> pd.DataFrame:
    """Return a copy of `qa` whose `split` is filled by hash where the data did not give one."""
    out = qa.copy()
    out["split"] = [
        split if isinstance(split, str) and split else hash_split(qid, seed, eval_fraction)
        for qid, split in zip(out["qid"], out["split"], strict=True)
    ]
    return out


def synthetic_frame(rows: list[dict[str, Any]], seed: int, eval_fraction: float,
                    hold_out: bool) -> pd.DataFrame:
    """Synthetic rows as a QA frame; with `hold_out` (no real questions to evaluate on), the
    questions of a seeded share of documents become the eval set, so no eval document's chunks
    produced a train question."""
    from tasks.lib.data import LINE_COLUMN, QA_FIELDS
    from tasks.lib.synthesis import eval_documents

    frame = pd.DataFrame(rows, columns=[LINE_COLUMN, *QA_FIELDS])
    if hold_out and len(frame):
        held = eval_documents((d for ids in frame["doc_ids"] for d in ids), seed, eval_fraction)
        frame["split"] = ["eval" if ids[0] in held else "train" for ids in frame["doc_ids"]]
    return frame


def merge_questions(real: pd.DataFrame | None, synthetic: pd.DataFrame, mode: str
                    ) -> pd.DataFrame:
    """The questions prepare splits, by synthesize mode (real rows already split): off: real
    only; add: real and synthetic train questions; only: synthetic train questions, real ones
    for eval only. Real eval questions are never replaced."""
    if mode == "off":
        return real
    if real is None:
        return synthetic.reset_index(drop=True)
    if mode == "only":
        real = real[real["split"] == "eval"]
    train = synthetic[synthetic["split"] == "train"]
    return pd.concat([real, train], ignore_index=True)


def find_leaks(qa: pd.DataFrame) -> pd.DataFrame:
    """Return the eval rows whose normalised question also appears in the train split."""
    norm = qa["question"].map(normalize_question)
    train_norm = set(norm[qa["split"] == "train"])
    return qa[(qa["split"] == "eval") & norm.isin(train_norm)]


def describe_leaks(leaks: pd.DataFrame, qa_path: str, limit: int = 5) -> str:
    """Format a leakage error message naming qids and source lines."""
    shown = ", ".join(f"{r.qid} (line {r.line})" for r in leaks.head(limit).itertuples())
    more = f" and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return (f"{qa_path}: {len(leaks)} eval question(s) also appear in train after normalisation "
            f"(lowercase, no punctuation): {shown}{more}. Rephrase or remove them, or move them "
            "to one split.")


def split_counts(qa: pd.DataFrame) -> dict[str, int]:
    """Count rows per split."""
    return {s: int((qa["split"] == s).sum()) for s in SPLITS}


def check_splits(counts: dict[str, int], qa_path: str) -> None:
    """Both splits must hold questions: no train means nothing to learn from, no eval nothing
    to measure (a named error, before anything is written)."""
    for split, why in (("train", "nothing to train on"), ("eval", "nothing to evaluate on")):
        if counts.get(split, 0) == 0:
            other = "eval" if split == "train" else "train"
            raise DataError(qa_path, None, "split", f"no question ends up in '{split}' ({why}): "
                            f"all {counts.get(other, 0)} are '{other}'. Give some questions "
                            f"\"split\": \"{split}\", or leave `split` out and let "
                            "prepare.eval_fraction decide")


def redacted_inputs(corpus: pd.DataFrame, qa: pd.DataFrame, pii: PiiConfig
                    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Under policy redact: copies of corpus and QA with personal data replaced, and the count
    by field and kind (pii_redacted.corpus.text.phone, ...); otherwise the inputs unchanged."""
    if pii.policy != "redact":
        return corpus, qa, {"pii_redacted.total": 0}
    scans = scan_frames({"corpus": corpus, "qa": qa}, pii)
    counts = pii_metrics(field_counts(scans), pii.kinds, prefix="pii_redacted")
    return scans["corpus"].frame, scans["qa"].frame, counts


def qa_records(qa: pd.DataFrame) -> list[dict[str, Any]]:
    """QA rows as records for JSON Lines (source line kept for traceability; choices where given)."""
    cols = ["qid", "question", "answer", "doc_ids", "split", "metadata", "line"]

    def plain(col: str, value: Any) -> Any:
        if col == "line":
            return int(value)
        return value if isinstance(value, list | dict | str) else None  # NaN/None -> null

    # choices only where a row has them: files of data without choices stay as they were
    return [{c: plain(c, r[c]) for c in cols}
            | ({"choices": r["choices"]} if isinstance(r.get("choices"), list) else {})
            for r in qa.to_dict("records")]


def prepare_stats(corpus: pd.DataFrame, raw_qa: pd.DataFrame, qa: pd.DataFrame,
                  chunks: list[Chunk]) -> dict[str, Any]:
    """Counts a reader checks: documents, chunks, long documents, questions per split (and, with
    synthetic questions, how many per split and whether the eval set is all synthetic)."""
    from tasks.lib.provenance import is_synthetic

    per_doc = pd.Series([c.doc_id for c in chunks]).value_counts()
    stats = {"documents": len(corpus), "chunks": len(chunks),
             "max_chunks_per_document": int(per_doc.max()),
             "long_documents": int((per_doc > 1).sum()),
             "questions": len(qa), **{f"{k}_questions": v for k, v in split_counts(qa).items()},
             "split_from_data": int(raw_qa["split"].notna().sum())}
    synthetic = [is_synthetic({"metadata": m}) for m in qa["metadata"]]
    if not any(synthetic):
        return stats
    per_split = {k: sum(s and split == k for s, split in zip(synthetic, qa["split"], strict=True))
                 for k in SPLITS}
    return {**stats, **{f"synthetic_{k}_questions": v for k, v in per_split.items()},
            "eval_synthetic": int(per_split["eval"] == stats["eval_questions"] > 0)}


# ---- effects: files, tokenizer ----------------------------------------------------------------


def load_questions(synth: SynthesizeConfig, section: PrepareConfig, ctx: StageContext
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw real QA, questions to prepare): the real QA file as read (empty without one) and,
    split, its questions merged with the synthetic ones by synthesize.mode."""
    from tasks.lib.data import load_qa, read_jsonl
    from tasks.lib.synthesis import resolve_mode

    cat = ctx.catalog
    real = real_raw = load_qa(str(cat.qa_path)) if cat.has_qa else None
    mode = resolve_mode(synth.mode, real is not None)
    if mode != "off" and not cat.synthetic_path.is_file():
        raise DataError(str(cat.synthetic_path), None, None, f"file not found (synthesize.mode "
                        f"{synth.mode} -> {mode}): run the synthesize stage first")
    rows = read_jsonl(cat.synthetic_path) if mode != "off" else []
    synthetic = synthetic_frame(rows, ctx.seed, synth.eval_fraction, hold_out=real is None)
    if real is not None:
        real = assign_splits(real, ctx.seed, section.eval_fraction)
    merged = merge_questions(real, synthetic, mode)
    if merged is None or not len(merged):
        raise DataError(cat.qa_label, None, None, "no QA file and no synthetic questions "
                        f"in {cat.synthetic_path} (synthesize.mode: {synth.mode}); bring a QA file "
                        "or run the synthesize stage with mode auto, add or only")
    return (real_raw if real_raw is not None else merged.iloc[:0]), merged


def prepare_data(section: PrepareConfig, pii: PiiConfig, synth: SynthesizeConfig,
                 ctx: StageContext) -> tuple[list[Chunk], pd.DataFrame, dict[str, Any]]:
    """Merge synthetic questions (synthesize.mode), redact (policy redact), split,
    leakage-check and chunk the validated raw data (no files written)."""
    from tasks.lib.chunking import check_chunk_fits, chunk_corpus
    from tasks.lib.data import load_corpus
    from tasks.lib.models import retriever_base_dir, retriever_max_seq_length
    from tasks.lib.resolve import load_tokenizer

    cat = ctx.catalog
    raw_qa, merged = load_questions(synth, section, ctx)
    corpus, qa, redacted = redacted_inputs(load_corpus(str(cat.corpus_path)), merged, pii)
    where = str(cat.qa_path if cat.has_qa else cat.synthetic_path)
    check_splits(split_counts(qa), where)  # before anything is written
    leaks = find_leaks(qa)
    if len(leaks):
        raise LeakageError(describe_leaks(leaks, where))
    model_dir = retriever_base_dir(ctx.models, cat.models_dir)
    check_chunk_fits(section, retriever_max_seq_length(model_dir), ctx.models.retriever_id)
    chunks = chunk_corpus(corpus, load_tokenizer(model_dir), section)
    return chunks, qa, {**prepare_stats(corpus, raw_qa, qa, chunks), **redacted}


def prepare_stage(section: PrepareConfig, pii: PiiConfig, synth: SynthesizeConfig,
                  ctx: StageContext) -> dict[str, Any]:
    """Run prepare in its MLflow stage run: the one entry point for the flow, CLI and DVC."""
    import mlflow

    from tasks.lib.data import write_jsonl
    from tasks.lib.files import write_json
    from tasks.lib.tracking import log_dataset, stage_run

    cat = ctx.catalog
    with stage_run(ctx, "prepare", section, pii, synth):
        check_validated(ctx.catalog)
        chunks, qa, stats = prepare_data(section, pii, synth, ctx)
        outputs = {"chunks": write_jsonl([c.__dict__ for c in chunks], cat.chunks_path)}
        for split in SPLITS:
            outputs[f"{split}_qa"] = write_jsonl(qa_records(qa[qa["split"] == split]),
                                                 getattr(cat, f"{split}_qa_path"))
        metrics_path = write_json(cat.stage_metrics_path("prepare"), stats)
        mlflow.log_metrics({k: v for k, v in stats.items() if isinstance(v, int | float)})
        mlflow.log_artifact(str(metrics_path), "prepare")
        log_dataset(pd.DataFrame([c.__dict__ for c in chunks]), str(outputs["chunks"]),
                    "chunks", "prepared")
        for split in SPLITS:
            log_dataset(qa[qa["split"] == split], str(outputs[f"{split}_qa"]), f"{split}_qa", split)
        log.info("prepare: %d documents -> %d chunks; %d train / %d eval questions -> %s "
                 "(%d personal-data items redacted, pii.policy: %s)",
                 stats["documents"], stats["chunks"], stats["train_questions"],
                 stats["eval_questions"], cat.prepared_dir, stats["pii_redacted.total"],
                 pii.policy)
    return {**stats, **{f"{k}_path": str(v) for k, v in outputs.items()}}


# ---- Prefect task ------------------------------------------------------------------------------


@task(name="prepare", **IO_RETRIES)
def prepare(section: PrepareConfig, pii: PiiConfig, synth: SynthesizeConfig, ctx: StageContext,
            synthesized: dict[str, Any]) -> dict[str, Any]:
    """Merge synthetic questions, split, leakage-check and chunk the validated data
    (`synthesized`: synthesize's result, which ran after validate)."""
    from tasks.lib.incremental import run_or_reuse

    return run_or_reuse(ctx, "prepare", lambda: prepare_stage(section, pii, synth, ctx))
