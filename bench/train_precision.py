"""LoRA training with bf16 autocast against fp32, in one run: speed and the trained adapter's
quality, for the generator and the retriever.

Each model is trained from the same base, seed and examples once per variant, as the pipeline's
stages train it (train_lora_generator, train_lora): the retriever in fp32 and bf16, the
generator in --variants (default fp32, bf16, bf16+split: length_split, each batch cut into
micro-batches of similar length; also +grouped: group_by_length, batches of similar length).
Speed: tokens/s (generator, real tokens: padding saved counts) or pairs/s (retriever) over the
optimizer steps.
Quality, paired on the same eval questions, each adapter merged and run in fp32 so that only the
training differs: the generator's token F1 on its eval prompts (each question alone and with its
top generate.context_k chunks, as base/rag build them), the retriever's nDCG@10 by exact search
(document level). Targets (issue 15): >= 1.5x fp32 speed with the quality difference's interval
covering 0 (token F1) or |mean delta nDCG@10| <= 0.005.

Training contexts for the generator come from the base retriever's exact top train_generator.
context_k chunks (the stage uses the indexed candidate's; the same for both precisions here).

usage: python bench/train_precision.py --prepared data/prepared [--models generator retriever]
         [--config configs/cpu.yaml] [--set train_generator.max_examples=96] [--questions 48]
         [--variants fp32 bf16 bf16+split] [--out F.json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

import numpy as np  # noqa: E402

from bench.generator_precision import prompts_for  # noqa: E402
from bench.precision_args import precision_parser  # noqa: E402
from bench.retriever_precision import TOLERANCE, doc_scores  # noqa: E402
from tasks.lib.answer_metrics import token_f1  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.generator import (  # noqa: E402
    generate_answers,
    generator_base_dir,
    load_generator,
    warm_up_generation,
)
from tasks.lib.metrics import paired_diff_ci  # noqa: E402
from tasks.lib.models import load_retriever, retriever_base_dir  # noqa: E402
from tasks.lib.tables import encode  # noqa: E402
from tasks.lib.text import passage_text  # noqa: E402

TARGET = 1.5
PRECISIONS = ("fp32", "bf16")


def generator_examples(cfg, prepared: Path) -> list[dict]:
    """train_generator's examples: its seeded sample of train rows, context for its share."""
    from tasks.lib.sft import build_sft_examples, context_mask
    from tasks.train_generator import sample_rows

    t = cfg.train_generator
    rows = sample_rows(read_jsonl(prepared / "train_qa.jsonl"), t.max_examples, cfg.project.seed)
    chunks = read_jsonl(prepared / "chunks.jsonl")
    retriever = load_retriever(retriever_base_dir(cfg.models, cfg.paths.models_dir), device="cpu",
                               precision=cfg.index.precision)
    chunk_vecs = encode(retriever, [passage_text(c) for c in chunks], cfg.index.batch_size)
    mask = context_mask(len(rows), t.context_share, cfg.project.seed)
    query_vecs = encode(retriever, [r["question"] for r in rows], cfg.index.batch_size)
    contexts = [[chunks[i]["text"] for i in np.argsort(-(chunk_vecs @ v))[: t.context_k]]
                if m else None for v, m in zip(query_vecs, mask, strict=True)]
    _, tok = load_generator(generator_base_dir(cfg.models, cfg.paths.models_dir), None, "cpu")
    examples, _ = build_sft_examples(tok, rows, contexts, t.max_seq_length,
                                     even_cut=t.context_source == "raft")
    return examples


def variant_update(name: str) -> dict:
    """train_generator settings of a variant: a precision, `+grouped` for group_by_length,
    `+split` for length_split (micro-batches of similar length, one step: the same update)."""
    precision, *extras = name.split("+")
    if precision not in PRECISIONS or not set(extras) <= {"grouped", "split"}:
        raise SystemExit(f"--variants: {name!r} is not fp32|bf16 with optional +grouped, +split")
    return {"precision": precision, "group_by_length": "grouped" in extras,
            "length_split": "split" in extras}


