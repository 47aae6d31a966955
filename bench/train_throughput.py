"""Retriever LoRA training throughput: the train_retriever trainer vs a plain PyTorch loop.

Same model, LoRA config, MultipleNegativesRankingLoss, batch size, sequence length and pairs.
usage: python bench/train_throughput.py [--config configs/cpu.yaml] [--steps 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.env import set_offline_env  # noqa: E402

set_offline_env()

from tasks.lib.catalog import Catalog  # noqa: E402
from tasks.lib.config import load_config  # noqa: E402
from tasks.lib.data import read_jsonl  # noqa: E402
from tasks.lib.models import load_retriever, retriever_base_dir  # noqa: E402
from tasks.train_retriever import train_lora, training_pairs  # noqa: E402


def plain_loop(cfg, pairs, steps: int) -> float:
    """Seconds for `steps` optimizer steps of a hand-written loop."""
    import torch
    from peft import LoraConfig, TaskType
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    t = cfg.train_retriever
    torch.manual_seed(cfg.project.seed)
    model = load_retriever(retriever_base_dir(cfg.models, cfg.paths.models_dir), device="cpu",
                           max_seq_length=t.max_seq_length)
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=t.lora_r,
                                 lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                                 target_modules=list(t.target_modules)))
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=t.learning_rate)
    started = time.perf_counter()
    for step in range(steps):
        batch = pairs[step * t.batch_size:(step + 1) * t.batch_size]
        features = [model.tokenize([p["anchor"] for p in batch]),
                    model.tokenize([p["positive"] for p in batch])]
        loss = loss_fn(features, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - started


def pipeline_trainer(cfg, pairs, steps: int) -> float:
    """Seconds for `steps` optimizer steps of train_retriever's trainer (set-up included)."""
    t = cfg.train_retriever.model_copy(update={"max_steps": steps})
    model = load_retriever(retriever_base_dir(cfg.models, cfg.paths.models_dir), device="cpu",
                           max_seq_length=t.max_seq_length)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        train_lora(model, pairs, t, cfg.project.seed, Path(tmp), "cpu")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    cfg = load_config(args.config)
    cat = Catalog(cfg.paths)
    pairs = training_pairs(read_jsonl(cat.train_qa_path), read_jsonl(cat.chunks_path),
                           cat.qa_label)
    need = args.steps * cfg.train_retriever.batch_size
    pairs = (pairs * (need // len(pairs) + 1))[:need]
    plain = plain_loop(cfg, pairs, args.steps)
    ours = pipeline_trainer(cfg, pairs, args.steps)
    ratio = plain / ours
    print(f"{args.steps} steps, batch {cfg.train_retriever.batch_size}, "
          f"max_seq_length {cfg.train_retriever.max_seq_length}")
    print(f"plain loop : {plain:7.2f} s  ({args.steps / plain:.3f} steps/s)")
    print(f"trainer    : {ours:7.2f} s  ({args.steps / ours:.3f} steps/s)")
    print(f"ratio      : {ratio:.3f}  (target >= 0.95) {'PASS' if ratio >= 0.95 else 'FAIL'}")


if __name__ == "__main__":
    main()
