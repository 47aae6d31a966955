"""Supervised fine-tuning of the generator (tasks/lib/sft.py) on the tiny random Llama with the
real SmolLM2 tokenizer: label masking, context cutting, the schedule, what training changes."""

import pytest

from tasks.lib.config import TrainGeneratorConfig
from tasks.lib.generator import build_messages, render_prompt
from tasks.lib.sft import (
    IGNORE,
    SequenceTooLong,
    batch_order,
    build_sft_example,
    build_sft_examples,
    collate,
    context_mask,
    lr_factor,
    plan_steps,
    split_by_length,
    train_lora_generator,
)

CHUNKS = ["The Basic plan costs 4 euros a month and includes 10 GB of storage.",
          "Cards are charged on the first working day of each month."]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- examples -------------------------------------------------------------------------------------


def test_sft_labels_mask_prompt_and_padding(generator_tokenizer):
    tokenizer = generator_tokenizer
    example = build_sft_example(tokenizer, "How much is Basic?", "4 euros.", None, 128)
    prompt = ids(tokenizer, render_prompt(tokenizer, build_messages("How much is Basic?")))
    answer = ids(tokenizer, "4 euros.") + [tokenizer.eos_token_id]
    assert example["input_ids"] == prompt + answer
    assert example["labels"] == [IGNORE] * len(prompt) + answer
    assert not example["truncated_context"] and not example["truncated_answer"]

    short = {"input_ids": [5, 6], "labels": [IGNORE, 6]}
    batch = collate([example, short], pad_id=2)
    width = len(example["input_ids"])
    assert batch["input_ids"][1] == [5, 6] + [2] * (width - 2)
    assert batch["attention_mask"][1] == [1, 1] + [0] * (width - 2)
    assert batch["labels"][1] == [IGNORE, 6] + [IGNORE] * (width - 2)
    assert batch["labels"][0] == example["labels"]


def test_short_answer_examples_use_the_evaluate_prompt(generator_tokenizer):
    tokenizer, ynm = generator_tokenizer, ["yes", "no", "maybe"]
    example = build_sft_example(tokenizer, "Does it help?", "Yes. It helps.", None, 128, ynm)
    prompt = ids(tokenizer, render_prompt(tokenizer, build_messages("Does it help?", None, ynm)))
    assert example["input_ids"][:len(prompt)] == prompt
    assert example["labels"][:len(prompt)] == [IGNORE] * len(prompt)
    rows = [{"question": "Does it help?", "answer": "Yes. It helps.", "choices": ynm},
            {"question": "Does it help?", "answer": "Yes. It helps."}]
    (with_choices, plain), _ = build_sft_examples(tokenizer, rows, [None, None], 128)
    assert with_choices == example
    assert plain == build_sft_example(tokenizer, "Does it help?", "Yes. It helps.", None, 128)
    assert len(plain["input_ids"]) < len(with_choices["input_ids"])


def test_context_is_cut_before_the_answer(generator_tokenizer):
    tokenizer = generator_tokenizer
    answer = "It is charged on the first working day of each month."
    answer_ids = ids(tokenizer, answer) + [tokenizer.eos_token_id]
    long_chunks = [" ".join([CHUNKS[1]] * 8), CHUNKS[0]]
    full = build_sft_example(tokenizer, "When?", answer, long_chunks, 4096)
    assert not full["truncated_context"]
    cut = build_sft_example(tokenizer, "When?", answer, long_chunks, 160)
    assert cut["truncated_context"] and not cut["truncated_answer"]
    assert len(cut["input_ids"]) <= 160 and len(cut["input_ids"]) >= 150  # room used, not wasted
    assert cut["input_ids"][-len(answer_ids):] == answer_ids  # the answer is whole
    prompt_text = tokenizer.decode(cut["input_ids"][:-len(answer_ids)])
    assert "Context:\n[1] Cards are charged" in prompt_text and "[2]" not in prompt_text

    no_room = build_sft_example(tokenizer, "When?", answer, long_chunks, 50)  # context dropped
    assert no_room["truncated_context"] and "Context:" not in tokenizer.decode(no_room["input_ids"])
    assert no_room["input_ids"][-len(answer_ids):] == answer_ids


