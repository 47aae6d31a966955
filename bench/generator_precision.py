"""Generation in bf16 and mixed precision against fp32, in one run: tokens/s and token F1 on the
same eval prompts (mixed: bf16 matrix products in the linear layers, fp32 activations, the
output head's top candidates rescored in fp32).

For up to --questions eval questions of a prepared dir, two prompts each (as the base and rag
setups build them: the question alone, and with its top generate.context_k chunks by exact
search with the base retriever), answered greedily at each precision in generate's batches
(precisions interleaved over --repeats; best tokens/s counts). Quality: token F1 against the
reference per prompt, each precision − fp32 paired on the same prompts (BCa), and the share of
identical answers. Targets (issue 15): >= 1.5x fp32 tokens/s with the token F1 difference's interval
covering 0.

usage: python bench/generator_precision.py --prepared data/prepared [--adapter models/generator]
         [--config configs/cpu.yaml] [--questions 48] [--repeats 2] [--precisions bf16 mixed]
         [--out F.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

import numpy as np  # noqa: E402

from bench.precision_args import precision_parser  # noqa: E402
from tasks.lib.answer_metrics import token_f1  # noqa: E402
from tasks.lib.config import load_config, parse_override  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.generator import (  # noqa: E402
    build_prompt,
    generate_answers,
    generation_throughput,
    generator_base_dir,
    load_generator,
    warm_up_generation,
)
from tasks.lib.metrics import paired_diff_ci  # noqa: E402
from tasks.lib.models import load_retriever, retriever_base_dir  # noqa: E402
from tasks.lib.tables import encode  # noqa: E402
from tasks.lib.text import passage_text  # noqa: E402

TARGET = 1.5


def prompts_for(cfg, prepared: Path, n: int) -> tuple[list[str], list[str], list[str]]:
    """(prompts, references, setup per prompt): each question alone and with its top chunks."""
    chunks = read_jsonl(prepared / "chunks.jsonl")
    questions = [q for q in read_jsonl(prepared / "eval_qa.jsonl") if q.get("answer")][:n]
    retriever = load_retriever(retriever_base_dir(cfg.models, cfg.paths.models_dir), device="cpu")
    chunk_vecs = encode(retriever, [passage_text(c) for c in chunks], cfg.index.batch_size)
    query_vecs = encode(retriever, [q["question"] for q in questions], cfg.index.batch_size)
    gen_base = generator_base_dir(cfg.models, cfg.paths.models_dir)
    _, tok = load_generator(gen_base, None, "cpu")
    prompts, refs, setups = [], [], []
    for q, vec in zip(questions, query_vecs, strict=True):
        top = np.argsort(-(chunk_vecs @ vec))[: cfg.generate.context_k]
        for setup, context in (("base", None), ("rag", [chunks[i]["text"] for i in top])):
            prompts.append(build_prompt(tok, q["question"], context, cfg.generate.max_context_tokens,
                                        q.get("choices")))
            refs.append(q["answer"])
            setups.append(setup)
    return prompts, refs, setups


def main() -> None:
    parser = precision_parser(__doc__, "generator", 2)
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--precisions", nargs="+", default=["bf16", "mixed"],
                        choices=["bf16", "mixed"], help="each measured against fp32")
    args = parser.parse_args()
    cfg = load_config(args.config, dict(parse_override(s) for s in args.sets))
    prompts, refs, setups = prompts_for(cfg, Path(args.prepared), args.questions)
    base = generator_base_dir(cfg.models, cfg.paths.models_dir)
    adapter = Path(args.adapter) if args.adapter else None
    models = {p: load_generator(base, adapter, "cpu", precision=p)
              for p in ("fp32", *args.precisions)}
    for model, tok in models.values():
        warm_up_generation(model, tok)
    speed: dict[str, list[float]] = {p: [] for p in models}
    answers: dict[str, list[str]] = {}
    for _ in range(args.repeats):  # precisions interleaved: a slow spell hits each alike
        for p, (model, tok) in models.items():
            out = generate_answers(model, tok, prompts, cfg.generate.max_new_tokens,
                                   cfg.generate.batch_size)
            speed[p].append(generation_throughput(out)["tokens_per_second"])
            answers[p] = [o["text"] for o in out]
    f1 = {p: [token_f1(a, r) for a, r in zip(answers[p], refs, strict=True)] for p in models}
    report = {"prompts": len(prompts), "repeats": args.repeats, "adapter": args.adapter,
              "tokens_per_second": speed, "precisions": {}}
    print(f"{len(prompts)} prompts ({len(prompts) // 2} questions x base/rag), batch "
          f"{cfg.generate.batch_size}, {cfg.generate.max_new_tokens} new tokens, best of "
          f"{args.repeats}{', adapter ' + args.adapter if args.adapter else ''}")
    print(f"tokens/s fp32 {max(speed['fp32']):.1f}")
    for p in args.precisions:
        report["precisions"][p] = compare(p, speed, answers, f1, setups)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


def compare(p: str, speed: dict, answers: dict, f1: dict, setups: list[str]) -> dict:
    """One precision against fp32: speed-up, token F1 paired per setup, identical answers."""
    ratio = max(speed[p]) / max(speed["fp32"])
    row: dict = {"speedup": ratio, "setups": {}}
    print(f"{p}: tokens/s {max(speed[p]):.1f}  x{ratio:.2f}")
    covered = True
    for setup in ("base", "rag", "all"):
        idx = [i for i, s in enumerate(setups) if setup in ("all", s)]
        diff = paired_diff_ci([f1[p][i] for i in idx], [f1["fp32"][i] for i in idx], 1000, 13)
        same = sum(answers[p][i] == answers["fp32"][i] for i in idx) / len(idx)
        covered &= setup != "all" or diff["lo"] <= 0 <= diff["hi"]
        row["setups"][setup] = {"fp32_token_f1": float(np.mean([f1["fp32"][i] for i in idx])),
                                "token_f1": float(np.mean([f1[p][i] for i in idx])),
                                "delta": diff, "identical_share": same}
        print(f"  {setup:4s} token F1 fp32 {row['setups'][setup]['fp32_token_f1']:.3f} {p} "
              f"{row['setups'][setup]['token_f1']:.3f}  delta {diff['mean']:+.4f} "
              f"[{diff['lo']:+.4f}, {diff['hi']:+.4f}]  identical answers {same:.0%}")
    row["meets_target"] = ratio >= TARGET and covered
    print(f"  {p} vs fp32: x{ratio:.2f} (target {TARGET}), token F1 interval covers 0: {covered} "
          f"-> {'PASS' if row['meets_target'] else 'FAIL'}")
    return row


if __name__ == "__main__":
    main()
