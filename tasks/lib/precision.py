"""Numeric precision of the retriever at inference (index, evaluate, reindex, serve), chosen at
run time and logged; training always runs fp32 (plus the profile's CUDA bf16 switch).

`index.precision`:
  fp32  the weights as trained
  bf16  bfloat16 weights and activations: on a CPU with native bf16 (AVX-512 BF16 or AMX) or CUDA
  auto  bf16 on a CPU with native bf16, fp32 elsewhere (CUDA included: not measured there yet)

Measured by bench/retriever_precision.py (throughput, query latency and nDCG@10 against fp32 on
the same questions, in one run; figures in the README). bf16 vectors match fp32 ones to a mean
cosine of ~1.000, so tables need no re-embedding when the setting changes and the precision is
not part of a table's fingerprint. int8 dynamic quantisation (`apply_precision(m, "int8")`) is
measured by the same bench but not offered: it moved the vectors (mean cosine ~0.95 to fp32) and
nDCG@10 by more than the 0.005 tolerance, so a table could not mix its vectors with fp32 ones.

Usage:
    precision = resolve_precision(cfg.index.precision, "cpu")   # "bf16" on an AVX-512 BF16 CPU
    model = apply_precision(model, precision)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INT8_ENGINES = ("x86", "fbgemm")  # torch's quantised CPU engines with int8 GEMM kernels


def int8_engine() -> str | None:
    """The quantised CPU engine torch would use for int8 Linear layers, or None without one."""
    import torch

    engines = torch.backends.quantized.supported_engines
    return next((e for e in INT8_ENGINES if e in engines), None)


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(setting: str, device: str) -> str:
    """auto -> bf16 on a CPU with native bf16, else fp32; an explicit choice stands."""
    if setting == "auto":
        return "bf16" if device == "cpu" and cpu_has_bf16() else "fp32"
    return setting


def resolve_generator_precision(setting: str, device: str) -> str:
    """The generator's: auto -> bf16 on a CPU with native bf16 and on a CUDA GPU with bf16
    support (the usual way to run a causal LM there), else fp32."""
    if setting == "auto" and device == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return resolve_precision(setting, device)


def apply_precision(model: Any, precision: str) -> Any:
    """The SentenceTransformer converted in place for inference at `precision` (fp32: as is)."""
    import torch

    if precision == "int8":
        torch.backends.quantized.engine = int8_engine()
        inner = model[0].auto_model
        model[0].auto_model = torch.ao.quantization.quantize_dynamic(
            inner, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    elif precision == "bf16":
        model.to(torch.bfloat16)
    return model.eval()
