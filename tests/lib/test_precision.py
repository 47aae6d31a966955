"""Precision (tasks/lib/precision.py): auto follows the hardware's bf16 support, bf16 keeps the
retriever's vectors (what lets tables mix them with fp32 ones), int8 is the bench's only."""

import numpy as np
import pytest

from bench.retriever_precision import at_precision
from tasks.lib import precision
from tasks.lib.config import TrainGeneratorConfig, TrainRetrieverConfig
from tasks.lib.models import load_retriever
from tasks.lib.precision import autocast_dtype, resolve_model_precision, resolve_precision

TEXTS = ["Submit a meter reading before the 5th.", "Error E07 means the inverter lost contact.",
         "Night Owl is cheap between 00:30 and 05:30."]


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"  # not measured on CUDA
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"


def test_training_autocasts_bf16_where_the_hardware_has_it(monkeypatch):
    import torch

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    assert autocast_dtype("fp32", "cpu") is None
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16  # asked for: emulated, but honoured
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_model_precision("auto", "cuda") == "bf16"


def test_training_precision_reads_the_older_bf16_switch():
    assert TrainGeneratorConfig(bf16=True).precision == "auto"  # it meant: where the GPU has it
    assert TrainRetrieverConfig(bf16=False).precision == "fp32"
    assert TrainRetrieverConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="not both"):
        TrainGeneratorConfig(bf16=True, precision="fp32")
    with pytest.raises(ValueError, match="true or false"):
        TrainGeneratorConfig(bf16="yes")


def test_cpu_has_bf16_reads_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    assert precision.cpu_has_bf16() == (" avx512_bf16" in flags or " amx_bf16" in flags)


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_reduced_precision_encodes_float32_vectors_close_to_fp32(tiny_retriever, name):
    model_dir, fp32 = tiny_retriever
    ref = fp32.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    model = load_retriever(model_dir, device="cpu", precision=name if name == "bf16" else "fp32")
    model = at_precision(model, name) if name == "int8" else model
    got = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert got.dtype == np.float32 and got.shape == ref.shape
    cosine = np.sum(got * ref, axis=1)
    assert cosine.min() > 0.9  # the same vectors up to rounding, not new ones
    assert not np.array_equal(got, ref)  # and it did run at the other precision
    if name == "int8":
        assert any("quantized.dynamic" in type(m).__module__ for m in model.modules())
    else:
        assert str(next(model.parameters()).dtype) == "torch.bfloat16"


def test_generation_auto_is_mixed_on_a_bf16_cpu_and_bf16_on_cuda(monkeypatch):
    import torch

    from tasks.lib.precision import resolve_generation_precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_generation_precision("auto", "cpu") == "mixed"
    assert resolve_generation_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_generation_precision("auto", "cpu") == "fp32"
    assert resolve_generation_precision("mixed", "cpu") == "mixed"  # asked for: emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_generation_precision("auto", "cuda") == "bf16"


def test_mixed_generator_multiplies_in_bf16_and_keeps_fp32_activations(tiny_generator_dir):
    import torch

    from tasks.lib.generator import generate_answers, load_generator

    model, tok = load_generator(tiny_generator_dir, device="cpu", precision="mixed")
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert head.weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32
    seen = []
    hook = linears[0].register_forward_hook(lambda m, i, out: seen.append((i[0].dtype, out.dtype)))
    enc = tok(["Hello there"], return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    hook.remove()
    assert seen == [(torch.bfloat16, torch.float32)]  # bf16 in (pre-hook), fp32 out (hook)
    assert logits.dtype == torch.float32
    fp32, _ = load_generator(tiny_generator_dir, device="cpu", precision="fp32")
    with torch.inference_mode():
        reference = fp32(**enc).logits
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()  # rounded, not broken
    assert len(generate_answers(model, tok, ["Hello", "How much is Basic?"], 4, 2)) == 2


def test_rescored_head_gives_fp32_logits_to_its_top_candidates():
    import torch

    from tasks.lib.precision import rescored_head

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False)
    hidden = torch.randn(3, 5, 64)
    with torch.no_grad():
        exact = head(hidden)
        fast = rescored_head(head, rescore=8)(hidden)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert torch.equal(fast.argmax(-1), exact.argmax(-1))  # the greedy pick is the fp32 one
    same = (fast - exact).abs() < 1e-4
    assert (same.sum(-1) >= 8).all()  # 8 rescored per position
    assert same.gather(-1, exact.topk(3, dim=-1).indices).all()  # the best ones among them
    assert 0 < (fast - exact).abs().max() < 0.05 * exact.abs().max()  # the others: bf16-rounded
