"""Generator behaviour with the tiny random Llama (real SmolLM2 tokenizer): prompts, adapters,
batched generation; one slow real-model test."""

import copy
import json
import logging

import pytest

from tasks.lib.errors import ConfigError
from tasks.lib.generator import (
    build_messages,
    build_prompt,
    cut_chunks,
    generate_answers,
    generate_one_by_one,
    generation_throughput,
    load_generator,
    render_prompt,
    save_adapter,
)
from tasks.lib.models import ADAPTER_META
from tasks.lib.resolve import TINY_GENERATOR_ID, resolve_model_dir
from tests.conftest import REPO

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CHUNKS = ["The Basic plan costs 4 euros a month and includes 10 GB of storage.",
          "Cards are charged on the first working day of each month."]


# ---- prompts ------------------------------------------------------------------------------------


def test_build_messages_numbers_the_context_chunks():
    assert build_messages("Q?") == [
        {"role": "system", "content": "Answer the question briefly, in one or two sentences."},
        {"role": "user", "content": "Question: Q?"}]
    system, user = build_messages("Q?", ["a", "b"])
    assert system["content"].endswith("If the context does not answer it, say so.")
    assert user == {"role": "user", "content": "Context:\n[1] a\n\n[2] b\n\nQuestion: Q?"}
    assert build_messages("Q?", []) == build_messages("Q?")  # no chunks: the plain prompt


def test_render_prompt_with_and_without_context(generator_tokenizer):
    tokenizer = generator_tokenizer
    plain = render_prompt(tokenizer, build_messages("How much is Basic?"))
    assert plain == ("<|im_start|>system\nAnswer the question briefly, in one or two sentences."
                     "<|im_end|>\n<|im_start|>user\nQuestion: How much is Basic?<|im_end|>\n"
                     "<|im_start|>assistant\n")
    with_context = render_prompt(tokenizer, build_messages("How much is Basic?", CHUNKS))
    assert f"Context:\n[1] {CHUNKS[0]}\n\n[2] {CHUNKS[1]}\n\nQuestion: How much is Basic?" in with_context
    assert "using the context" in with_context and with_context.endswith("<|im_start|>assistant\n")


def test_short_answer_questions_ask_for_a_choice_first(generator_tokenizer):
    ask = "Question: Q?\nAnswer with exactly one of: yes, no, maybe; then one sentence why."
    assert build_messages("Q?", None, ["yes", "no", "maybe"]) == [
        {"role": "system", "content": "Answer the question briefly, in one or two sentences."},
        {"role": "user", "content": ask}]
    assert build_messages("Q?", ["a"], ["yes", "no", "maybe"])[1] == {
        "role": "user", "content": f"Context:\n[1] a\n\n{ask}"}
    assert build_messages("Q?", None, []) == build_messages("Q?")  # no choices: the plain prompt
    assert build_prompt(generator_tokenizer, "Q?", None, None, ["yes", "no", "maybe"]) == (
        "<|im_start|>system\nAnswer the question briefly, in one or two sentences.<|im_end|>\n"
        f"<|im_start|>user\n{ask}<|im_end|>\n<|im_start|>assistant\n")


def test_no_chat_template_falls_back_to_plain_prompt_and_logs_once(generator_tokenizer, caplog):
    bare = copy.deepcopy(generator_tokenizer)
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


def test_context_is_cut_to_a_token_budget(generator_tokenizer):
    tok = generator_tokenizer
    n0 = len(tok(CHUNKS[0], add_special_tokens=False)["input_ids"])
    assert cut_chunks(tok, CHUNKS, 10_000) == CHUNKS
    kept = cut_chunks(tok, CHUNKS, n0)
    assert kept == [CHUNKS[0]]  # the first chunk fits exactly, the second not at all
    tail = tok(CHUNKS[1], add_special_tokens=False)["input_ids"][:3]
    assert cut_chunks(tok, CHUNKS, n0 + 3) == [CHUNKS[0], tok.decode(tail)]
    assert cut_chunks(tok, CHUNKS, 0) == []
    assert build_prompt(tok, "Q?", CHUNKS, None) == render_prompt(tok, build_messages("Q?", CHUNKS))
    assert build_prompt(tok, "Q?", CHUNKS, n0) == render_prompt(tok, build_messages("Q?", [CHUNKS[0]]))


# ---- adapters ---------------------------------------------------------------------------------------


def test_saved_adapter_has_no_base_weights(trained_generator):
    files = sorted(p.name for p in trained_generator["adapter_dir"].iterdir())
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert ADAPTER_META in files and "model.safetensors" not in files
    meta = json.loads((trained_generator["adapter_dir"] / ADAPTER_META).read_text())
    assert meta["base_model_id"] == TINY_GENERATOR_ID and meta["steps"] == 2


