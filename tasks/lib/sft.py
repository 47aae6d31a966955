"""Supervised fine-tuning of the generator with LoRA: examples, batches, a plain PyTorch loop.

Usage:
    mask = context_mask(len(rows), cfg.context_share, seed)
    contexts = [retrieve(r["question"]) if m else None for r, m in zip(rows, mask)]
    examples, counts = build_sft_examples(tokenizer, rows, contexts, cfg.max_seq_length)
    peft_model, history = train_lora_generator(model, tokenizer, examples, cfg, seed, "cpu")
    save_adapter(peft_model, out_dir, base_id, base_dir, extra={...})   # tasks.lib.generator

Loss is on answer tokens + EOS only (labels are -100 on the prompt and on padding).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from tasks.lib.config import TrainGeneratorConfig
from tasks.lib.failpoints import failpoint
from tasks.lib.generator import build_messages, cut_chunks, render_prompt

IGNORE = -100  # label value the loss skips (torch cross-entropy's ignore_index)

# ---- pure: examples ----------------------------------------------------------------------------


class SequenceTooLong(ValueError):
    """The prompt alone, without context, leaves no room for a single answer token."""


def context_mask(n: int, share: float, seed: int) -> list[bool]:
    """Which of `n` examples get retrieved context: a seeded choice of round(share * n) of them."""
    chosen = set(random.Random(seed).sample(range(n), round(share * n)))
    return [i in chosen for i in range(n)]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _prompt_ids(tokenizer: Any, question: str, chunks: list[str] | None,
                choices: list[str] | None = None) -> list[int]:
    return _encode(tokenizer, render_prompt(tokenizer, build_messages(question, chunks, choices)))


def cut_chunks_evenly(tokenizer: Any, chunks: list[str], keep_tokens: int) -> list[str]:
    """The head of every chunk, `keep_tokens` shared out evenly (a short chunk's unused share
    goes to the others): no chunk is lost for its position (RAFT puts the oracle anywhere)."""
    lengths = [len(_encode(tokenizer, c)) for c in chunks]
    shares = [0] * len(chunks)
    left, open_ = keep_tokens, sorted(range(len(chunks)), key=lambda i: lengths[i])
    while open_:  # water-filling: the shortest chunks take what they need first
        i = open_.pop(0)
        shares[i] = min(lengths[i], left // (len(open_) + 1))
        left -= shares[i]
    return [c if shares[i] >= lengths[i] else
            tokenizer.decode(_encode(tokenizer, c)[:shares[i]])
            for i, c in enumerate(chunks) if shares[i] > 0]


def fit_prompt(tokenizer: Any, question: str, chunks: list[str] | None,
               room: int, choices: list[str] | None = None,
               even: bool = False) -> tuple[list[int], bool]:
    """Prompt ids within `room` tokens, cutting context first (later chunks first, or every
    chunk's tail when `even`); (ids, context was cut)."""
    ids = _prompt_ids(tokenizer, question, chunks, choices)
    if not chunks or len(ids) <= room:
        return ids, False
    cut = cut_chunks_evenly if even else cut_chunks
    keep = sum(len(_encode(tokenizer, c)) for c in chunks) - (len(ids) - room)
    for _ in range(4):  # re-tokenising a cut text can shift the count by a token or two
        if keep <= 0:
            break
        ids = _prompt_ids(tokenizer, question, cut(tokenizer, chunks, keep), choices)
        if len(ids) <= room:
            return ids, True
        keep -= len(ids) - room
    return _prompt_ids(tokenizer, question, None, choices), True


def build_sft_example(tokenizer: Any, question: str, answer: str, context_chunks: list[str] | None,
                      max_seq_length: int, choices: list[str] | None = None,
                      even_cut: bool = False) -> dict[str, Any]:
    """input_ids and labels (-100 on the prompt) for one (question [+ context]) -> answer pair;
    a short-answer question gets evaluate's prompt with its choices, so the LoRA learns the format."""
    answer_ids = _encode(tokenizer, answer) + [tokenizer.eos_token_id]
    prompt_ids, cut_context = fit_prompt(tokenizer, question, context_chunks,
                                         max_seq_length - len(answer_ids), choices, even_cut)
    room = max_seq_length - len(prompt_ids)
    if room < 1:
        raise SequenceTooLong(f"question '{question[:60]}': the prompt alone is {len(prompt_ids)} "
                              f"tokens; raise train_generator.max_seq_length ({max_seq_length})")
    cut_answer = len(answer_ids) > room  # last resort, and no EOS: the answer did not end there
    answer_ids = answer_ids[:room]
    return {"input_ids": prompt_ids + answer_ids,
            "labels": [IGNORE] * len(prompt_ids) + answer_ids,
            "truncated_context": cut_context, "truncated_answer": cut_answer}


def build_sft_examples(tokenizer: Any, rows: list[dict[str, Any]], contexts: list[list[str] | None],
                       max_seq_length: int, even_cut: bool = False
                       ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Examples for (question, answer) rows with their contexts, and counts of what was cut
    (`even_cut`: every context chunk keeps its head, as RAFT contexts need)."""
    examples, counts = [], {"examples": 0, "with_context": 0, "truncated_context": 0,
                            "truncated_answer": 0, "skipped_too_long": 0}
    for row, chunks in zip(rows, contexts, strict=True):
        try:
            example = build_sft_example(tokenizer, row["question"], row["answer"], chunks,
                                        max_seq_length, row.get("choices"), even_cut)
        except SequenceTooLong:
            counts["skipped_too_long"] += 1
            continue
        examples.append(example)
        counts["examples"] += 1
        counts["with_context"] += bool(chunks)
        counts["truncated_context"] += example["truncated_context"]
        counts["truncated_answer"] += example["truncated_answer"]
    return examples, counts


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, list[list[int]]]:
    """Right-pad a batch to its longest example (dynamic padding); labels pad with -100."""
    width = max(len(e["input_ids"]) for e in examples)
    pad = [width - len(e["input_ids"]) for e in examples]
    return {"input_ids": [e["input_ids"] + [pad_id] * p for e, p in zip(examples, pad, strict=True)],
            "attention_mask": [[1] * len(e["input_ids"]) + [0] * p
                               for e, p in zip(examples, pad, strict=True)],
            "labels": [e["labels"] + [IGNORE] * p for e, p in zip(examples, pad, strict=True)]}


def plan_steps(n_examples: int, cfg: TrainGeneratorConfig) -> int:
    """Optimizer steps: epochs x batches per epoch, capped by max_steps when set."""
    steps = math.ceil(cfg.epochs * math.ceil(n_examples / cfg.batch_size))
    return min(steps, cfg.max_steps) if cfg.max_steps > 0 else steps


GROUP_SPAN = 50  # batches per length-sorted group (transformers' LengthGroupedSampler: 50 too)


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int,
                lengths: list[int] | None = None) -> list[list[int]]:
    """Example indices of each step: a fresh seeded shuffle per epoch, last batch may be short.

    With `lengths` (tokens per example), examples of similar length share a batch, so a batch
    pads less: each epoch's shuffle is cut into groups of GROUP_SPAN batches, each group sorted
    by length and cut into batches, and the epoch's batches shuffled (a random order of steps,
    not shortest-first)."""
    # a stream of its own: Random(seed) would replay context_mask's draws, so the first half of
    # the steps would hold exactly the examples with context and the second half the others
    rng, batches = random.Random(f"batch_order:{seed}"), []
    while n_examples and len(batches) < steps:
        order = rng.sample(range(n_examples), n_examples)
        if lengths is None:
            batches += [order[i:i + batch_size] for i in range(0, n_examples, batch_size)]
            continue
        epoch, span = [], GROUP_SPAN * batch_size
        for start in range(0, n_examples, span):
            group = sorted(order[start:start + span], key=lambda i: lengths[i])
            epoch += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
        rng.shuffle(epoch)
        batches += epoch
    return batches[:steps]


SPLIT_MAX_PARTS = 4  # micro-batches per step at most


def split_by_length(lengths: list[int], overhead: int, max_parts: int = SPLIT_MAX_PARTS
                    ) -> list[list[int]]:
    """One batch's positions cut into micro-batches of similar length: the runs of the length
    order that minimise padded slots (size x longest) plus `overhead` slots per micro-batch.

    Each micro-batch is padded to its own longest example; accumulated with the same loss
    normaliser they give the whole batch's gradient, so the split saves padding, not quality."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n = len(order)
    if n == 0:
        return []
    sizes = [lengths[i] for i in order]
    inf = float("inf")
    # cost[p][j]: best cost of the first j examples in p micro-batches; cut[p][j]: the last run's start
    cost = [[inf] * (n + 1) for _ in range(max_parts + 1)]
    cut = [[0] * (n + 1) for _ in range(max_parts + 1)]
    cost[0][0] = 0.0
    for parts in range(1, max_parts + 1):
        for end in range(1, n + 1):
            for start in range(end):
                value = cost[parts - 1][start] + sizes[end - 1] * (end - start) + overhead
                if value < cost[parts][end]:
                    cost[parts][end], cut[parts][end] = value, start
    parts = min(range(1, max_parts + 1), key=lambda p: (cost[p][n], p))
    runs, end = [], n
    while parts:
        start = cut[parts][end]
        runs.append(order[start:end])
        end, parts = start, parts - 1
    return runs[::-1]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# ---- effects: training -------------------------------------------------------------------------


def add_lora(model: Any, cfg: TrainGeneratorConfig):
    """Wrap a causal LM with a fresh LoRA adapter (peft); only the adapter is trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = "all-linear" if tuple(cfg.target_modules) == ("all-linear",) else list(cfg.target_modules)
    return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r,
                                            lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=targets))


def label_tokens(batch: dict[str, Any]) -> int:
    """Tokens a causal-LM loss is taken on: labels other than -100 after the one-token shift."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def answer_loss(model: Any, batch: dict[str, Any], total: int) -> Any:
    """The causal-LM loss summed over the answer tokens and divided by `total`, with the output
    head applied only where a label is taken (answer tokens are a small share of each example:
    the prompt's logits, over the whole vocabulary, would be computed and thrown away).

    The same value as the model's own loss with num_items_in_batch=total; a model without a
    separate decoder and output head gets its own forward."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if decoder is None or head is None:
        return model(**batch, num_items_in_batch=total).loss
    hidden = decoder(input_ids=batch["input_ids"],
                     attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    taken = targets != IGNORE
    logits = head(hidden[:, :-1][taken]).float()  # position t predicts token t + 1
    return torch.nn.functional.cross_entropy(logits, targets[taken], reduction="sum") / total


def train_step(model: Any, micro_batches: list[dict[str, Any]], optimizer: Any,
               scheduler: Any | None = None, max_grad_norm: float = 1.0,
               autocast_dtype: Any = None) -> dict[str, float]:
    """One optimizer step over the micro-batches of one batch (collated tensors): each loss is
    summed over its tokens and divided by the whole batch's, so the accumulated gradient is the
    batch's mean-token loss gradient however it was split; loss, tokens, slots, seconds."""
    import torch

    started = time.perf_counter()
    total = max(1, sum(label_tokens(b) for b in micro_batches))
    loss_sum = 0.0
    for batch in micro_batches:
        with torch.autocast(batch["input_ids"].device.type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            loss = answer_loss(model, batch, total)
        loss.backward()
        loss_sum += loss.item()
    trainable = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss_sum, "micro_batches": len(micro_batches),
            "tokens": sum(int(b["attention_mask"].sum()) for b in micro_batches),
            "slots": sum(b["attention_mask"].numel() for b in micro_batches),
            "seconds": time.perf_counter() - started}


def make_optimizer(model: Any, cfg: TrainGeneratorConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and a linear warm-up/decay schedule."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup))


def _enable_checkpointing(model: Any) -> None:
    kwargs = {"use_reentrant": False}  # the reentrant variant loses grads when inputs are frozen
    if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.23
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _to_tensors(batch: dict[str, list[list[int]]], device: str) -> dict[str, Any]:
    import torch

    return {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in batch.items()}


def train_lora_generator(model: Any, tokenizer: Any, examples: list[dict[str, Any]],
                         cfg: TrainGeneratorConfig, seed: int, device: str,
                         gradient_checkpointing: bool = False) -> tuple[Any, list[dict]]:
    """Add LoRA to `model` (in place: peft injects its layers) and train it; (peft model, history)."""
    import torch
    from tqdm.auto import tqdm

    from tasks.lib.models import pick_device
    from tasks.lib.precision import autocast_dtype

    if not examples:
        raise ValueError("train_lora_generator: no training examples")
    device = pick_device(device)
    torch.manual_seed(seed)  # LoRA A matrices and dropout
    if gradient_checkpointing:  # SmolLM2, 8 x 256: peak RSS 8.3 -> 4.6 GB for one more forward
        _enable_checkpointing(model)
    model.config.use_cache = False  # no KV cache while training
    peft_model = add_lora(model, cfg).to(device)
    peft_model.train()
    total = plan_steps(len(examples), cfg)
    optimizer, scheduler = make_optimizer(peft_model, cfg, total)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    autocast = autocast_dtype(cfg.precision, device, "train_generator")
    history = []
    lengths = [len(e["input_ids"]) for e in examples] if cfg.group_by_length else None
    bar = tqdm(batch_order(len(examples), cfg.batch_size, total, seed, lengths),
               desc="train_generator", unit="step")
    for step, indices in enumerate(bar, 1):
        lr = scheduler.get_last_lr()[0]
        batch = [examples[i] for i in indices]
        runs = (split_by_length([len(e["input_ids"]) for e in batch], cfg.split_overhead_tokens)
                if cfg.length_split else [list(range(len(batch)))])
        micro = [_to_tensors(collate([batch[i] for i in run], pad_id), device) for run in runs]
        out = train_step(peft_model, micro, optimizer, scheduler, 1.0, autocast)
        history.append({"step": step, "loss": out["loss"], "lr": lr, "tokens": out["tokens"],
                        "slots": out["slots"], "micro_batches": out["micro_batches"],
                        "seconds": round(out["seconds"], 3),
                        "tokens_per_second": round(out["tokens"] / out["seconds"], 1)})
        bar.set_postfix(loss=f"{out['loss']:.3f}", tok_s=f"{history[-1]['tokens_per_second']:.0f}")
        failpoint("train_generator.step")  # crash tests: mid-training, nothing published yet
    peft_model.eval()
    model.config.use_cache = True
    return peft_model, history
