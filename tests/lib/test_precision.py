"""Retriever inference precision (tasks/lib/precision.py): auto follows the CPU's bf16 support,
bf16 keeps the vectors (what lets tables mix them with fp32 ones), int8 is the bench's only."""

import numpy as np
import pytest

from tasks.lib import precision
from tasks.lib.models import load_retriever
from tasks.lib.precision import apply_precision, resolve_precision

TEXTS = ["Submit a meter reading before the 5th.", "Error E07 means the inverter lost contact.",
         "Night Owl is cheap between 00:30 and 05:30."]


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "fp32"  # not measured on CUDA
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"


def test_cpu_has_bf16_reads_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    assert precision.cpu_has_bf16() == (" avx512_bf16" in flags or " amx_bf16" in flags)


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_reduced_precision_encodes_float32_vectors_close_to_fp32(tiny_retriever, name):
    model_dir, fp32 = tiny_retriever
    ref = fp32.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    model = load_retriever(model_dir, device="cpu", precision=name if name == "bf16" else "fp32")
    model = apply_precision(model, name) if name == "int8" else model
    got = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert got.dtype == np.float32 and got.shape == ref.shape
    cosine = np.sum(got * ref, axis=1)
    assert cosine.min() > 0.9  # the same vectors up to rounding, not new ones
    assert not np.array_equal(got, ref)  # and it did run at the other precision
    if name == "int8":
        assert any("quantized.dynamic" in type(m).__module__ for m in model.modules())
    else:
        assert str(next(model.parameters()).dtype) == "torch.bfloat16"