def test_saved_adapter_is_portable_and_byte_identical(trained_generator, tiny_generator_dir, tmp_path):
    first = trained_generator["adapter_dir"]
    assert "README.md" not in {p.name for p in first.iterdir()}  # peft's card holds paths
    config = json.loads((first / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == TINY_GENERATOR_ID
    again = save_adapter(trained_generator["peft"], tmp_path / "elsewhere", TINY_GENERATOR_ID,
                         tiny_generator_dir, {"steps": 2})
    assert {p.name: p.read_bytes() for p in again.iterdir()} == \
        {p.name: p.read_bytes() for p in first.iterdir()}
    save_adapter(trained_generator["peft"], again, TINY_GENERATOR_ID, tiny_generator_dir,
                 {"steps": 3})  # replaces
    assert json.loads((again / ADAPTER_META).read_text())["steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # no temp dirs left


def test_load_merges_the_adapter(trained_generator, tiny_generator_dir, tiny_generator):
    import torch

    merged, tok = load_generator(tiny_generator_dir, trained_generator["adapter_dir"], device="cpu",
                                 base_id=TINY_GENERATOR_ID)
    assert type(merged).__name__ == "LlamaForCausalLM"  # merged: no peft wrapper left
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert tok.padding_side == "left" and tok.pad_token is not None
    enc = tok(["Hello there"], return_tensors="pt")
    with torch.inference_mode():
        assert not torch.allclose(merged(**enc).logits, tiny_generator[0](**enc).logits)


def test_refuses_an_adapter_for_another_base(trained_generator, tiny_generator_dir, tmp_path):
    adapter = trained_generator["adapter_dir"]
    with pytest.raises(ConfigError, match="trained on base model 'tunedex/tiny-generator' but is being "
                                          "loaded onto 'other/model'"):
        load_generator(tiny_generator_dir, adapter, device="cpu", base_id="other/model")
    changed = tmp_path / "adapter"
    changed.mkdir()
    for path in adapter.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    meta = json.loads((changed / ADAPTER_META).read_text())
    (changed / ADAPTER_META).write_text(json.dumps({**meta, "base_weights": "0" * 64}))
    with pytest.raises(ConfigError, match="different weights"):
        load_generator(tiny_generator_dir, changed, device="cpu")


# ---- generation ---------------------------------------------------------------------------------


def test_batched_generation_left_pads_and_matches_one_by_one(tiny_generator):
    model, tok = tiny_generator
    prompts = [render_prompt(tok, build_messages(q, c)) for q, c in
               [("Hi?", None), ("How much is the Basic plan per month?", CHUNKS), ("Cards?", CHUNKS[1:])]]
    enc = tok(prompts, padding=True, add_special_tokens=False)
    assert enc["attention_mask"][0][0] == 0 and enc["attention_mask"][0][-1] == 1  # pads on the left
    batched = generate_answers(model, tok, prompts, max_new_tokens=8, batch_size=2)
    single = generate_one_by_one(model, tok, prompts, max_new_tokens=8)
    assert generate_answers(model, tok, [], max_new_tokens=8, batch_size=2) == []
    # the two shortest prompts share a batch; the answers come back in the prompts' order
    assert len(batched) == 3 and [r["batch"] for r in batched] == [0, 1, 0]
    assert [(r["text"], r["new_tokens"]) for r in batched] == [(r["text"], r["new_tokens"]) for r in single]
    assert all(0 < r["new_tokens"] <= 8 for r in batched)
    stats = generation_throughput(batched)
    assert stats["answers"] == 3 and stats["seconds"] == pytest.approx(
        batched[0]["seconds"] + batched[1]["seconds"], abs=1e-3)


def test_generation_throughput_counts_each_batch_once():
    results = [{"batch": 0, "seconds": 0.5, "new_tokens": 3},
               {"batch": 0, "seconds": 0.5, "new_tokens": 2},
               {"batch": 1, "seconds": 0.25, "new_tokens": 5}]
    assert generation_throughput(results) == {"answers": 3, "new_tokens": 10, "seconds": 0.75,
                                              "tokens_per_second": 13.33}
    assert generation_throughput([])["tokens_per_second"] == 0.0


@pytest.mark.slow
def test_real_smollm2_answers_the_capital_of_france():
    """Minimum functionality of the offline model (converted once into the repo's .models)."""
    base_dir = resolve_model_dir(SMOL, False, REPO / ".models")
    model, tok = load_generator(base_dir, device="cpu")
    prompt = render_prompt(tok, build_messages("What is the capital of France?"))
    [answer] = generate_answers(model, tok, [prompt], max_new_tokens=24, batch_size=1)
    assert "Paris" in answer["text"]