def test_answer_tail_cut_only_as_last_resort(generator_tokenizer):
    tokenizer = generator_tokenizer
    prompt_len = len(ids(tokenizer, render_prompt(tokenizer, build_messages("When?"))))
    answer_ids = ids(tokenizer, "On the first working day of each month.")
    example = build_sft_example(tokenizer, "When?", "On the first working day of each month.", None,
                                prompt_len + 3)
    assert example["truncated_answer"] and example["input_ids"][prompt_len:] == answer_ids[:3]
    with pytest.raises(SequenceTooLong, match="raise train_generator.max_seq_length"):
        build_sft_example(tokenizer, "When?", "Soon.", None, prompt_len)
    rows = [{"question": "When?", "answer": "Soon."}] * 2
    examples, counts = build_sft_examples(tokenizer, rows, [None, CHUNKS], prompt_len)
    assert examples == [] and counts["skipped_too_long"] == 2


def test_context_mask_is_seeded_and_exact():
    first = context_mask(20, 0.5, seed=13)
    assert first == context_mask(20, 0.5, seed=13) and sum(first) == 10
    assert first != context_mask(20, 0.5, seed=14)
    assert context_mask(5, 0.0, 1) == [False] * 5 and context_mask(5, 1.0, 1) == [True] * 5
    assert sum(context_mask(7, 0.5, 3)) == 4  # round(3.5) -> 4 (banker's rounding)


def test_schedule_and_batches():
    cfg = TrainGeneratorConfig(batch_size=4, epochs=2.0)
    assert plan_steps(10, cfg) == 6 and plan_steps(10, cfg.model_copy(update={"max_steps": 4})) == 4
    assert [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]
    batches = batch_order(5, 2, 5, seed=0)
    assert [len(b) for b in batches] == [2, 2, 1, 2, 2]
    assert sorted(sum(batches[:3], [])) == [0, 1, 2, 3, 4] and batches == batch_order(5, 2, 5, 0)


def test_batch_order_does_not_follow_the_context_mask():
    # both seeded alike: the steps must still mix examples with and without context over time
    with_context = {i for i, m in enumerate(context_mask(192, 0.5, 13)) if m}
    first_half = set(sum(batch_order(192, 8, 12, seed=13), []))
    assert 0.3 < len(first_half & with_context) / len(first_half) < 0.7


def test_length_grouped_batches_pad_less_and_still_cover_every_example():
    # with and without retrieved context, examples differ several-fold in length
    lengths = [300 if i % 2 else 60 for i in range(64)]
    plain, grouped = batch_order(64, 8, 16, seed=3), batch_order(64, 8, 16, seed=3, lengths=lengths)

    def slots(batches):  # what a batch costs: its size x its longest example
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert slots(grouped) < 0.7 * slots(plain)
    for epoch in (grouped[:8], grouped[8:]):  # each epoch sees every example once
        assert sorted(sum(epoch, [])) == list(range(64))
    assert grouped == batch_order(64, 8, 16, seed=3, lengths=lengths)  # seeded
    assert [max(lengths[i] for i in b) for b in grouped[:8]] != sorted(
        max(lengths[i] for i in b) for b in grouped[:8])  # the steps are shuffled, not sorted


# ---- training ---------------------------------------------------------------------------------------


def test_lora_training_changes_only_adapter_weights(trained_generator):
    history = trained_generator["history"]
    assert [h["step"] for h in history] == [1, 2] and all(h["loss"] > 0 for h in history)
    assert all(h["tokens"] > 0 and h["tokens_per_second"] > 0 for h in history)
    after = trained_generator["peft"].state_dict()
    lora_b = [k for k in after if "lora_B" in k]
    assert lora_b and any(after[k].abs().sum() > 0 for k in lora_b)  # B starts at zero
    for name, before in trained_generator["base"].items():
        key = next(k for k in after if k.endswith(name.replace(".weight", ".base_layer.weight"))
                   or k.endswith(name))
        assert after[key].equal(before), name


