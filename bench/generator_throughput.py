"""Generator LoRA training tokens/s vs a bare transformers + peft loop, and batched vs
one-at-a-time generation on eval prompts, measured in one run.

usage: python bench/generator_throughput.py [--config configs/cpu.yaml] [--steps 4] [--prompts 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.generator import (  # noqa: E402
    build_prompt,
    generate_answers,
    generation_throughput,
    generator_base_dir,
    load_generator,
    warm_up_generation,
)
from tasks.lib.sft import add_lora, batch_order, build_sft_examples, collate, train_lora_generator  # noqa: E402


def bare_loop(model, examples, cfg, seed: int, steps: int, pad_id: int) -> float:
    """Tokens/s of a plain loop: peft model, AdamW, forward/backward/step, nothing else."""
    import torch

    torch.manual_seed(seed)
    model = add_lora(model, cfg)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=cfg.learning_rate)
    tokens, started = 0, time.perf_counter()
    for indices in batch_order(len(examples), cfg.batch_size, steps, seed):
        batch = {k: torch.tensor(v) for k, v in collate([examples[i] for i in indices],
                                                          pad_id).items()}
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args()
    cfg = load_config(args.config)
    tcfg = cfg.train_generator.model_copy(update={"max_steps": args.steps})
    base_dir = generator_base_dir(cfg.models, cfg.paths.models_dir)
    rows = read_jsonl(Catalog(cfg.paths).train_qa_path)[: args.steps * tcfg.batch_size]
    model, tok = load_generator(base_dir, None, "cpu")
    examples, _ = build_sft_examples(tok, rows, [None] * len(rows), tcfg.max_seq_length)
    bare = bare_loop(model, examples, tcfg, cfg.project.seed, args.steps, tok.pad_token_id)
    model, tok = load_generator(base_dir, None, "cpu")
    started = time.perf_counter()
    _, history = train_lora_generator(model, tok, examples, tcfg, cfg.project.seed, "cpu")
    ours = sum(h["tokens"] for h in history) / (time.perf_counter() - started)
    print(f"training: bare loop {bare:.1f} tokens/s, train_generator {ours:.1f} tokens/s, "
          f"ratio {ours / bare:.3f} (target >= 0.95) {'PASS' if ours / bare >= 0.95 else 'FAIL'}")

    model, tok = load_generator(base_dir, None, "cpu")
    warm_up_generation(model, tok)
    questions = read_jsonl(Catalog(cfg.paths).eval_qa_path)[: args.prompts]
    prompts = [build_prompt(tok, q["question"]) for q in questions]
    g = cfg.generate
    batched = generation_throughput(generate_answers(model, tok, prompts, g.max_new_tokens,
                                                     g.batch_size))
    single = generation_throughput(generate_answers(model, tok, prompts, g.max_new_tokens, 1))
    ratio = batched["tokens_per_second"] / single["tokens_per_second"]
    print(f"generation: batch {g.batch_size} {batched['tokens_per_second']:.1f} tokens/s, "
          f"one-by-one {single['tokens_per_second']:.1f} tokens/s, ratio {ratio:.2f} "
          f"(target >= 3) {'PASS' if ratio >= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()