def bench_generator(cfg, prepared: Path, questions: int, variants: list[str]) -> dict:
    """Each variant's training tokens/s and loss, and its merged adapter's token F1 minus the
    first variant's (the baseline), paired on the same prompts."""
    from tasks.lib.sft import train_lora_generator

    examples = generator_examples(cfg, prepared)
    prompts, refs, setups = prompts_for(cfg, prepared, questions)
    base = generator_base_dir(cfg.models, cfg.paths.models_dir)
    out: dict = {"examples": len(examples), "prompts": len(prompts), "variants": {}}
    answers: dict[str, list[str]] = {}
    for name in variants:
        model, tok = load_generator(base, None, "cpu")
        section = cfg.train_generator.model_copy(update=variant_update(name))
        peft_model, history = train_lora_generator(model, tok, examples, section,
                                                   cfg.project.seed, "cpu")
        seconds = sum(h["seconds"] for h in history)
        tokens, slots = sum(h["tokens"] for h in history), sum(h["slots"] for h in history)
        out["variants"][name] = {"steps": len(history), "seconds": round(seconds, 1),
                                 "tokens_per_second": tokens / seconds,
                                 "padding_share": 1 - tokens / slots,
                                 "final_loss": history[-1]["loss"]}
        merged = peft_model.merge_and_unload().eval()
        warm_up_generation(merged, tok)
        answers[name] = [a["text"] for a in generate_answers(
            merged, tok, prompts, cfg.generate.max_new_tokens, cfg.generate.batch_size)]
        del model, peft_model, merged
    f1 = {v: [token_f1(a, r) for a, r in zip(answers[v], refs, strict=True)] for v in variants}
    ref = variants[0]
    print(f"generator: {len(examples)} examples, {out['variants'][ref]['steps']} steps; "
          f"{len(prompts)} eval prompts ({len(prompts) // 2} questions x base/rag), answers "
          f"generated in fp32; each variant against {ref}")
    for name in variants:
        row = out["variants"][name]
        row["speedup"] = row["tokens_per_second"] / out["variants"][ref]["tokens_per_second"]
        print(f"  {name:13s} {row['seconds']:6.1f} s  {row['tokens_per_second']:6.1f} tokens/s "
              f"x{row['speedup']:.2f}  padding {row['padding_share']:.0%}  final loss "
              f"{row['final_loss']:.4f}")
        if name == ref:
            continue
        row["setups"] = {}
        for setup in ("base", "rag", "all"):
            idx = [i for i, s in enumerate(setups) if setup in ("all", s)]
            diff = paired_diff_ci([f1[name][i] for i in idx], [f1[ref][i] for i in idx], 1000, 13)
            same = sum(answers[name][i] == answers[ref][i] for i in idx) / len(idx)
            row["setups"][setup] = {"token_f1": float(np.mean([f1[name][i] for i in idx])),
                                    "baseline_token_f1": float(np.mean([f1[ref][i] for i in idx])),
                                    "delta": diff, "identical_share": same}
            print(f"    {setup:4s} token F1 {row['setups'][setup]['baseline_token_f1']:.3f} -> "
                  f"{row['setups'][setup]['token_f1']:.3f}  delta {diff['mean']:+.4f} "
                  f"[{diff['lo']:+.4f}, {diff['hi']:+.4f}]  identical answers {same:.0%}")
        delta = row["setups"]["all"]["delta"]
        row["meets_target"] = row["speedup"] >= TARGET and delta["lo"] <= 0 <= delta["hi"]
        print(f"    x{row['speedup']:.2f} (target {TARGET}), token F1 interval covers 0: "
              f"{delta['lo'] <= 0 <= delta['hi']} -> {'PASS' if row['meets_target'] else 'FAIL'}")
    return out


def bench_retriever(cfg, prepared: Path) -> dict:
    """Both trainings' pairs/s and loss, and bf16 − fp32 nDCG@10 of the trained adapters."""
    from tasks.train_retriever import pairs_per_second, train_lora, training_pairs

    t = cfg.train_retriever
    chunks = read_jsonl(prepared / "chunks.jsonl")
    pairs = training_pairs(read_jsonl(prepared / "train_qa.jsonl"), chunks, "train_qa.jsonl")
    questions = [q for q in read_jsonl(prepared / "eval_qa.jsonl") if q.get("doc_ids")]
    base = retriever_base_dir(cfg.models, cfg.paths.models_dir)
    out: dict = {"pairs": len(pairs), "questions": len(questions), "precisions": {}}
    per_q = {}
    for p in PRECISIONS:
        model = load_retriever(base, device="cpu", max_seq_length=t.max_seq_length)
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            history = train_lora(model, pairs, t.model_copy(update={"precision": p}),
                                 cfg.project.seed, Path(work), "cpu")
            seconds = time.perf_counter() - started
        steps = len(history)
        out["precisions"][p] = {"steps": steps, "seconds": round(seconds, 1),
                                "pairs_per_second": pairs_per_second(len(pairs), steps, t, seconds),
                                "final_loss": history[-1]["loss"]}
        model.eval()
        chunk_vecs = encode(model, [passage_text(c) for c in chunks], cfg.index.batch_size)
        query_vecs = encode(model, [q["question"] for q in questions], cfg.index.batch_size)
        per_q[p] = [s["ndcg@10"] for s in doc_scores(query_vecs, chunk_vecs,
                                                      [c["doc_id"] for c in chunks], questions)]
        out["precisions"][p]["ndcg@10"] = float(np.mean(per_q[p]))
        del model
    fp32, bf16 = out["precisions"]["fp32"], out["precisions"]["bf16"]
    out["speedup"] = bf16["pairs_per_second"] / fp32["pairs_per_second"]
    diff = paired_diff_ci(per_q["bf16"], per_q["fp32"], 1000, 13)
    out["ndcg_delta"] = diff
    out["meets_target"] = out["speedup"] >= TARGET and abs(diff["mean"]) <= TOLERANCE
    print(f"retriever: {len(pairs)} pairs, {fp32['steps']} steps; {len(questions)} eval questions, "
          f"vectors in fp32")
    print(f"  pairs/s fp32 {fp32['pairs_per_second']:.1f} bf16 {bf16['pairs_per_second']:.1f}  "
          f"x{out['speedup']:.2f}; nDCG@10 fp32 {fp32['ndcg@10']:.4f} bf16 {bf16['ndcg@10']:.4f} "
          f"delta {diff['mean']:+.4f} [{diff['lo']:+.4f}, {diff['hi']:+.4f}] -> "
          f"{'PASS' if out['meets_target'] else 'FAIL'} (|delta| <= {TOLERANCE})")
    return out


def main() -> None:
    parser = precision_parser(__doc__, None, None)
    parser.add_argument("--models", nargs="+", default=["generator", "retriever"],
                        choices=["generator", "retriever"])
    parser.add_argument("--questions", type=int, default=48,
                        help="eval questions the generator adapters answer")
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16", "bf16+split"],
                        help="generator trainings: fp32|bf16[+split][+grouped] (length_split, "
                             "group_by_length); the first is the baseline")
    args = parser.parse_args()
    cfg = load_config(args.config, dict(parse_override(s) for s in args.sets))
    prepared = Path(args.prepared)
    report = {}
    if "retriever" in args.models:
        report["retriever"] = bench_retriever(cfg, prepared)
    if "generator" in args.models:
        report["generator"] = bench_generator(cfg, prepared, args.questions, args.variants)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