def test_gradient_checkpointing_does_not_change_the_losses(tiny_generator_dir, generator_tokenizer):
    from transformers import AutoModelForCausalLM

    tokenizer = generator_tokenizer
    examples = [build_sft_example(tokenizer, "How much is Basic?", "4 euros a month.", CHUNKS, 96)] * 4
    cfg = TrainGeneratorConfig(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0,
                               precision="fp32")
    losses = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
        _, history = train_lora_generator(model, tokenizer, examples, cfg, 0, "cpu", checkpointing)
        losses.append([h["loss"] for h in history])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_bf16_training_autocasts_and_keeps_fp32_adapter_weights(tiny_generator_dir,
                                                                 generator_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = generator_tokenizer
    examples = [build_sft_example(tokenizer, "How much is Basic?", "4 euros a month.", CHUNKS, 96)] * 4
    losses, seen = {}, []
    for precision in ("fp32", "bf16"):
        cfg = TrainGeneratorConfig(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0,
                                   precision=precision)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
        hook = model.lm_head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        peft_model, history = train_lora_generator(model, tokenizer, examples, cfg, 0, "cpu")
        hook.remove()
        losses[precision] = [h["loss"] for h in history]
        assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * 2  # the matrix products ran in bf16
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)  # the same training, rounded


def test_split_by_length_cuts_where_padding_outweighs_a_pass():
    lengths = [300, 60, 290, 55, 62, 310, 58, 305]  # with and without context, mixed
    runs = split_by_length(lengths, overhead=32)
    assert runs == [[3, 6, 1, 4], [2, 0, 7, 5]]  # each run in length order, shortest first
    assert split_by_length(lengths, overhead=10_000) == [[3, 6, 1, 4, 2, 0, 7, 5]]
    assert split_by_length([100, 101, 99], overhead=32) == [[2, 0, 1]]  # 2 slots saved < 32
    assert split_by_length([], overhead=32) == []
    cut = split_by_length(list(range(1, 41)), overhead=0, max_parts=3)
    assert len(cut) == 3 and sorted(sum(cut, [])) == list(range(40))


def test_length_split_gives_the_whole_batch_update(tiny_generator_dir, generator_tokenizer):
    from transformers import AutoModelForCausalLM

    tokenizer = generator_tokenizer
    rows = [("How much is Basic?", "4 euros a month.", CHUNKS),
            ("When is my card charged?", "On the first working day.", None)] * 4
    examples = [build_sft_example(tokenizer, q, a, c, 128) for q, a, c in rows]
    runs = {}
    for split in (False, True):
        cfg = TrainGeneratorConfig(batch_size=8, epochs=3.0, learning_rate=1e-2, warmup_ratio=0.0,
                                   precision="fp32", lora_dropout=0.0, length_split=split)
        model = AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir))
        peft_model, history = train_lora_generator(model, tokenizer, examples, cfg, 0, "cpu")
        runs[split] = (history, {k: v.clone() for k, v in peft_model.state_dict().items()
                                 if "lora_" in k})
    whole, split = runs[False][0], runs[True][0]
    assert [h["micro_batches"] for h in whole] == [1] * 3
    assert [h["micro_batches"] for h in split] == [2] * 3
    assert [h["tokens"] for h in split] == [h["tokens"] for h in whole]
    assert all(s["slots"] < w["slots"] for s, w in zip(split, whole, strict=True))
    assert [h["loss"] for h in split] == pytest.approx([h["loss"] for h in whole], rel=1e-5)
    for key, weight in runs[False][1].items():
        assert runs[True][1][key].allclose(weight, rtol=0, atol=2e-5), key  # float rounding only


def test_answer_loss_is_the_models_own_loss(tiny_generator_dir, generator_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from tasks.lib.sft import _to_tensors, add_lora, answer_loss, label_tokens

    tokenizer = generator_tokenizer
    examples = [build_sft_example(tokenizer, "How much is Basic?", "4 euros a month.", CHUNKS, 128),
                build_sft_example(tokenizer, "When?", "On the first working day.", None, 128)]
    batch = _to_tensors(collate(examples, tokenizer.pad_token_id), "cpu")
    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_generator_dir)),
                     TrainGeneratorConfig(lora_dropout=0.0))
    total = label_tokens(batch)
    assert total == sum(sum(label != IGNORE for label in e["labels"]) for e in examples)
    ours = answer_loss(model, batch, total)
    theirs = model(**batch).loss  # transformers' mean over the shifted labels
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    assert float(answer_loss(model, batch, 2 * total)) == pytest.approx(float(theirs) / 2, rel=1e-5)
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    theirs.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert grads[name].allclose(p.grad, rtol=1e-4, atol=1e-7), name
